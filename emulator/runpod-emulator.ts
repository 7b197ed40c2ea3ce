// An HTTP emulator of RunPod's serverless queue API (/run, /status, /cancel, /health) with
// per-endpoint timings and fault injection, plus an admin API under /__emulator for tests.
// Node built-ins only; see emulator/README.md for the routes and settings.

import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { clearTimeout, setTimeout } from "node:timers";

// ---- types ----

export type TerminalOutcome = "COMPLETED" | "FAILED" | "TIMED_OUT";
export type JobStatus = "IN_QUEUE" | "IN_PROGRESS" | "CANCELLED" | TerminalOutcome;
export type RunAnswer = 200 | 429 | 500;
export type WebhookAction = "send" | "drop";

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
  /** Jobs IN_PROGRESS at once (the others wait IN_QUEUE, first in first out); 0 = unlimited. */
  maxWorkers: number;
  /** Jobs IN_QUEUE at most: a /run beyond answers 429; 0 = unlimited. */
  maxQueue: number;
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
};

const MS_KEYS = [
  "queueMs",
  "runMs",
  "webhookRetryDelayMs",
  "retentionMs",
  "runDelayMs",
  "outageUntilMs",
] as const;
const COUNT_KEYS = ["maxWorkers", "maxQueue"] as const;
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
  config: EndpointConfig;
  random: () => number;
  /** Answers of POST /run by status. */
  runAnswers: Record<string, number>;
  /** The runRateLimitPerS bucket; null = full. */
  bucket: { tokens: number; at: number } | null;
}

interface Job {
  state: JobState;
  submitted: number;
  started: number | null;
  /** queueMs is over: the job starts as soon as a worker is free. */
  ready: boolean;
  /** onComplete is running. */
  completing: boolean;
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
      found = {
        config: copyConfig(defaults),
        random: prng(seed ^ hash(id)),
        runAnswers: { 200: 0, 429: 0, 500: 0, 503: 0 },
        bucket: null,
      };
      endpoints.set(id, found);
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
      submitted,
      started: null,
      ready: false,
      completing: false,
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
        submittedAt: new Date(submitted).toISOString(),
        startedAt: null,
        finishedAt: null,
        webhookDropped: false,
        webhookDeliveries: [],
        progressCalls: [],
      },
    };
    jobs.set(job.state.id, job);
    log(`job ${job.state.id} (${endpointId}) IN_QUEUE, planned ${outcome}`);

    // A timer may fire a millisecond before Date.now() says queueMs passed: wait out the rest, so
    // delayTime is never below queueMs.
    const queued = () => {
      const left = job.submitted + config.queueMs - Date.now();
      if (left > 0) return schedule(job, left, queued);
      job.ready = true;
      dispatch(endpointId);
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
    return job;
  }

  const countJobs = (endpointId: string, status: JobStatus) =>
    [...jobs.values()].filter((j) => j.state.endpointId === endpointId && j.state.status === status)
      .length;

  /** Starts the endpoint's ready queued jobs, in submission order, while a worker is free. */
  function dispatch(endpointId: string): void {
    const { maxWorkers } = endpoint(endpointId).config;
    let free = maxWorkers > 0 ? maxWorkers - countJobs(endpointId, "IN_PROGRESS") : Infinity;
    for (const job of jobs.values()) {
      if (free <= 0) return;
      if (
        job.state.endpointId === endpointId &&
        job.state.status === "IN_QUEUE" &&
        job.ready &&
        !job.completing
      ) {
        startJob(job);
        free--;
      }
    }
  }

  function startJob(job: Job): void {
    const { runMs, progressSteps } = endpoint(job.state.endpointId).config;
    job.started = Date.now();
    job.state.status = "IN_PROGRESS";
    job.state.startedAt = new Date(job.started).toISOString();
    job.state.delayTime = job.started - job.submitted;
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
    dispatch(state.endpointId);
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

  function health(endpointId: string) {
    const count = (status: JobStatus) => countJobs(endpointId, status);
    const running = count("IN_PROGRESS");
    const { maxWorkers } = endpoint(endpointId).config;
    const idle = maxWorkers > 0 ? Math.max(0, maxWorkers - running) : running === 0 ? 1 : 0;
    return {
      jobs: {
        completed: count("COMPLETED"),
        failed: count("FAILED") + count("TIMED_OUT"),
        inProgress: running,
        inQueue: count("IN_QUEUE"),
        retried: 0,
      },
      workers: { idle, initializing: 0, ready: idle, running, throttled: 0 },
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
    if (config.maxQueue > 0 && countJobs(endpointId, "IN_QUEUE") >= config.maxQueue) {
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
    if (route === "GET health") return reply(200, health(endpointId));
    return reply(404, { error: "not found" });
  }

  // ---- admin routes ----

  function reset(endpointId: string | null): void {
    for (const job of [...jobs.values()]) {
      if (endpointId === null || job.state.endpointId === endpointId) removeJob(job);
    }
    requests = endpointId === null ? [] : requests.filter((r) => r.endpointId !== endpointId);
    if (endpointId === null) endpoints.clear();
    else endpoints.delete(endpointId);
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
        dispatch(id); // maxWorkers may have grown
      }
      return method === "PUT" || method === "GET"
        ? reply(200, ep.config)
        : reply(405, { error: "method not allowed" });
    }
    if (parts.length > 4) return reply(404, { error: "not found" });
    switch (route) {
      case "GET endpoints/:id/stats":
        return reply(200, { run_answers: endpoint(id ?? "").runAnswers });
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
      for (const job of jobs.values()) clearTimers(job);
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
