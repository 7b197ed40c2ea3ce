// The one place that talks to RunPod. It wraps runpod-sdk (asked for by the product owner) and
// gives it what it lacks: an explicit deadline on every call, answers validated with zod, and
// typed errors that say whether trying again can help.
//
// runpod-sdk facts this module relies on (runpod-sdk 1.1.2, xior 0.1.4 underneath):
// - it throws an XiorError for 4xx/5xx (with `response.status`) and an XiorTimeoutError when its
//   client timeout fires; the timeout covers the response headers only, so we add our own deadline;
// - it *returns* `{status, statusText}` for a non-200 2xx answer instead of the body;
// - its timeout can fire after RunPod accepted the run (the run exists, we never learn its id):
//   `timedOut` says so, and the consumer leaves the attempt open so that the run's progress or
//   webhook can still adopt it (see consumer/process-jobs.ts).

import runpodSdk from "runpod-sdk";
import { z } from "zod";
import { type RunpodStatusObject, runpodStatusObject } from "./schemas.ts";
import type { RunpodSettings } from "./settings.ts";

/** What `POST /run` receives (the contract's "What RunPod receives"). */
export interface RunRequest {
  input: {
    export_job_id: string;
    project_id: number;
    type: string;
    input_video_key: string;
    output_video_key: string;
    params: Record<string, unknown>;
    progress_url: string;
  };
  webhook: string;
  policy: { executionTimeout: number; ttl: number; lowPriority?: boolean };
}

export type RunpodErrorKind =
  /** 429, 5xx, timeouts, network errors, malformed answers: another try may work. */
  | "retryable"
  /** 4xx other than 404/429: the request itself is wrong (bad key, bad endpoint, bad body). */
  | "permanent"
  /** 404 on `/status` or `/cancel`: RunPod does not know the run (expired by TTL/retention). */
  | "not_found";

export class RunpodError extends Error {
  override readonly name = "RunpodError";
  readonly kind: RunpodErrorKind;
  readonly httpStatus: number | undefined;
  /** A 429's `Retry-After`, in seconds, when RunPod sent one. */
  readonly retryAfterS: number | null;
  /** The client gave up waiting: RunPod may have accepted the request all the same. */
  readonly timedOut: boolean;
  /**
   * RunPod is down for everyone, not refusing this request: 502/503, or no connection at all.
   * Never set for a timeout or a 504 (RunPod may have accepted: `timedOut`) or an answer that did
   * not parse.
   */
  readonly unavailable: boolean;

  constructor(
    kind: RunpodErrorKind,
    message: string,
    httpStatus?: number,
    extra: { retryAfterS?: number | null; timedOut?: boolean; unreachable?: boolean } = {},
  ) {
    super(message);
    this.kind = kind;
    this.httpStatus = httpStatus;
    this.retryAfterS = extra.retryAfterS ?? null;
    // A 504 is RunPod's gateway giving up on an answer: the request may have been accepted.
    this.timedOut = (extra.timedOut ?? false) || httpStatus === 504;
    this.unavailable = (extra.unreachable ?? false) || httpStatus === 502 || httpStatus === 503;
  }
}

const runAccepted = z.looseObject({ id: z.string().min(1), status: z.string() });

const count = z.number().int().min(0).catch(0);

/**
 * `GET /health`: RunPod documents `jobs` (inQueue, inProgress, …) and `workers` (idle, running);
 * its SDKs add initializing, ready, throttled, and REST v2 unhealthy. A figure RunPod leaves out
 * reads 0; `ready` falls back to `idle`.
 */
const healthAnswer = z
  .looseObject({
    jobs: z.looseObject({ inQueue: count.default(0), inProgress: count.default(0) }),
    workers: z.looseObject({
      idle: count.default(0),
      ready: count.optional(),
      running: count.default(0),
      initializing: count.default(0),
      throttled: count.default(0),
      unhealthy: count.default(0),
    }),
  })
  .transform(({ jobs, workers }) => ({
    ready: workers.ready ?? workers.idle,
    running: workers.running,
    initializing: workers.initializing,
    throttled: workers.throttled,
    unhealthy: workers.unhealthy,
    inQueue: jobs.inQueue,
    inProgress: jobs.inProgress,
  }));

/** The endpoint's fleet and queue, as `/health` tells them. */
export type EndpointHealth = z.output<typeof healthAnswer>;

interface XiorLikeError {
  name?: string;
  message?: string;
  response?: { status?: number; data?: unknown; headers?: { get?(name: string): string | null } };
}

function retryAfterOf(e: XiorLikeError): number | null {
  const value = e.response?.headers?.get?.("retry-after");
  const seconds = value ? Number(value) : Number.NaN;
  return Number.isFinite(seconds) && seconds >= 0 ? seconds : null;
}

function classify(error: unknown, what: string): RunpodError {
  if (error instanceof RunpodError) return error;
  const e = (error ?? {}) as XiorLikeError;
  const status = e.response?.status;
  if (typeof status === "number") {
    const detail =
      typeof e.response?.data === "object" ? JSON.stringify(e.response.data) : e.message;
    const message = `RunPod ${what} answered HTTP ${status}: ${detail ?? ""}`.trim();
    if (status === 404) return new RunpodError("not_found", message, status);
    if (status === 429) {
      return new RunpodError("retryable", message, status, { retryAfterS: retryAfterOf(e) });
    }
    if (status >= 500) {
      return new RunpodError("retryable", message, status, { retryAfterS: retryAfterOf(e) });
    }
    return new RunpodError("permanent", message, status);
  }
  const timedOut = e.name === "XiorTimeoutError";
  const reason = timedOut ? "timed out" : `failed: ${e.message ?? e.name}`;
  return new RunpodError("retryable", `RunPod ${what} ${reason}`, undefined, {
    timedOut,
    unreachable: !timedOut,
  });
}

/** Runs `call` with a hard deadline, so a stalled body read cannot hold a batch forever. */
async function withDeadline<T>(call: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new RunpodError(
            "retryable",
            `RunPod ${what} timed out after ${timeoutMs} ms`,
            undefined,
            {
              timedOut: true,
            },
          ),
        ),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([call, deadline]);
  } catch (error) {
    throw classify(error, what);
  } finally {
    clearTimeout(timer);
  }
}

function parseAnswer<T>(schema: z.ZodType<T>, answer: unknown, what: string): T {
  const parsed = schema.safeParse(answer);
  if (parsed.success) return parsed.data;
  const shown = JSON.stringify(answer)?.slice(0, 200);
  throw new RunpodError("retryable", `RunPod ${what} gave a malformed answer: ${shown}`);
}

export interface RunpodClient {
  /** `POST /run`; resolves with RunPod's job id. */
  submitRun(request: RunRequest): Promise<{ id: string }>;
  /** `GET /status/{id}`; a 404 rejects with kind `not_found`. */
  getStatus(runpodJobId: string): Promise<RunpodStatusObject>;
  /** `POST /cancel/{id}`. */
  cancelRun(runpodJobId: string): Promise<void>;
  /** `GET /health`: workers by state, runs queued and in progress. */
  health(): Promise<EndpointHealth>;
}

export function createRunpodClient(settings: RunpodSettings): RunpodClient {
  const endpoint = runpodSdk(settings.apiKey, { baseUrl: settings.baseUrl }).endpoint(
    settings.endpointId,
  );
  if (!endpoint) throw new Error("RUNPOD_ENDPOINT_ID is not set");
  const timeout = settings.timeoutMs;

  return {
    async submitRun(request) {
      const answer = await withDeadline(endpoint.run(request, timeout), timeout, "/run");
      return parseAnswer(runAccepted, answer, "/run");
    },
    async getStatus(runpodJobId) {
      const answer = await withDeadline(endpoint.status(runpodJobId, timeout), timeout, "/status");
      return parseAnswer(runpodStatusObject, answer, "/status");
    },
    async cancelRun(runpodJobId) {
      await withDeadline(endpoint.cancel(runpodJobId, timeout), timeout, "/cancel");
    },
    async health() {
      const answer = await withDeadline(endpoint.health(timeout), timeout, "/health");
      return parseAnswer(healthAnswer, answer, "/health");
    },
  };
}
