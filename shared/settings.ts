import type { GateConfig } from "./dispatch-gate.ts";
import type { CommonEnv, ConsumerEnv, ProducerEnv } from "./env.ts";
import { DEFAULT_LANE_WEIGHTS, type LaneWeights } from "./fair-queue.ts";
import {
  NOTIFY_RETRY_S,
  NOTIFY_TIMEOUT_MS,
  type NotifySettings,
  validNotifySecret,
} from "./notify.ts";

/** How the endpoint's autoscaler adds workers (RUNPOD_SCALER). */
export type Scaler = { kind: "queue_delay" } | { kind: "request_count"; runsPerWorker: number };

/** The cap on runs in flight: fixed, or following the fleet (RUNPOD_MAX_IN_FLIGHT=auto). */
export interface CapacityConfig {
  maxInFlight: number | "auto";
  /** RUNPOD_MAX_WORKERS: the endpoint's max workers when known; null: unknown. */
  maxWorkers: number | null;
  /** Seconds between two of the dispatcher's `GET /health` at most. */
  fleetPollS: number;
  scaler: Scaler;
}

/** What the dispatcher is configured with: its gate, its cap and its lanes' weights. */
export type DispatchConfig = GateConfig &
  CapacityConfig & {
    laneWeights: LaneWeights;
    /** RUNPOD_ENDPOINTS: whether another endpoint takes over this one's types when it is down. */
    routes?: EndpointRoutes;
  };

/**
 * PRIORITY_WEIGHTS: the weights of the interactive, standard and batch lanes, three positive
 * integers (default 8,4,1).
 */
export function laneWeightsVar(value: string | undefined): LaneWeights {
  const text = value?.trim() ?? "";
  if (text === "") return DEFAULT_LANE_WEIGHTS;
  const parts = text.split(",").map((part) => Number(part.trim()));
  if (parts.length !== 3 || parts.some((n) => !Number.isInteger(n) || n < 1 || n > 1000)) {
    throw new Error(
      `setting PRIORITY_WEIGHTS must be three positive integers (interactive,standard,batch), got ${JSON.stringify(value)}`,
    );
  }
  return [parts[0] as number, parts[1] as number, parts[2] as number];
}

/** RUNPOD_MAX_IN_FLIGHT: `auto` (also when missing or empty) or a positive integer. */
export function maxInFlightVar(value: string | undefined): number | "auto" {
  const text = value?.trim() ?? "";
  if (text === "" || text === "auto") return "auto";
  const parsed = Number(text);
  if (!Number.isInteger(parsed) || parsed < 1) {
    throw new Error(
      `setting RUNPOD_MAX_IN_FLIGHT must be "auto" or a positive integer, got ${JSON.stringify(value)}`,
    );
  }
  return parsed;
}

/** RUNPOD_SCALER: `queue_delay` (also when missing or empty) or `request_count:<runs per worker>`. */
export function scalerVar(value: string | undefined): Scaler {
  const text = value?.trim() ?? "";
  if (text === "" || text === "queue_delay") return { kind: "queue_delay" };
  const match = /^request_count:(\d+)$/.exec(text);
  const runsPerWorker = match ? Number(match[1]) : 0;
  if (runsPerWorker < 1) {
    throw new Error(
      `setting RUNPOD_SCALER must be "queue_delay" or "request_count:<runs per worker ≥ 1>", got ${JSON.stringify(value)}`,
    );
  }
  return { kind: "request_count", runsPerWorker };
}

/** Reads a numeric var, falling back to the contract's default when it is missing or empty. */
function numberVar(value: string | undefined, fallback: number, name: string): number {
  if (value === undefined || value.trim() === "") return fallback;
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed < 0) {
    throw new Error(`setting ${name} must be a non-negative number, got ${JSON.stringify(value)}`);
  }
  return parsed;
}

/** GPU_PRICE_PER_S: USD per GPU second, for /usage's estimates (an L4's list price by default). */
export function gpuPricePerS(env: { GPU_PRICE_PER_S?: string }): number {
  return numberVar(env.GPU_PRICE_PER_S, 0.00019, "GPU_PRICE_PER_S");
}

export interface RunpodSettings {
  baseUrl: string;
  apiKey: string;
  endpointId: string;
  timeoutMs: number;
}

export interface RetrySettings {
  baseDelayS: number;
  maxDelayS: number;
}

/** The vars RunPod's client is configured from. */
export type RunpodEnv = Pick<
  CommonEnv,
  "RUNPOD_BASE_URL" | "RUNPOD_API_KEY" | "RUNPOD_ENDPOINT_ID" | "RUNPOD_TIMEOUT_MS"
>;

export function runpodSettings(env: RunpodEnv): RunpodSettings {
  return {
    baseUrl: (env.RUNPOD_BASE_URL || "https://api.runpod.ai/v2").replace(/\/+$/, ""),
    apiKey: env.RUNPOD_API_KEY ?? "",
    endpointId: env.RUNPOD_ENDPOINT_ID ?? "",
    timeoutMs: numberVar(env.RUNPOD_TIMEOUT_MS, 10_000, "RUNPOD_TIMEOUT_MS"),
  };
}

/** The export types a route can name. */
const ROUTED_TYPES = ["framing", "overlay", "annotate"] as const;
type RoutedType = (typeof ROUTED_TYPES)[number];

/** Per export type, its RunPod endpoints in order: the first that is not down takes its jobs. */
export type EndpointRoutes = Readonly<Record<RoutedType, readonly string[]>>;

/** An endpoint id as RunPod gives them: letters, digits, `-`, `_` (1–100). */
const ENDPOINT_ID = /^[A-Za-z0-9_-]{1,100}$/;

/**
 * RUNPOD_ENDPOINTS: a JSON object of export types (`framing`, `overlay`, `annotate`, and `*` for
 * the others) to non-empty ordered lists of endpoint ids. Missing or empty: every type on
 * RUNPOD_ENDPOINT_ID alone. A malformed value throws, naming the setting.
 */
export function endpointRoutesVar(value: string | undefined, defaultId: string): EndpointRoutes {
  const text = value?.trim() ?? "";
  const fail = (why: string): never => {
    throw new Error(`setting RUNPOD_ENDPOINTS ${why}, got ${JSON.stringify(value)}`);
  };
  if (text === "") {
    return { framing: [defaultId], overlay: [defaultId], annotate: [defaultId] };
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return fail("must be JSON");
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    return fail('must be a JSON object like {"framing": ["ep-1", "ep-2"], "*": ["ep-3"]}');
  }
  const lists = parsed as Record<string, unknown>;
  for (const [type, list] of Object.entries(lists)) {
    if (type !== "*" && !(ROUTED_TYPES as readonly string[]).includes(type)) {
      fail(`names an unknown type ${JSON.stringify(type)} (framing, overlay, annotate or *)`);
    }
    if (!Array.isArray(list) || list.length === 0) {
      fail(`must give ${JSON.stringify(type)} a non-empty list of endpoint ids`);
    }
    for (const id of list as unknown[]) {
      if (typeof id !== "string" || !ENDPOINT_ID.test(id)) {
        fail(`has ${JSON.stringify(id)} in ${JSON.stringify(type)}: not an endpoint id`);
      }
    }
    if (new Set(list as string[]).size !== (list as string[]).length) {
      fail(`lists an endpoint twice for ${JSON.stringify(type)}`);
    }
  }
  const fallback = (lists["*"] as string[] | undefined) ?? null;
  const routes: Partial<Record<RoutedType, readonly string[]>> = {};
  for (const type of ROUTED_TYPES) {
    const list = (lists[type] as string[] | undefined) ?? fallback;
    if (list === null) fail(`has no list for ${type} and no "*"`);
    routes[type] = list as string[];
  }
  return routes as EndpointRoutes;
}

/** RUNPOD_ENDPOINTS as the Worker runs with it (throws on a malformed value). */
export function endpointRoutes(
  env: Pick<CommonEnv, "RUNPOD_ENDPOINTS" | "RUNPOD_ENDPOINT_ID">,
): EndpointRoutes {
  return endpointRoutesVar(env.RUNPOD_ENDPOINTS, env.RUNPOD_ENDPOINT_ID ?? "");
}

/** Every endpoint a route names, RUNPOD_ENDPOINT_ID first. */
export function allEndpoints(routes: EndpointRoutes, defaultId: string): string[] {
  return [...new Set([defaultId, ...ROUTED_TYPES.flatMap((type) => routes[type])])].filter(
    (id) => id !== "",
  );
}

export function retrySettings(env: CommonEnv): RetrySettings {
  return {
    baseDelayS: numberVar(env.RETRY_BASE_DELAY_S, 30, "RETRY_BASE_DELAY_S"),
    maxDelayS: numberVar(env.RETRY_MAX_DELAY_S, 900, "RETRY_MAX_DELAY_S"),
  };
}

export interface ConsumerSettings {
  runpod: RunpodSettings;
  retry: RetrySettings;
  publicUrl: string;
  webhookSecret: string;
  claimTimeoutS: number;
  pollAfterS: number;
  pendingGraceS: number;
  submitConcurrency: number;
  executionTimeoutMs: number;
  ttlMs: number;
  gate: DispatchConfig;
  /** RUNPOD_ENDPOINTS: per type, its endpoints in order. */
  routes: EndpointRoutes;
  pendingMaxAgeS: number;
  /** Retention (shared/archive.ts): 0 keeps every job in D1. */
  archiveAfterS: number;
}

/**
 * A Worker invocation holds at most 6 connections waiting for response headers; more wait for a
 * free one while their timeout runs (spurious timeouts on Cloudflare, not under wrangler dev).
 */
export const MAX_SUBMIT_CONCURRENCY = 6;

export function consumerSettings(env: ConsumerEnv): ConsumerSettings {
  return {
    runpod: runpodSettings(env),
    retry: retrySettings(env),
    publicUrl: (env.PUBLIC_URL ?? "").replace(/\/+$/, ""),
    webhookSecret: env.WEBHOOK_SECRET ?? "",
    claimTimeoutS: numberVar(env.CLAIM_TIMEOUT_S, 120, "CLAIM_TIMEOUT_S"),
    pollAfterS: numberVar(env.POLL_AFTER_S, 300, "POLL_AFTER_S"),
    pendingGraceS: numberVar(env.PENDING_GRACE_S, 900, "PENDING_GRACE_S"),
    submitConcurrency: Math.min(
      MAX_SUBMIT_CONCURRENCY,
      Math.max(1, Math.floor(numberVar(env.SUBMIT_CONCURRENCY, 6, "SUBMIT_CONCURRENCY"))),
    ),
    executionTimeoutMs: numberVar(
      env.RUNPOD_EXECUTION_TIMEOUT_MS,
      1_800_000,
      "RUNPOD_EXECUTION_TIMEOUT_MS",
    ),
    ttlMs: numberVar(env.RUNPOD_TTL_MS, 86_400_000, "RUNPOD_TTL_MS"),
    gate: {
      runsPer10s: Math.max(1, numberVar(env.RUNPOD_RUNS_PER_10S, 900, "RUNPOD_RUNS_PER_10S")),
      breakerThreshold: Math.max(1, numberVar(env.BREAKER_THRESHOLD, 5, "BREAKER_THRESHOLD")),
      breakerCooldownS: Math.max(1, numberVar(env.BREAKER_COOLDOWN_S, 30, "BREAKER_COOLDOWN_S")),
      breakerWindow: Math.max(1, Math.floor(numberVar(env.BREAKER_WINDOW, 20, "BREAKER_WINDOW"))),
      breakerFailureRate: Math.min(
        1,
        numberVar(env.BREAKER_FAILURE_RATE, 0.5, "BREAKER_FAILURE_RATE"),
      ),
      breakerProbes: Math.max(1, Math.floor(numberVar(env.BREAKER_PROBES, 3, "BREAKER_PROBES"))),
      maxInFlight: maxInFlightVar(env.RUNPOD_MAX_IN_FLIGHT),
      maxWorkers:
        env.RUNPOD_MAX_WORKERS === undefined || env.RUNPOD_MAX_WORKERS.trim() === ""
          ? null
          : Math.max(1, Math.floor(numberVar(env.RUNPOD_MAX_WORKERS, 1, "RUNPOD_MAX_WORKERS"))),
      fleetPollS: Math.max(1, numberVar(env.FLEET_POLL_S, 5, "FLEET_POLL_S")),
      scaler: scalerVar(env.RUNPOD_SCALER),
      laneWeights: laneWeightsVar(env.PRIORITY_WEIGHTS),
      routes: endpointRoutes(env),
    },
    routes: endpointRoutes(env),
    pendingMaxAgeS: numberVar(env.PENDING_MAX_AGE_S, 86_400, "PENDING_MAX_AGE_S"),
    archiveAfterS: numberVar(env.ARCHIVE_AFTER_S, 2_592_000, "ARCHIVE_AFTER_S"),
  };
}

/**
 * Outbound webhooks: null when NOTIFY_URL is not set (nobody to notify). With it, NOTIFY_SECRET
 * must be a Standard Webhooks secret (`whsec_` and base64). NOTIFY_TIMEOUT_MS (10000) and
 * NOTIFY_RETRY_S (the spec's schedule) are this implementation's own knobs, for tests and benches.
 */
export function notifySettings(env: {
  NOTIFY_URL?: string | undefined;
  NOTIFY_SECRET?: string | undefined;
  NOTIFY_TIMEOUT_MS?: string | undefined;
  NOTIFY_RETRY_S?: string | undefined;
}): NotifySettings | null {
  const url = env.NOTIFY_URL?.trim() ?? "";
  if (url === "") return null;
  if (!/^https?:\/\//.test(url)) {
    throw new Error(`setting NOTIFY_URL must be an http(s) URL, got ${JSON.stringify(url)}`);
  }
  const secret = env.NOTIFY_SECRET ?? "";
  if (!validNotifySecret(secret)) {
    throw new Error(
      "setting NOTIFY_SECRET must be a whsec_… secret (base64) when NOTIFY_URL is set",
    );
  }
  const retry = env.NOTIFY_RETRY_S?.trim();
  const retryS = retry ? retry.split(",").map((part) => Number(part.trim())) : NOTIFY_RETRY_S;
  if (retryS.length === 0 || retryS.some((n) => !Number.isFinite(n) || n < 0)) {
    throw new Error(`setting NOTIFY_RETRY_S must be seconds separated by commas, got ${retry}`);
  }
  return {
    url,
    secret,
    timeoutMs: numberVar(env.NOTIFY_TIMEOUT_MS, NOTIFY_TIMEOUT_MS, "NOTIFY_TIMEOUT_MS"),
    retryS,
  };
}

/** Tenancy: scoped tokens' and download URLs' lifetimes, the active-jobs quota, input keys. */
export interface TenancySettings {
  /** CLIENT_TOKEN_MAX_TTL_S: the longest `ttl_s` of POST /client-tokens (and its default). */
  clientTokenMaxTtlS: number;
  /** DOWNLOAD_URL_TTL_S: how long a signed download URL stays good. */
  downloadUrlTtlS: number;
  /** MAX_ACTIVE_PER_USER: pending + processing jobs a fairness key may have; 0: no limit. */
  maxActivePerUser: number;
  /** INPUT_KEY_PREFIX: a template such as `uploads/{project_id}/`; null: any key. */
  inputKeyPrefix: string | null;
}

export function tenancySettings(env: ProducerEnv): TenancySettings {
  const maxActive = numberVar(env.MAX_ACTIVE_PER_USER, 0, "MAX_ACTIVE_PER_USER");
  if (!Number.isInteger(maxActive)) {
    throw new Error(`setting MAX_ACTIVE_PER_USER must be a whole number, got ${maxActive}`);
  }
  const prefix = env.INPUT_KEY_PREFIX?.trim() ?? "";
  return {
    clientTokenMaxTtlS: numberVar(env.CLIENT_TOKEN_MAX_TTL_S, 3600, "CLIENT_TOKEN_MAX_TTL_S"),
    downloadUrlTtlS: numberVar(env.DOWNLOAD_URL_TTL_S, 900, "DOWNLOAD_URL_TTL_S"),
    maxActivePerUser: maxActive,
    inputKeyPrefix: prefix === "" ? null : prefix,
  };
}

/** The prefix INPUT_KEY_PREFIX gives `projectId`'s input keys (`{project_id}` replaced). */
export function inputPrefixOf(template: string, projectId: number): string {
  return template.replaceAll("{project_id}", String(projectId));
}

/** The producer's copy of the consumer's poll interval: progress reports push the next poll. */
export function pollAfterSeconds(env: ProducerEnv): number {
  return numberVar(env.POLL_AFTER_S, 300, "POLL_AFTER_S");
}

/** Seconds a live-status ticket stays good for opening `GET /live` (fractions allowed). */
export function liveTicketTtlSeconds(env: ProducerEnv): number {
  return numberVar(env.LIVE_TICKET_TTL_S, 60, "LIVE_TICKET_TTL_S");
}

/**
 * Seconds a live socket stays open (fractions allowed): the live-status object that holds it
 * closes it with 4001 this long after it opened, and the client reconnects with a fresh ticket.
 * Read by the objects (shared/live-hub.ts), which the consumer Worker hosts.
 */
export function liveSessionMaxSeconds(env: Pick<CommonEnv, "LIVE_SESSION_MAX_S">): number {
  return numberVar(env.LIVE_SESSION_MAX_S, 3600, "LIVE_SESSION_MAX_S");
}
