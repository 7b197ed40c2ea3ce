import {
  createExecutionContext,
  createMessageBatch,
  getQueueResult,
  type QueueResult,
} from "cloudflare:test";
import { env } from "cloudflare:workers";
import consumer from "../../consumer/index.ts";
import app from "../../producer/index.ts";
import type { ConsumerEnv, JobMessage } from "../../shared/env.ts";
import type { DispatchConfig } from "../../shared/settings.ts";
import { type SignedUrlKind, signAttempt } from "../../shared/signing.ts";
import type { JobRow } from "../../shared/sql/jobs/row.ts";
import * as repo from "../../shared/sql/jobs/transitions.ts";

export const API_TOKEN = env.API_TOKEN as string;
export const ADMIN_TOKEN = env.ADMIN_TOKEN as string;
export const emulatorOrigin = new URL(env.RUNPOD_BASE_URL).origin;

/** Calls the producer Worker's fetch handler with the real test bindings. */
export type FetchInit = RequestInit & {
  token?: string | null;
  /** Settings that differ from the test defaults for this one request. */
  vars?: Record<string, string>;
  /** Bindings that replace the test bindings for this one request (wrappers of the real ones). */
  bindings?: Partial<Cloudflare.Env>;
};

export function producerFetch(path: string, init: FetchInit = {}): Promise<Response> {
  const { token = API_TOKEN, vars = {}, bindings = {}, ...rest } = init;
  const headers = new Headers(rest.headers);
  if (token !== null) headers.set("authorization", `Bearer ${token}`);
  return Promise.resolve(
    app.fetch(new Request(`https://exports.test${path}`, { ...rest, headers }), {
      ...env,
      ...vars,
      ...bindings,
    }),
  );
}

export function postJson(path: string, body: unknown, init: FetchInit = {}) {
  const headers = new Headers(init.headers);
  if (!headers.has("content-type")) headers.set("content-type", "application/json");
  return producerFetch(path, {
    ...init,
    method: "POST",
    headers,
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

let projectCounter = Math.floor(Math.random() * 1_000_000) * 1000;
/** A project id no other test uses, so counts and listings are per test. */
export function freshProjectId(): number {
  projectCounter += 1;
  return projectCounter;
}

let userCounter = Math.floor(Math.random() * 1_000_000) * 1000 + 500_000_000;
/** A user id no other test uses (fairness keys, quotas and listings per test). */
export function freshUserId(): number {
  userCounter += 1;
  return userCounter;
}

export async function putInput(key: string): Promise<void> {
  await env.VIDEOS.put(key, new Uint8Array([0, 0, 0, 24, 102, 116, 121, 112]), {
    httpMetadata: { contentType: "video/mp4" },
  });
}

export function overlayRequest(projectId: number, key: string) {
  return {
    project_id: projectId,
    type: "overlay",
    input_video_key: key,
    params: { highlight_regions: [{ start_time: 1, end_time: 2.5, color: "#ff0" }] },
  };
}

export async function countJobs(projectId: number): Promise<number> {
  const row = await env.DB.prepare("SELECT COUNT(*) AS n FROM export_jobs WHERE project_id = ?")
    .bind(projectId)
    .first<{ n: number }>();
  return row?.n ?? 0;
}

export function readJob(id: string): Promise<JobRow | null> {
  return env.DB.prepare("SELECT * FROM export_jobs WHERE id = ?").bind(id).first<JobRow>();
}

/** Inserts a pending job straight into D1 (as the producer would) and returns it. */
export async function insertPendingJob(projectId = freshProjectId()): Promise<JobRow> {
  const id = crypto.randomUUID();
  const row = await env.DB.prepare(
    `INSERT INTO export_jobs (id, project_id, type, input_video_key, params, due_at)
     VALUES (?, ?, 'overlay', ?, ?, datetime('now')) RETURNING *`,
  )
    .bind(
      id,
      projectId,
      `uploads/${projectId}/in.mp4`,
      JSON.stringify({ highlight_regions: [{ start_time: 0, end_time: 1 }] }),
    )
    .first<JobRow>();
  if (!row) throw new Error("insert failed");
  return row;
}

/** Polls `check` until it returns a value other than undefined (no timing assertions). */
export async function waitFor<T>(check: () => Promise<T | undefined>, what: string): Promise<T> {
  for (let i = 0; i < 400; i++) {
    const value = await check();
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Messages the queue spy received for `jobId` (see vitest.config.ts). */
export async function sentMessagesFor(jobId: string): Promise<unknown[]> {
  await env.DB.prepare(
    "CREATE TABLE IF NOT EXISTS test_sent_messages (message_id TEXT PRIMARY KEY, body TEXT NOT NULL, received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f','now')))",
  ).run();
  const { results } = await env.DB.prepare(
    "SELECT body FROM test_sent_messages WHERE json_extract(body, '$.job_id') = ?",
  )
    .bind(jobId)
    .all<{ body: string }>();
  return results.map((r) => JSON.parse(r.body) as unknown);
}

/** Waits until the queue spy has received a message for `jobId`. */
export const messageArrives = (jobId: string) =>
  waitFor(async () => ((await sentMessagesFor(jobId)).length > 0 ? true : undefined), "message");

/** Messages the queue spy received whose body mentions `needle` anywhere. */
export async function sentMessagesMentioning(needle: string): Promise<number> {
  await sentMessagesFor("");
  const row = await env.DB.prepare(
    "SELECT COUNT(*) AS n FROM test_sent_messages WHERE instr(body, ?) > 0",
  )
    .bind(needle)
    .first<{ n: number }>();
  return row?.n ?? 0;
}

/**
 * A message for deliver(): a job id (the body `{ job_id }` the producer sends), or any body, with
 * its id, attempts and timestamp when the test cares (otherwise a fresh id, the `attempts` option
 * and now).
 */
export type Delivery =
  | string
  | { body: unknown; id?: string; attempts?: number; timestamp?: Date | number };

export interface DeliverOptions {
  /** The queue the batch comes from: "export-jobs" (the default) or "export-jobs-dlq". */
  queue?: string;
  /** The bindings queue() runs with; the test bindings by default. */
  env?: ConsumerEnv;
  /** Deliveries so far of the messages that name none (1 by default). */
  attempts?: number;
}

let delivered = 0;
/**
 * Runs the consumer Worker's queue() on one batch, as Queues would deliver it, and returns what it
 * acked and retried. @cloudflare/vitest-plugin 1.5.0's getQueueResult() drops the `delaySeconds`
 * of retry() and retryAll(), so the batch and each message forward those calls and note the
 * delay, which the result then carries where QueueResult declares it.
 */
export async function deliver(
  messages: readonly Delivery[],
  options: DeliverOptions = {},
): Promise<QueueResult> {
  const { queue = "export-jobs", env: testEnv = env, attempts = 1 } = options;
  const batch = createMessageBatch<unknown>(
    queue,
    messages.map((message) => {
      const { body, ...given } =
        typeof message === "string" ? { body: { job_id: message } } : message;
      delivered += 1;
      return {
        id: given.id ?? `delivered-${delivered}-${crypto.randomUUID()}`,
        timestamp: given.timestamp ?? new Date(),
        attempts: given.attempts ?? attempts,
        body,
      };
    }),
  );
  const delays = new Map<string, number | undefined>();
  let retryAllDelay: number | undefined;
  const spied = batch.messages.map((real) => ({
    get id() {
      return real.id;
    },
    get body() {
      return real.body;
    },
    get attempts() {
      return real.attempts;
    },
    get timestamp() {
      return real.timestamp;
    },
    ack: () => real.ack(),
    retry: (retryOptions?: QueueRetryOptions) => {
      delays.set(real.id, retryOptions?.delaySeconds);
      real.retry(retryOptions);
    },
  }));
  const wrapped: MessageBatch<unknown> = {
    queue: batch.queue,
    get metadata() {
      return batch.metadata;
    },
    messages: spied,
    ackAll: () => batch.ackAll(),
    retryAll: (retryOptions?: QueueRetryOptions) => {
      retryAllDelay = retryOptions?.delaySeconds;
      batch.retryAll(retryOptions);
    },
  };
  const ctx = createExecutionContext();
  await consumer.queue(wrapped, testEnv);
  const result = await getQueueResult(batch, ctx);
  return {
    ...result,
    retryBatch: { ...result.retryBatch, delaySeconds: retryAllDelay },
    retryMessages: result.retryMessages.map((r) => ({ ...r, delaySeconds: delays.get(r.msgId) })),
  };
}

// ---- the RunPod emulator's admin API ----

export async function configureEndpoint(endpoint: string, config: Record<string, unknown>) {
  const res = await fetch(`${emulatorOrigin}/__emulator/endpoints/${endpoint}/config`, {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(config),
  });
  if (!res.ok) throw new Error(`emulator config: ${res.status} ${await res.text()}`);
}

/** A run submitted straight to the emulator's `/run` (as if an earlier attempt had): its id. */
export async function submitEmulatorRun(
  endpoint: string,
  input: Record<string, unknown> = {},
): Promise<string> {
  const res = await fetch(`${env.RUNPOD_BASE_URL}/${endpoint}/run`, {
    method: "POST",
    headers: { authorization: `Bearer ${env.RUNPOD_API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ input }),
  });
  if (!res.ok) throw new Error(`emulator /run: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { id: string }).id;
}

/**
 * A fresh endpoint with an autoscaling fleet (`min` to `max` workers, a 0.1 s queue delay before
 * the autoscaler adds one, 0.1 s cold starts) whose runs last `runMs`.
 */
export async function autoscalingEndpoint(
  name: string,
  options: { min?: number; max: number; runMs?: number },
): Promise<string> {
  const endpoint = uniqueEndpoint(name);
  await configureEndpoint(endpoint, {
    workersMax: options.max,
    workersMin: options.min ?? 0,
    scalerType: "QUEUE_DELAY",
    scalerValue: 0.1,
    scalerIntervalMs: 100,
    coldStartMs: 100,
    idleTimeoutMs: 60_000,
    queueMs: 0,
    runMs: options.runMs ?? 600_000,
  });
  return endpoint;
}

export interface EmulatorRequest {
  method: string;
  path: string;
  endpointId: string;
  authorization: string | null;
  body: unknown;
  responseStatus: number;
}

export async function emulatorRequests(endpoint: string): Promise<EmulatorRequest[]> {
  const res = await fetch(`${emulatorOrigin}/__emulator/requests?endpoint=${endpoint}`);
  return ((await res.json()) as { requests: EmulatorRequest[] }).requests;
}

export function runCalls(requests: EmulatorRequest[]): EmulatorRequest[] {
  return requests.filter((r) => r.method === "POST" && r.path.endsWith("/run"));
}

export function uniqueEndpoint(name: string): string {
  return `${name}-${crypto.randomUUID().slice(0, 8)}`;
}

/** A job claimed for its current attempt (and, with `runId`, with that run recorded). */
export async function processingJob(
  options: { retryCount?: number; runId?: string | null } = {},
): Promise<JobRow> {
  const job = await insertPendingJob();
  if (options.retryCount) {
    await env.DB.prepare("UPDATE export_jobs SET retry_count = ? WHERE id = ?")
      .bind(options.retryCount, job.id)
      .run();
  }
  const [claimed] = await repo.claimJobs(env.DB, [job.id], 120);
  if (!claimed) throw new Error("claim failed");
  if (options.runId === null) return claimed;
  const recorded = await repo.recordRun(
    env.DB,
    job.id,
    claimed.attempt,
    options.runId ?? `run-${crypto.randomUUID()}`,
    300,
  );
  if (!recorded) throw new Error("record failed");
  return recorded;
}

/** The signed webhook or progress path of one attempt, as the consumer hands it to RunPod. */
export async function callbackPath(
  kind: SignedUrlKind,
  jobId: string,
  attempt: number,
): Promise<string> {
  return `/runpod/${kind}/${jobId}?attempt=${attempt}&sig=${await signAttempt(env.WEBHOOK_SECRET as string, kind, jobId, attempt)}`;
}

/** Where the GPU worker writes a job's result (shared/job-state.ts's plannedOutputKey). */
export function plannedKey(job: Pick<JobRow, "id" | "project_id">): string {
  return `exports/${job.project_id}/${job.id}.mp4`;
}

/**
 * Puts a job's output into R2, as the GPU worker would before RunPod reports COMPLETED: a run
 * counts as completed only when its output object exists. Returns the key.
 */
export async function putOutput(
  job: Pick<JobRow, "id" | "project_id">,
  key = plannedKey(job),
  body: Uint8Array | string = new Uint8Array([0, 0, 0, 24, 102, 116, 121, 112]),
): Promise<string> {
  await env.VIDEOS.put(key, body, { httpMetadata: { contentType: "video/mp4" } });
  return key;
}

/** A dispatcher's configuration: the contract's defaults (a fixed cap), with `overrides`. */
export function dispatchConfig(overrides: Partial<DispatchConfig> = {}): DispatchConfig {
  return {
    runsPer10s: 900,
    breakerThreshold: 5,
    breakerCooldownS: 30,
    breakerWindow: 20,
    breakerFailureRate: 0.5,
    breakerProbes: 3,
    maxInFlight: 20,
    maxWorkers: null,
    fleetPollS: 5,
    scaler: { kind: "queue_delay" },
    laneWeights: [8, 4, 1],
    ...overrides,
  };
}

/** What D1 throws when the connection drops: the statement may or may not have committed. */
export const CONNECTION_LOST = "D1_ERROR: Network connection lost.";

/**
 * The real D1 binding, except that the statements `lose` picks run (and commit) and then throw
 * CONNECTION_LOST instead of answering, `times` times in all: "committed, but the answer was
 * lost", as Cloudflare documents it can happen. `lost()` tells how many answers were lost.
 */
export function answersLost(
  db: D1Database,
  lose: (sql: string) => boolean,
  times = 1,
): D1Database & { lost(): number } {
  let left = times;
  let lost = 0;
  // The real statement behind each lossy one: a batch runs the real ones.
  const real = new WeakMap<D1PreparedStatement, D1PreparedStatement>();
  const lossy = (statement: D1PreparedStatement): D1PreparedStatement => {
    const proxy = new Proxy(statement, {
      get(target, prop) {
        if (prop === "bind") {
          return (...values: unknown[]) => lossy(target.bind(...values));
        }
        if (prop === "first" || prop === "all" || prop === "run" || prop === "raw") {
          const method = Reflect.get(target, prop) as (...args: unknown[]) => Promise<unknown>;
          return async (...args: unknown[]) => {
            const answer = await method.apply(target, args);
            if (left > 0) {
              left -= 1;
              lost += 1;
              throw new Error(CONNECTION_LOST);
            }
            return answer;
          };
        }
        const value = Reflect.get(target, prop);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    real.set(proxy, statement);
    return proxy;
  };
  // A batch with a lossy statement commits, then loses its answer.
  const lossyBatch =
    (batch: (statements: D1PreparedStatement[]) => Promise<D1Result[]>) =>
    async (statements: D1PreparedStatement[]) => {
      const answer = await batch(statements.map((st) => real.get(st) ?? st));
      if (left > 0 && statements.some((st) => real.has(st))) {
        left -= 1;
        lost += 1;
        throw new Error(CONNECTION_LOST);
      }
      return answer;
    };
  return new Proxy(db, {
    get(target, prop) {
      if (prop === "batch") return lossyBatch((statements) => target.batch(statements));
      if (prop === "prepare") {
        return (sql: string) => {
          const statement = target.prepare(sql);
          return lose(sql) ? lossy(statement) : statement;
        };
      }
      if (prop === "withSession") {
        // A session (producer/d1-session.ts) of the same lossy database.
        return (constraint?: string) => {
          const session = target.withSession(constraint);
          return {
            prepare: (sql: string) => {
              const statement = session.prepare(sql);
              return lose(sql) ? lossy(statement) : statement;
            },
            batch: lossyBatch((statements) => session.batch(statements)),
            getBookmark: () => session.getBookmark(),
          };
        };
      }
      if (prop === "lost") return () => lost;
      const value = Reflect.get(target, prop);
      return typeof value === "function" ? value.bind(target) : value;
    },
  }) as D1Database & { lost(): number };
}

/** The real queue, noting each send and its delay (delayed messages do not arrive in a test). */
export function spyQueue() {
  const sent: { jobIds: string[]; delaySeconds: number | undefined }[] = [];
  const real = env.EXPORT_QUEUE;
  const queue: Queue<JobMessage> = {
    metrics: () => real.metrics(),
    send(body, options) {
      sent.push({ jobIds: [body.job_id], delaySeconds: options?.delaySeconds });
      return real.send(body, options);
    },
    sendBatch(messages, options) {
      const list = [...messages];
      sent.push({ jobIds: list.map((m) => m.body.job_id), delaySeconds: options?.delaySeconds });
      return real.sendBatch(list, options);
    },
  };
  return {
    queue,
    sent,
    sendsOf: (jobId: string) =>
      sent.filter((s) => s.jobIds.includes(jobId)).map((s) => s.delaySeconds),
  };
}
