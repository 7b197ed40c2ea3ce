// An HTTP emulator of RunPod's serverless queue API (/run, /status, /cancel, /health) with
// per-endpoint timings and fault injection, plus an admin API under /__emulator for tests.
// Node built-ins only; see emulator/README.md for the routes and settings.

import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { clearInterval, clearTimeout, setInterval, setTimeout } from "node:timers";
import { createWebhookReceivers, RECEIVER_PREFIX } from "./webhook-receiver.ts";

// ---- types ----

export type TerminalOutcome = "COMPLETED" | "FAILED" | "TIMED_OUT";
export type JobStatus = "IN_QUEUE" | "IN_PROGRESS" | "CANCELLED" | TerminalOutcome;
export type RunAnswer = 200 | 429 | 500;
export type WebhookAction = "send" | "drop";
/** RunPod's autoscaler types: by the time a request waits, or by the requests per worker. */
export type ScalerType = "QUEUE_DELAY" | "REQUEST_COUNT";
export type WorkerState = "initializing" | "idle" | "running" | "throttled";

/** Timings and faults of one endpoint; options give the defaults, the admin API overrides them. */
export interface EndpointConfig {
  /** Time a job spends IN_QUEUE, ms. */
  queueMs: number;
  /** Time a job spends IN_PROGRESS, ms. */
  runMs: number;
  /** Progress figures reported at evenly spaced points of the run. */
  progressSteps: number[];
  webhookRetryDelayMs: number;
  /** How long a finished job's result can be read, ms. */
  retentionMs: number;
  /** Share (0..1) of /run answered 500 without creating a job. */
  runErrorRate: number;
  /** Share (0..1) of /run answered 429 without creating a job. */
  runRateLimitRate: number;
  /** The job is created, then the /run answer waits this long, ms. */
  runDelayMs: number;
  /** Share (0..1) of runs ending FAILED. */
  failRate: number;
  /** Share (0..1) of runs ending TIMED_OUT. */
  timeoutRate: number;
  /** Share (0..1) of terminal webhooks never sent. */
  dropWebhookRate: number;
  /** Share (0..1) of /status answered 500. */
  statusErrorRate: number;
  /** Answers of the next /run calls, consumed in order; wins over the rates. */
  runScript: RunAnswer[];
  /** Outcomes of the next runs, consumed in order; wins over the rates. */
  outcomeScript: TerminalOutcome[];
  /** Fate of the next terminal webhooks, consumed in order; wins over the rate. */
  webhookScript: WebhookAction[];
  /** Token bucket on /run: refilled at this many tokens a second, capacity max(1, it); 0 = none. */
  runRateLimitPerS: number;
  /** While true (or until outageUntilMs, epoch ms), /run, /status and /cancel answer outageStatus. */
  outage: boolean;
  outageStatus: number;
  outageUntilMs: number;
  /**
   * A fixed fleet of always-ready workers: jobs IN_PROGRESS at once (the others wait IN_QUEUE,
   * first in first out); 0 = unlimited. Ignored while workersMax > 0.
   */
  maxWorkers: number;
  /** Jobs IN_QUEUE at most: a /run beyond answers 429; 0 = unlimited. */
  maxQueue: number;
  /** The autoscaling fleet's cap (RunPod's max workers); 0 = no autoscaling fleet (maxWorkers). */
  workersMax: number;
  /** Workers always on (RunPod's active workers), capped by workersMax. */
  workersMin: number;
  scalerType: ScalerType;
  /**
   * QUEUE_DELAY: seconds a request may wait before a worker is added (fractions allowed, RunPod
   * takes whole seconds); REQUEST_COUNT: requests (queued + in progress) per worker.
   */
  scalerValue: number;
  /** How often the autoscaler looks at the queue while requests wait, ms (>= 1). */
  scalerIntervalMs: number;
  /** A started worker is initializing this long before it takes jobs, ms. */
  coldStartMs: number;
  /** An idle (or throttled) worker stops after this long, never below workersMin, ms. */
  idleTimeoutMs: number;
  /** While fewer workers than this are throttled, a started worker is throttled (no GPU). */
  throttledWorkers: number;
}

export interface EmulatorOptions extends EndpointConfig {
  /** The bearer token every /v2 route requires. */
  apiKey: string;
  /** Seed of the PRNG behind every rate, so runs are repeatable. */
  seed: number;
  /** Where lifecycle and delivery events go; silent by default. */
  log: (line: string) => void;
  /** Awaited right before a job is marked COMPLETED; if it throws, the job ends FAILED. */
  onComplete?: (job: { id: string; input: Record<string, unknown> }) => Promise<void> | void;
}

export interface JobPolicy {
  executionTimeout?: number;
  ttl?: number;
  lowPriority?: boolean;
  [key: string]: unknown;
}

export interface WebhookDelivery {
  url: string;
  attempt: number;
  /** The receiver's HTTP status, or null when the request failed (see `error`). */
  status: number | null;
  error: string | null;
  at: string;
}

export interface ProgressCall {
  url: string;
  progress: number;
  status: number | null;
  error: string | null;
  at: string;
}

/** Everything the emulator knows about a job (`GET /__emulator/jobs/{id}`). */
export interface JobState {
  id: string;
  endpointId: string;
  status: JobStatus;
  input: Record<string, unknown>;
  webhook: string | null;
  policy: JobPolicy;
  /** The terminal status the run reaches if nothing (cancel, timeout policy, finish) intervenes. */
  plannedOutcome: TerminalOutcome;
  /** Last progress figure reported while IN_PROGRESS. */
  progress: number | null;
  output?: unknown;
  error?: string;
  delayTime: number | null;
  executionTime: number | null;
  /** The autoscaling fleet's worker that ran (or runs) the job; null otherwise. */
  workerId: string | null;
  submittedAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  webhookDropped: boolean;
  webhookDeliveries: WebhookDelivery[];
  progressCalls: ProgressCall[];
}

/** RunPod's job status object, as `/status` answers it and webhooks receive it. */
export interface StatusObject {
  id: string;
  status: JobStatus;
  delayTime?: number;
  executionTime?: number;
  output?: unknown;
  error?: string;
}

export interface RequestRecord {
  method: string;
  path: string;
  endpointId: string | null;
  authorization: string | null;
  /** Parsed JSON, the raw text when it is not JSON, or null when empty. */
  body: unknown;
  receivedAt: string;
  /** Null while the answer is still pending (runDelayMs). */
  responseStatus: number | null;
}

/** Workers by state. */
export interface WorkerCounts {
  idle: number;
  running: number;
  initializing: number;
  throttled: number;
}

/** The endpoint's workers and queue from `at` (epoch ms) until the next sample. */
export interface FleetSample extends WorkerCounts {
  at: number;
  inQueue: number;
}

export interface FleetWorker {
  id: string;
  state: WorkerState;
  /** Epoch ms the worker entered its state. */
  since: number;
  /** Epoch ms the worker was started. */
  startedAt: number;
  jobId: string | null;
}

/** `GET /__emulator/endpoints/{endpoint}/fleet`: figures since the endpoint's creation or reset. */
export interface FleetReport {
  /** autoscaling: workersMax > 0; fixed: maxWorkers always-ready workers; unlimited: neither. */
  mode: "autoscaling" | "fixed" | "unlimited";
  /** Epoch ms the figures start (the endpoint's creation or reset) and end (now). */
  since: number;
  at: number;
  /** The autoscaling fleet's workers, in start order (empty in the other modes). */
  workers: FleetWorker[];
  current: WorkerCounts & { inQueue: number; inProgress: number };
  /** Worker-milliseconds spent in each state. */
  workerMs: WorkerCounts;
  /** What RunPod bills, start to stop: initializing + idle + running (throttled is not). */
  billedWorkerMs: number;
  /** Worker-milliseconds a worker was idle while a job was IN_QUEUE: ∫ min(idle, inQueue) dt. */
  idleWhileQueuedMs: number;
  peakWorkers: number;
  workersStarted: number;
  workersStopped: number;
  /** A sample at every change, the last TIMELINE_KEPT; timelineDropped older ones were dropped. */
  timeline: FleetSample[];
  timelineDropped: number;
}

export interface RunpodEmulator {
  /** `http://host:port` once listening (RunPod's base URL is this plus `/v2`), else null. */
  readonly url: string | null;
  listen(port?: number, host?: string): Promise<{ url: string; port: number }>;
  /** Stops the server, every timer and every outgoing call. */
  close(): Promise<void>;
}

// ---- config ----

export const DEFAULT_CONFIG: EndpointConfig = {
  queueMs: 100,
  runMs: 1500,
  progressSteps: [25, 50, 75],
  webhookRetryDelayMs: 10_000,
  retentionMs: 1_800_000,
  runErrorRate: 0,
  runRateLimitRate: 0,
  runDelayMs: 0,
  failRate: 0,
  timeoutRate: 0,
  dropWebhookRate: 0,
  statusErrorRate: 0,
  runScript: [],
  outcomeScript: [],
  webhookScript: [],
  runRateLimitPerS: 0,
  outage: false,
  outageStatus: 503,
  outageUntilMs: 0,
  maxWorkers: 0,
  maxQueue: 0,
  workersMax: 0,
  workersMin: 0,
  scalerType: "QUEUE_DELAY",
  scalerValue: 4,
  scalerIntervalMs: 1000,
  coldStartMs: 0,
  idleTimeoutMs: 5000,
  throttledWorkers: 0,
};

const MS_KEYS = [
  "queueMs",
  "runMs",
  "webhookRetryDelayMs",
  "retentionMs",
  "runDelayMs",
  "outageUntilMs",
  "coldStartMs",
  "idleTimeoutMs",
] as const;
const COUNT_KEYS = [
  "maxWorkers",
  "maxQueue",
  "workersMax",
  "workersMin",
  "throttledWorkers",
] as const;
const RATE_KEYS = [
  "runErrorRate",
  "runRateLimitRate",
  "failRate",
  "timeoutRate",
  "dropWebhookRate",
  "statusErrorRate",
] as const;
const RUN_ANSWERS: readonly RunAnswer[] = [200, 429, 500];
const OUTCOMES: readonly TerminalOutcome[] = ["COMPLETED", "FAILED", "TIMED_OUT"];
const WEBHOOK_ACTIONS: readonly WebhookAction[] = ["send", "drop"];
const SCALER_TYPES: readonly ScalerType[] = ["QUEUE_DELAY", "REQUEST_COUNT"];
const WORKER_STATES: readonly WorkerState[] = ["idle", "running", "initializing", "throttled"];
const TIMELINE_KEPT = 20_000;
const WEBHOOK_ATTEMPTS = 3;
const OUTGOING_TIMEOUT_MS = 10_000;
const MAX_REQUESTS_KEPT = 10_000;
const MAX_BODY_BYTES = 10 * 1024 * 1024;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function includes<T>(list: readonly T[], value: unknown): value is T {
  return (list as readonly unknown[]).includes(value);
}

function listOf<T>(key: string, value: unknown, allowed: readonly T[]): T[] {
  if (!Array.isArray(value) || !value.every((item) => includes(allowed, item))) {
    throw new Error(
      `${key} must be an array of ${allowed.map((a) => JSON.stringify(a)).join(" | ")}`,
    );
  }
  return [...value];
}

/** Checks a partial endpoint config (admin PUT body, options); throws an Error saying what is wrong. */
export function parseEndpointConfig(value: unknown): Partial<EndpointConfig> {
  if (!isRecord(value)) throw new Error("config must be a JSON object");
  const config: Partial<EndpointConfig> = {};
  for (const [key, item] of Object.entries(value)) {
    if (includes(MS_KEYS, key)) {
      if (typeof item !== "number" || !Number.isFinite(item) || item < 0) {
        throw new Error(`${key} must be a number of milliseconds >= 0`);
      }
      config[key] = item;
    } else if (includes(RATE_KEYS, key)) {
      if (typeof item !== "number" || !(item >= 0 && item <= 1)) {
        throw new Error(`${key} must be a number between 0 and 1`);
      }
      config[key] = item;
    } else if (includes(COUNT_KEYS, key)) {
      if (!Number.isInteger(item) || (item as number) < 0) {
        throw new Error(`${key} must be an integer >= 0`);
      }
      config[key] = item as number;
    } else if (key === "runRateLimitPerS") {
      if (typeof item !== "number" || !Number.isFinite(item) || item < 0) {
        throw new Error("runRateLimitPerS must be a number >= 0");
      }
      config.runRateLimitPerS = item;
    } else if (key === "scalerType") {
      if (!includes(SCALER_TYPES, item)) {
        throw new Error(`scalerType must be one of ${SCALER_TYPES.join(", ")}`);
      }
      config.scalerType = item;
    } else if (key === "scalerValue") {
      if (typeof item !== "number" || !Number.isFinite(item) || item <= 0) {
        throw new Error("scalerValue must be a number > 0");
      }
      config.scalerValue = item;
    } else if (key === "scalerIntervalMs") {
      if (typeof item !== "number" || !Number.isFinite(item) || item < 1) {
        throw new Error("scalerIntervalMs must be a number of milliseconds >= 1");
      }
      config.scalerIntervalMs = item;
    } else if (key === "outage") {
      if (typeof item !== "boolean") throw new Error("outage must be a boolean");
      config.outage = item;
    } else if (key === "outageStatus") {
      if (!Number.isInteger(item) || (item as number) < 400 || (item as number) > 599) {
        throw new Error("outageStatus must be an HTTP status between 400 and 599");
      }
      config.outageStatus = item as number;
    } else if (key === "progressSteps") {
      const ok = (n: unknown) => typeof n === "number" && n >= 0 && n <= 100;
      if (!Array.isArray(item) || !item.every(ok)) {
        throw new Error("progressSteps must be an array of numbers between 0 and 100");
      }
      config.progressSteps = [...item];
    } else if (key === "runScript") {
      config.runScript = listOf(key, item, RUN_ANSWERS);
    } else if (key === "outcomeScript") {
      config.outcomeScript = listOf(key, item, OUTCOMES);
    } else if (key === "webhookScript") {
      config.webhookScript = listOf(key, item, WEBHOOK_ACTIONS);
    } else {
      throw new Error(`unknown config key: ${key}`);
    }
  }
  return config;
}

function copyConfig(config: EndpointConfig): EndpointConfig {
  return {
    ...config,
    progressSteps: [...config.progressSteps],
    runScript: [...config.runScript],
    outcomeScript: [...config.outcomeScript],
    webhookScript: [...config.webhookScript],
  };
}

/** mulberry32: small, fast, good enough for fault rates. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function hash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

// ---- internal state ----

interface Endpoint {
  id: string;
  config: EndpointConfig;
  random: () => number;
  /** Answers of POST /run by status. */
  runAnswers: Record<string, number>;
  /** The runRateLimitPerS bucket; null = full. */
  bucket: { tokens: number; at: number } | null;
  /** Jobs IN_QUEUE, in submission order. */
  queued: Set<Job>;
  /** Jobs IN_PROGRESS. */
  running: Set<Job>;
  /** The autoscaling fleet (workersMax > 0), in start order. */
  workers: Map<string, Worker>;
  workersStarted: number;
  workersStopped: number;
  /** The autoscaler's periodic check; armed only while counted jobs are IN_QUEUE. */
  tick: NodeJS.Timeout | null;
  usage: Usage;
}

interface Worker {
  id: string;
  state: WorkerState;
  since: number;
  startedAt: number;
  job: Job | null;
  /** The end of a cold start, or the idle timeout. */
  timer: NodeJS.Timeout | null;
}

/** What GET /fleet integrates: the counts since `at` and everything before. */
interface Usage {
  since: number;
  at: number;
  last: FleetSample;
  workerMs: WorkerCounts;
  idleWhileQueuedMs: number;
  peakWorkers: number;
  timeline: FleetSample[];
  dropped: number;
}

interface Job {
  ep: Endpoint;
  state: JobState;
  submitted: number;
  started: number | null;
  /** queueMs is over: the job starts as soon as a worker is free. */
  ready: boolean;
  /** onComplete is running. */
  completing: boolean;
  /** The autoscaling fleet's worker running it. */
  worker: Worker | null;
  timers: Set<NodeJS.Timeout>;
  progressChain: Promise<void>;
}

class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

const isActive = (status: JobStatus) => status === "IN_QUEUE" || status === "IN_PROGRESS";
/** policy.lowPriority: the job runs on a free worker but never makes the autoscaler add one. */
const isLowPriority = (job: Job) => job.state.policy.lowPriority === true;
const fleetOn = (ep: Endpoint) => ep.config.workersMax > 0;
const totalWorkers = (c: WorkerCounts) => c.idle + c.running + c.initializing + c.throttled;
const now = () => new Date().toISOString();
const errorText = (error: unknown) => (error instanceof Error ? error.message : String(error));

interface Reply {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

const reply = (status: number, body: unknown, headers?: Record<string, string>): Reply => ({
  status,
  body,
  headers,
});

function send(res: ServerResponse, { status, body, headers }: Reply): void {
  if (res.headersSent || res.destroyed) return;
  const text = JSON.stringify(body);
  res.writeHead(status, {
    ...headers,
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, "request body too large");
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

function parseJson(text: string): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch {
    return { ok: false };
  }
}

// ---- the emulator ----

export function createRunpodEmulator(options: Partial<EmulatorOptions> = {}): RunpodEmulator {
  const { apiKey = "dev-runpod-key", seed = 42, log = () => {}, onComplete, ...rest } = options;
  const given = Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined));
  const defaults: EndpointConfig = { ...DEFAULT_CONFIG, ...parseEndpointConfig(given) };

  const endpoints = new Map<string, Endpoint>();
  const jobs = new Map<string, Job>();
  let requests: RequestRecord[] = [];
  const pendingTimers = new Set<NodeJS.Timeout>();
  const shutdown = new AbortController();
  const receivers = createWebhookReceivers(log);
  let url: string | null = null;

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      const status = error instanceof HttpError ? error.status : 500;
      if (status === 500) log(`emulator error: ${errorText(error)}`);
      send(res, reply(status, { error: status === 500 ? "internal error" : errorText(error) }));
    });
  });

  function endpoint(id: string): Endpoint {
    let found = endpoints.get(id);
    if (!found) {
      const at = Date.now();
      const first: FleetSample = {
        at,
        idle: 0,
        running: 0,
        initializing: 0,
        throttled: 0,
        inQueue: 0,
      };
      found = {
        id,
        config: copyConfig(defaults),
        random: prng(seed ^ hash(id)),
        runAnswers: { 200: 0, 429: 0, 500: 0, 503: 0 },
        bucket: null,
        queued: new Set(),
        running: new Set(),
        workers: new Map(),
        workersStarted: 0,
        workersStopped: 0,
        tick: null,
        usage: {
          since: at,
          at,
          last: first,
          workerMs: { idle: 0, running: 0, initializing: 0, throttled: 0 },
          idleWhileQueuedMs: 0,
          peakWorkers: 0,
          timeline: [first],
          dropped: 0,
        },
      };
      endpoints.set(id, found);
      note(found, at); // a fixed fleet's idle workers
      reconcile(found); // workersMin
    }
    return found;
  }

  function chance(ep: Endpoint, rate: number): boolean {
    if (rate <= 0) return false;
    if (rate >= 1) return true;
    return ep.random() < rate;
  }

  function sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        pendingTimers.delete(timer);
        resolve();
      }, ms);
      pendingTimers.add(timer);
    });
  }

  // ---- usage: what GET /fleet reports ----

  /** Workers by state: the autoscaling fleet's, or a fixed fleet's (maxWorkers), or the runs. */
  function workerCounts(ep: Endpoint): WorkerCounts {
    const counts: WorkerCounts = { idle: 0, running: 0, initializing: 0, throttled: 0 };
    if (fleetOn(ep)) {
      for (const worker of ep.workers.values()) counts[worker.state] += 1;
      return counts;
    }
    counts.running = ep.running.size;
    counts.idle = Math.max(0, ep.config.maxWorkers - counts.running);
    return counts;
  }

  /** Adds the worker-milliseconds from the last change to `at`. */
  function integrate(ep: Endpoint, at: number): void {
    const { usage } = ep;
    const elapsed = at - usage.at;
    if (elapsed <= 0) return;
    for (const state of WORKER_STATES) usage.workerMs[state] += usage.last[state] * elapsed;
    usage.idleWhileQueuedMs += Math.min(usage.last.idle, usage.last.inQueue) * elapsed;
    usage.at = at;
  }

  /** Records a change of the endpoint's workers or queue (a timeline sample when they differ). */
  function note(ep: Endpoint, at = Date.now()): void {
    integrate(ep, at);
    const { usage } = ep;
    const sample: FleetSample = {
      at: usage.at,
      ...workerCounts(ep),
      inQueue: ep.queued.size,
    };
    const { last } = usage;
    if (sample.inQueue === last.inQueue && WORKER_STATES.every((s) => sample[s] === last[s])) {
      return;
    }
    usage.last = sample;
    usage.peakWorkers = Math.max(usage.peakWorkers, totalWorkers(sample));
    const { timeline } = usage;
    // Changes within one millisecond: the last one stands.
    if (timeline.at(-1)?.at === sample.at) timeline[timeline.length - 1] = sample;
    else timeline.push(sample);
    if (timeline.length > TIMELINE_KEPT) {
      timeline.shift();
      usage.dropped += 1;
    }
  }

  function fleetReport(ep: Endpoint): FleetReport {
    const at = Date.now();
    integrate(ep, at);
    const { usage } = ep;
    const { workerMs } = usage;
    return {
      mode: fleetOn(ep) ? "autoscaling" : ep.config.maxWorkers > 0 ? "fixed" : "unlimited",
      since: usage.since,
      at,
      workers: [...ep.workers.values()].map((w) => ({
        id: w.id,
        state: w.state,
        since: w.since,
        startedAt: w.startedAt,
        jobId: w.job?.state.id ?? null,
      })),
      current: { ...workerCounts(ep), inQueue: ep.queued.size, inProgress: ep.running.size },
      workerMs: { ...workerMs },
      billedWorkerMs: workerMs.initializing + workerMs.idle + workerMs.running,
      idleWhileQueuedMs: usage.idleWhileQueuedMs,
      peakWorkers: usage.peakWorkers,
      workersStarted: ep.workersStarted,
      workersStopped: ep.workersStopped,
      timeline: [...usage.timeline],
      timelineDropped: usage.dropped,
    };
  }

  // ---- the autoscaling fleet (workersMax > 0) ----

  /**
   * The worker's one timer: `fn` once Date.now() reaches `until` (a timer may fire a millisecond
   * early). Unref'd, as the listening server keeps the process up; none after close().
   */
  function workerTimer(worker: Worker, until: number, fn: () => void): void {
    if (worker.timer !== null) clearTimeout(worker.timer);
    worker.timer = null;
    if (shutdown.signal.aborted) return;
    const timer = setTimeout(
      () => {
        worker.timer = null;
        if (Date.now() < until) workerTimer(worker, until, fn);
        else fn();
      },
      Math.max(0, until - Date.now()),
    );
    timer.unref();
    worker.timer = timer;
  }

  const minWorkers = (ep: Endpoint) => Math.min(ep.config.workersMin, ep.config.workersMax);

  /** Moves a worker to `state`; an idle or throttled one stops after idleTimeoutMs. */
  function setWorker(ep: Endpoint, worker: Worker, state: WorkerState, at = Date.now()): void {
    if (worker.timer !== null) clearTimeout(worker.timer);
    worker.timer = null;
    worker.state = state;
    worker.since = at;
    if (state === "idle" || state === "throttled") armIdleTimeout(ep, worker);
    note(ep, at);
  }

  function armIdleTimeout(ep: Endpoint, worker: Worker): void {
    workerTimer(worker, worker.since + ep.config.idleTimeoutMs, () => {
      if (ep.workers.get(worker.id) !== worker) return;
      if (ep.workers.size > minWorkers(ep)) stopWorker(ep, worker);
    });
  }

  /** A cold start: initializing for coldStartMs, then idle (and given a job). */
  function boot(ep: Endpoint, worker: Worker, at = Date.now()): void {
    const { coldStartMs } = ep.config;
    if (coldStartMs <= 0) {
      setWorker(ep, worker, "idle", at);
      return;
    }
    setWorker(ep, worker, "initializing", at);
    workerTimer(worker, at + coldStartMs, () => {
      if (ep.workers.get(worker.id) !== worker) return;
      setWorker(ep, worker, "idle");
      dispatch(ep);
    });
  }

  function startWorker(ep: Endpoint): void {
    const at = Date.now();
    ep.workersStarted += 1;
    const worker: Worker = {
      id: `worker-${ep.workersStarted}`,
      state: "initializing",
      since: at,
      startedAt: at,
      job: null,
      timer: null,
    };
    const throttled = [...ep.workers.values()].filter((w) => w.state === "throttled").length;
    ep.workers.set(worker.id, worker);
    log(`${ep.id}: ${worker.id} started`);
    if (throttled < ep.config.throttledWorkers) setWorker(ep, worker, "throttled", at);
    else boot(ep, worker, at);
  }

  function stopWorker(ep: Endpoint, worker: Worker, at = Date.now()): void {
    if (worker.timer !== null) clearTimeout(worker.timer);
    worker.timer = null;
    if (worker.job !== null) worker.job.worker = null;
    worker.job = null;
    if (ep.workers.get(worker.id) !== worker) return;
    ep.workers.delete(worker.id);
    ep.workersStopped += 1;
    log(`${ep.id}: ${worker.id} stopped`);
    note(ep, at);
  }

  /** A job left its worker: the worker idles, or stops when the fleet is over its cap (or off). */
  function releaseWorker(job: Job, at: number): void {
    const { worker, ep } = job;
    job.worker = null;
    if (worker === null || worker.job !== job) return;
    worker.job = null;
    if (ep.workers.get(worker.id) !== worker) return;
    if (!fleetOn(ep) || ep.workers.size > ep.config.workersMax) stopWorker(ep, worker, at);
    else setWorker(ep, worker, "idle", at);
  }

  function stopTick(ep: Endpoint): void {
    if (ep.tick !== null) clearInterval(ep.tick);
    ep.tick = null;
  }

  /**
   * The autoscaler's check: adds workers for the jobs IN_QUEUE (policy.lowPriority ones aside), up
   * to workersMax. Answers whether such jobs wait (the check should run again).
   */
  function scale(ep: Endpoint): boolean {
    const { config } = ep;
    if (!fleetOn(ep) || shutdown.signal.aborted) return false;
    const at = Date.now();
    let queued = 0;
    let overdue = 0;
    for (const job of ep.queued) {
      if (isLowPriority(job)) continue;
      queued += 1;
      if (at - job.submitted > config.scalerValue * 1000) overdue += 1;
    }
    if (queued === 0) return false;
    const size = ep.workers.size;
    let wanted: number;
    if (config.scalerType === "REQUEST_COUNT") {
      let inProgress = 0;
      for (const job of ep.running) if (!isLowPriority(job)) inProgress += 1;
      const target = Math.max(
        minWorkers(ep),
        Math.ceil((queued + inProgress) / config.scalerValue),
      );
      wanted = target - size;
    } else {
      // RunPod: "with zero workers initially, the first request adds one worker"; then a worker
      // per job waiting over scalerValue seconds that no initializing or idle worker covers.
      const counts = workerCounts(ep);
      wanted = size === 0 ? Math.max(1, overdue) : overdue - counts.initializing - counts.idle;
    }
    const adding = Math.min(wanted, config.workersMax - size);
    for (let i = 0; i < adding; i++) startWorker(ep);
    if (adding > 0) dispatch(ep);
    return true;
  }

  /** Runs the autoscaler's check now and then every scalerIntervalMs, while counted jobs wait. */
  function ensureTick(ep: Endpoint): void {
    if (ep.tick !== null) return;
    if (!scale(ep) || shutdown.signal.aborted) return;
    ep.tick = setInterval(() => {
      if (!scale(ep)) stopTick(ep);
    }, ep.config.scalerIntervalMs);
    ep.tick.unref();
  }

  /** Applies the fleet settings as they are now (endpoint creation, admin PUT). */
  function reconcile(ep: Endpoint): void {
    stopTick(ep);
    const { config } = ep;
    const workers = () => [...ep.workers.values()];
    if (!fleetOn(ep)) {
      // Back to maxWorkers: runs in progress go on outside any fleet.
      for (const worker of workers()) stopWorker(ep, worker);
      note(ep);
      return;
    }
    // Throttling lifted: the oldest throttled workers get their GPU.
    const throttled = workers().filter((w) => w.state === "throttled");
    const lifted = Math.max(0, throttled.length - config.throttledWorkers);
    for (const worker of throttled.slice(0, lifted)) boot(ep, worker);
    // Over the cap: the newest throttled, initializing, then idle workers stop; running ones stop
    // when their job ends.
    let excess = ep.workers.size - config.workersMax;
    for (const state of ["throttled", "initializing", "idle"] as const) {
      for (const worker of workers().reverse()) {
        if (excess > 0 && worker.state === state) {
          stopWorker(ep, worker);
          excess -= 1;
        }
      }
    }
    while (ep.workers.size < minWorkers(ep)) startWorker(ep);
    for (const worker of ep.workers.values()) {
      if (worker.state === "idle" || worker.state === "throttled") armIdleTimeout(ep, worker);
    }
    note(ep);
    ensureTick(ep);
  }

  /** Clears the endpoint's fleet timers (reset, close). */
  function teardown(ep: Endpoint): void {
    stopTick(ep);
    for (const worker of ep.workers.values()) {
      if (worker.timer !== null) clearTimeout(worker.timer);
      worker.timer = null;
    }
  }

  // ---- job lifecycle ----

  function schedule(job: Job, ms: number, fn: () => void): void {
    if (jobs.get(job.state.id) !== job || shutdown.signal.aborted) return;
    const timer = setTimeout(() => {
      job.timers.delete(timer);
      fn();
    }, ms);
    job.timers.add(timer);
  }

  function clearTimers(job: Job): void {
    for (const timer of job.timers) clearTimeout(timer);
    job.timers.clear();
  }

  function removeJob(job: Job): void {
    clearTimers(job);
    if (jobs.get(job.state.id) === job) jobs.delete(job.state.id);
    const { ep } = job;
    const left = ep.queued.delete(job) || ep.running.delete(job);
    const at = Date.now();
    releaseWorker(job, at);
    if (left) note(ep, at);
  }

  function createJob(endpointId: string, body: Record<string, unknown>): Job {
    const ep = endpoint(endpointId);
    const { config } = ep;
    let outcome = config.outcomeScript.shift();
    if (!outcome) {
      if (chance(ep, config.failRate)) outcome = "FAILED";
      else if (chance(ep, config.timeoutRate)) outcome = "TIMED_OUT";
      else outcome = "COMPLETED";
    }
    const submitted = Date.now();
    const job: Job = {
      ep,
      submitted,
      started: null,
      ready: false,
      completing: false,
      worker: null,
      timers: new Set(),
      progressChain: Promise.resolve(),
      state: {
        id: `${randomUUID()}-u1`,
        endpointId,
        status: "IN_QUEUE",
        input: body.input as Record<string, unknown>,
        webhook: typeof body.webhook === "string" ? body.webhook : null,
        policy: isRecord(body.policy) ? (body.policy as JobPolicy) : {},
        plannedOutcome: outcome,
        progress: null,
        delayTime: null,
        executionTime: null,
        workerId: null,
        submittedAt: new Date(submitted).toISOString(),
        startedAt: null,
        finishedAt: null,
        webhookDropped: false,
        webhookDeliveries: [],
        progressCalls: [],
      },
    };
    jobs.set(job.state.id, job);
    ep.queued.add(job);
    note(ep, submitted);
    log(`job ${job.state.id} (${endpointId}) IN_QUEUE, planned ${outcome}`);

    // A timer may fire a millisecond before Date.now() says queueMs passed: wait out the rest, so
    // delayTime is never below queueMs.
    const queued = () => {
      const left = job.submitted + config.queueMs - Date.now();
      if (left > 0) return schedule(job, left, queued);
      job.ready = true;
      dispatch(ep);
    };
    schedule(job, config.queueMs, queued);
    const { ttl } = job.state.policy;
    if (typeof ttl === "number") {
      schedule(job, ttl, () => {
        if (job.state.status !== "IN_QUEUE") return;
        log(`job ${job.state.id} expired in queue (ttl ${ttl} ms)`);
        removeJob(job);
      });
    }
    if (fleetOn(ep) && !isLowPriority(job)) ensureTick(ep);
    return job;
  }

  const countJobs = (endpointId: string, status: JobStatus) =>
    [...jobs.values()].filter((j) => j.state.endpointId === endpointId && j.state.status === status)
      .length;

  /**
   * Starts the endpoint's ready queued jobs, in submission order, while a worker is free: an idle
   * worker of the autoscaling fleet, else a place under maxWorkers (0 = unlimited).
   */
  function dispatch(ep: Endpoint): void {
    const startable = (job: Job) => job.ready && !job.completing;
    if (fleetOn(ep)) {
      const idle = [...ep.workers.values()].filter((w) => w.state === "idle");
      for (const job of ep.queued) {
        const worker = idle[0];
        if (worker === undefined) return;
        if (startable(job)) {
          idle.shift();
          startJob(job, worker);
        }
      }
      return;
    }
    const { maxWorkers } = ep.config;
    let free = maxWorkers > 0 ? maxWorkers - ep.running.size : Infinity;
    for (const job of ep.queued) {
      if (free <= 0) return;
      if (startable(job)) {
        startJob(job, null);
        free--;
      }
    }
  }

  function startJob(job: Job, worker: Worker | null): void {
    const { ep } = job;
    const { runMs, progressSteps } = ep.config;
    job.started = Date.now();
    job.state.status = "IN_PROGRESS";
    job.state.startedAt = new Date(job.started).toISOString();
    job.state.delayTime = job.started - job.submitted;
    ep.queued.delete(job);
    ep.running.add(job);
    if (worker === null) {
      note(ep, job.started);
    } else {
      job.worker = worker;
      worker.job = job;
      job.state.workerId = worker.id;
      setWorker(ep, worker, "running", job.started);
    }
    progressSteps.forEach((progress, i) => {
      const at = Math.round((runMs * (i + 1)) / (progressSteps.length + 1));
      schedule(job, at, () => reportProgress(job, progress));
    });
    const { executionTimeout } = job.state.policy;
    if (typeof executionTimeout === "number" && executionTimeout < runMs) {
      schedule(job, executionTimeout, () => finishJob(job, "TIMED_OUT"));
    } else {
      const outcome = job.state.plannedOutcome;
      schedule(job, runMs, () =>
        outcome === "COMPLETED" ? void complete(job) : finishJob(job, outcome),
      );
    }
  }

  /** Awaits onComplete, then ends the job COMPLETED, or FAILED when the hook throws. */
  async function complete(job: Job): Promise<void> {
    if (job.completing) return;
    let error: string | undefined;
    if (onComplete) {
      job.completing = true;
      clearTimers(job);
      try {
        await onComplete({ id: job.state.id, input: job.state.input });
      } catch (thrown) {
        error = `output upload failed: ${errorText(thrown)}`;
      }
      job.completing = false;
      // Cancelled, finished by the admin API, reset or closed meanwhile: nothing more to do.
      if (jobs.get(job.state.id) !== job || !isActive(job.state.status)) return;
      if (shutdown.signal.aborted) return;
    }
    finishJob(job, error === undefined ? "COMPLETED" : "FAILED", error);
  }

  function reportProgress(job: Job, progress: number): void {
    job.state.progress = progress;
    const target = job.state.input.progress_url;
    if (typeof target !== "string") return;
    // Chained so a receiver sees the figures in order.
    job.progressChain = job.progressChain.then(async () => {
      if (job.state.status !== "IN_PROGRESS") return;
      const call: ProgressCall = { url: target, progress, status: null, error: null, at: now() };
      job.state.progressCalls.push(call);
      try {
        // As a handler would: it knows its run's id (`job["id"]`).
        call.status = await post(target, { progress, runpod_job_id: job.state.id });
        // 409 stale_attempt: the pipeline moved past this run's attempt. A handler that follows
        // docs/gpu-worker.md stops rendering; so does this one (RunPod then reports it FAILED).
        if (call.status === 409 && jobs.get(job.state.id) === job && isActive(job.state.status)) {
          log(`job ${job.state.id} stopped: its attempt is stale (progress answered 409)`);
          finishJob(job, "FAILED", "stopped: the attempt is stale (progress answered 409)");
        }
      } catch (error) {
        call.error = errorText(error);
        log(`job ${job.state.id} progress ${progress} to ${target} failed: ${call.error}`);
      }
    });
  }

  /** Ends an active job; the webhook follows (unless dropped) and the result is kept retentionMs. */
  function finishJob(job: Job, status: TerminalOutcome | "CANCELLED", error?: string): void {
    const { state } = job;
    clearTimers(job);
    const finished = Date.now();
    const started = job.started ?? finished;
    state.status = status;
    state.finishedAt = new Date(finished).toISOString();
    state.delayTime = started - job.submitted;
    state.executionTime = finished - started;
    const { ep } = job;
    ep.queued.delete(job);
    ep.running.delete(job);
    releaseWorker(job, finished);
    note(ep, finished);
    if (status === "COMPLETED") {
      const key = state.input.output_video_key;
      state.output = key === undefined ? {} : { output_video_key: key };
    } else if (status === "FAILED") {
      state.error = error ?? "emulated failure";
    } else if (error !== undefined) {
      state.error = error;
    }
    log(`job ${state.id} ${status}`);
    schedule(job, endpoint(state.endpointId).config.retentionMs, () => removeJob(job));
    if (status !== "CANCELLED") deliverWebhook(job);
    dispatch(ep);
  }

  function statusObject(job: Job): StatusObject {
    const { state } = job;
    const object: StatusObject = { id: state.id, status: state.status };
    if (state.delayTime !== null) object.delayTime = state.delayTime;
    if (state.executionTime !== null) object.executionTime = state.executionTime;
    if (state.status === "IN_PROGRESS" && state.progress !== null) {
      object.output = { progress: state.progress };
    }
    if (state.output !== undefined) object.output = state.output;
    if (state.error !== undefined) object.error = state.error;
    return object;
  }

  async function post(target: string, body: unknown): Promise<number> {
    const res = await fetch(target, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      signal: AbortSignal.any([shutdown.signal, AbortSignal.timeout(OUTGOING_TIMEOUT_MS)]),
    });
    await res.arrayBuffer().catch(() => undefined);
    return res.status;
  }

  function deliverWebhook(job: Job): void {
    const target = job.state.webhook;
    if (target === null) return;
    const ep = endpoint(job.state.endpointId);
    const action =
      ep.config.webhookScript.shift() ?? (chance(ep, ep.config.dropWebhookRate) ? "drop" : "send");
    if (action === "drop") {
      job.state.webhookDropped = true;
      log(`job ${job.state.id} webhook dropped`);
      return;
    }
    const attempt = async (n: number): Promise<void> => {
      const delivery: WebhookDelivery = {
        url: target,
        attempt: n,
        status: null,
        error: null,
        at: now(),
      };
      job.state.webhookDeliveries.push(delivery);
      try {
        delivery.status = await post(target, statusObject(job));
      } catch (error) {
        delivery.error = errorText(error);
      }
      log(`job ${job.state.id} webhook attempt ${n}: ${delivery.status ?? delivery.error}`);
      if (delivery.status !== 200 && n < WEBHOOK_ATTEMPTS) {
        schedule(job, ep.config.webhookRetryDelayMs, () => void attempt(n + 1));
      }
    };
    void attempt(1);
  }

  // ---- RunPod routes ----

  function findJob(endpointId: string, id: string | undefined): Job | undefined {
    const job = id === undefined ? undefined : jobs.get(id);
    return job?.state.endpointId === endpointId ? job : undefined;
  }

  function health(ep: Endpoint) {
    const count = (status: JobStatus) => countJobs(ep.id, status);
    const running = ep.running.size;
    const { maxWorkers } = ep.config;
    // Without the autoscaling fleet: maxWorkers ready workers, or one idle when unlimited.
    const workers = fleetOn(ep)
      ? workerCounts(ep)
      : {
          idle: maxWorkers > 0 ? Math.max(0, maxWorkers - running) : running === 0 ? 1 : 0,
          initializing: 0,
          running,
          throttled: 0,
        };
    return {
      jobs: {
        completed: count("COMPLETED"),
        failed: count("FAILED") + count("TIMED_OUT"),
        inProgress: running,
        inQueue: ep.queued.size,
        retried: 0,
      },
      workers: {
        idle: workers.idle,
        initializing: workers.initializing,
        ready: workers.idle,
        running: workers.running,
        throttled: workers.throttled,
        unhealthy: 0,
      },
    };
  }

  function countRun(ep: Endpoint, answer: Reply): Reply {
    ep.runAnswers[answer.status] = (ep.runAnswers[answer.status] ?? 0) + 1;
    return answer;
  }

  /** Takes a runRateLimitPerS token: 0, or else the whole seconds until there is one (>= 1). */
  function takeToken(ep: Endpoint): number {
    const rate = ep.config.runRateLimitPerS;
    if (rate <= 0) return 0;
    const at = Date.now();
    const capacity = Math.max(1, rate);
    const bucket = ep.bucket ?? { tokens: capacity, at };
    bucket.tokens = Math.min(capacity, bucket.tokens + ((at - bucket.at) / 1000) * rate);
    bucket.at = at;
    ep.bucket = bucket;
    if (bucket.tokens < 1) return Math.max(1, Math.ceil((1 - bucket.tokens) / rate));
    bucket.tokens -= 1;
    return 0;
  }

  async function run(ep: Endpoint, endpointId: string, body: unknown): Promise<Reply> {
    const { config } = ep;
    const wait = takeToken(ep);
    if (wait > 0) return reply(429, { error: "rate limited" }, { "retry-after": String(wait) });
    if (!isRecord(body)) return reply(400, { error: "body must be a JSON object" });
    if (!isRecord(body.input)) return reply(400, { error: "input must be a JSON object" });
    if (body.webhook !== undefined && typeof body.webhook !== "string") {
      return reply(400, { error: "webhook must be a string" });
    }
    if (body.policy !== undefined && !isRecord(body.policy)) {
      return reply(400, { error: "policy must be an object" });
    }
    if (config.maxQueue > 0 && ep.queued.size >= config.maxQueue) {
      return reply(429, { error: "queue full" });
    }
    const answer =
      config.runScript.shift() ??
      (chance(ep, config.runErrorRate) ? 500 : chance(ep, config.runRateLimitRate) ? 429 : 200);
    if (answer === 500) return reply(500, { error: "internal error" });
    if (answer === 429) return reply(429, { error: "too many requests" });
    const job = createJob(endpointId, body);
    if (config.runDelayMs > 0) await sleep(config.runDelayMs);
    return reply(200, { id: job.state.id, status: "IN_QUEUE" });
  }

  async function runpodRoute(
    request: RequestRecord,
    parts: string[],
    body: unknown,
  ): Promise<Reply> {
    if (request.authorization !== `Bearer ${apiKey}`) return reply(401, { error: "Unauthorized" });
    const [, endpointId, action, id] = parts;
    if (endpointId === undefined) return reply(404, { error: "not found" });
    const ep = endpoint(endpointId);
    const route = `${request.method} ${[action, id && ":id"].filter(Boolean).join("/")}`;
    if (parts.length > 4) return reply(404, { error: "not found" });

    const { config } = ep;
    const down =
      ["POST run", "GET status/:id", "POST cancel/:id"].includes(route) &&
      (config.outage || Date.now() < config.outageUntilMs);
    if (down) {
      const answer = reply(config.outageStatus, { error: "service unavailable" });
      if (route === "POST run") countRun(ep, answer);
      return answer;
    }
    if (route === "POST run") return countRun(ep, await run(ep, endpointId, body));
    if (route === "GET status/:id") {
      if (chance(ep, ep.config.statusErrorRate)) return reply(500, { error: "internal error" });
      const job = findJob(endpointId, id);
      return job ? reply(200, statusObject(job)) : reply(404, { error: "request does not exist" });
    }
    if (route === "POST cancel/:id") {
      const job = findJob(endpointId, id);
      if (!job) return reply(404, { error: "request does not exist" });
      if (isActive(job.state.status)) finishJob(job, "CANCELLED");
      return reply(200, { id: job.state.id, status: job.state.status });
    }
    if (route === "GET health") return reply(200, health(ep));
    return reply(404, { error: "not found" });
  }

  // ---- admin routes ----

  function reset(endpointId: string | null): void {
    for (const job of [...jobs.values()]) {
      if (endpointId === null || job.state.endpointId === endpointId) removeJob(job);
    }
    requests = endpointId === null ? [] : requests.filter((r) => r.endpointId !== endpointId);
    for (const [id, ep] of endpoints) {
      if (endpointId === null || id === endpointId) {
        teardown(ep);
        endpoints.delete(id);
      }
    }
  }

  async function finishRoute(job: Job | undefined, body: unknown): Promise<Reply> {
    if (!job) return reply(404, { error: "no such job" });
    if (!isRecord(body) || !includes(OUTCOMES, body.status)) {
      return reply(400, { error: `status must be one of ${OUTCOMES.join(", ")}` });
    }
    if (body.error !== undefined && typeof body.error !== "string") {
      return reply(400, { error: "error must be a string" });
    }
    if (!isActive(job.state.status)) {
      return reply(409, { error: `job is already ${job.state.status}` });
    }
    if (job.completing) return reply(409, { error: "job is completing (onComplete)" });
    if (body.status === "COMPLETED") await complete(job);
    else finishJob(job, body.status, body.error);
    return reply(200, job.state);
  }

  async function adminRoute(
    method: string,
    parts: string[],
    query: URLSearchParams,
    body: unknown,
  ): Promise<Reply> {
    const [, section, id, action] = parts;
    const only = query.get("endpoint");
    const route = `${method} ${[section, id && ":id", action].filter(Boolean).join("/")}`;

    if (section === "endpoints" && id !== undefined && action === "config" && parts.length === 4) {
      const ep = endpoint(id);
      if (method === "PUT") {
        try {
          Object.assign(ep.config, parseEndpointConfig(body));
        } catch (error) {
          return reply(400, { error: errorText(error) });
        }
        reconcile(ep); // fleet settings
        dispatch(ep); // maxWorkers may have grown
      }
      return method === "PUT" || method === "GET"
        ? reply(200, ep.config)
        : reply(405, { error: "method not allowed" });
    }
    if (parts.length > 4) return reply(404, { error: "not found" });
    switch (route) {
      case "GET endpoints/:id/stats":
        return reply(200, { run_answers: endpoint(id ?? "").runAnswers });
      case "GET endpoints/:id/fleet":
        return reply(200, fleetReport(endpoint(id ?? "")));
      case "GET requests":
        return reply(200, {
          requests: only === null ? requests : requests.filter((r) => r.endpointId === only),
        });
      case "GET jobs": {
        const list = [...jobs.values()].filter((j) => only === null || j.state.endpointId === only);
        return reply(200, { jobs: list.map((j) => j.state) });
      }
      case "GET jobs/:id": {
        const job = jobs.get(id ?? "");
        return job ? reply(200, job.state) : reply(404, { error: "no such job" });
      }
      case "POST jobs/:id/finish":
        return finishRoute(jobs.get(id ?? ""), body);
      case "POST reset":
        reset(only);
        return reply(200, { ok: true });
      default:
        return reply(404, { error: "not found" });
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // The webhook receivers answer on their own: a hang must see its client leave.
    if (req.url?.startsWith(RECEIVER_PREFIX)) {
      return receivers.handle(req, res, await readBody(req));
    }
    send(res, await route(req));
  }

  async function route(req: IncomingMessage): Promise<Reply> {
    const target = new URL(req.url ?? "/", "http://emulator");
    let parts: string[];
    try {
      parts = target.pathname
        .split("/")
        .filter((p) => p !== "")
        .map(decodeURIComponent);
    } catch {
      throw new HttpError(400, "malformed path");
    }
    const raw = await readBody(req);
    const parsed = parseJson(raw);
    const method = req.method ?? "GET";

    if (parts[0] === "v2") {
      const request: RequestRecord = {
        method,
        path: target.pathname,
        endpointId: parts[1] ?? null,
        authorization: req.headers.authorization ?? null,
        body: parsed.ok ? parsed.value : raw === "" ? null : raw,
        receivedAt: now(),
        responseStatus: null,
      };
      requests.push(request);
      if (requests.length > MAX_REQUESTS_KEPT) requests.shift();
      const answer = await runpodRoute(request, parts, parsed.ok ? parsed.value : undefined);
      request.responseStatus = answer.status;
      return answer;
    }
    if (parts[0] === "__emulator") {
      if (!parsed.ok && raw !== "") return reply(400, { error: "body must be JSON" });
      return adminRoute(method, parts, target.searchParams, parsed.ok ? parsed.value : undefined);
    }
    if (target.pathname === "/health" && method === "GET") return reply(200, { ok: true });
    return reply(404, { error: "not found" });
  }

  return {
    get url() {
      return url;
    },
    listen(port = 0, host = "127.0.0.1") {
      return new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, host, () => {
          server.off("error", reject);
          const actual = (server.address() as AddressInfo).port;
          url = `http://${host.includes(":") ? `[${host}]` : host}:${actual}`;
          resolve({ url, port: actual });
        });
      });
    },
    close() {
      shutdown.abort();
      receivers.close();
      for (const job of jobs.values()) clearTimers(job);
      for (const ep of endpoints.values()) teardown(ep);
      for (const timer of pendingTimers) clearTimeout(timer);
      pendingTimers.clear();
      url = null;
      if (!server.listening) return Promise.resolve();
      return new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
