// What POST /exports and POST /exports/batch share: a request as a scoped token may make it, the
// INPUT_KEY_PREFIX rule, the rate limiter, the idempotency hash, the new job's row, and the
// enqueueing of jobs just inserted. The routes (routes/create-export.ts, routes/create-batch.ts)
// only order these steps and answer.
import { paramsHash, sha256OfJson } from "../shared/identity.ts";
import { recordHolder } from "../shared/job-state.ts";
import { log } from "../shared/log.ts";
import type { CreateExportRequest } from "../shared/schemas.ts";
import { endpointRoutes, inputPrefixOf, tenancySettings } from "../shared/settings.ts";
import type { NewJob } from "../shared/sql/jobs/insert.ts";
import { type Job, type JobRow, toJob } from "../shared/sql/jobs/row.ts";
import { jobDeps } from "./deps.ts";
import type { AppContext } from "./http.ts";
import { dispatcherHolds, withQueue } from "./queue.ts";

/** CREATE_LIMITER's period (wrangler.toml `simple.period`): Retry-After's upper bound. */
export const LIMITER_PERIOD_S = 60;
/** Retry-After of quota_exceeded: a hint; a place frees when one of the key's jobs ends. */
export const QUOTA_RETRY_AFTER_S = 30;

/**
 * The request as the caller may make it: null when a scoped token does not name its project
 * (403). A token's job is its user's (whatever the body said), or no user's when it names none:
 * a browser never picks the fairness key its quota and its share of the GPUs count against.
 */
export function asCaller(c: AppContext, body: CreateExportRequest): CreateExportRequest | null {
  const client = c.get("client");
  if (!client) return body;
  if (!client.projectIds.includes(body.project_id)) return null;
  const { user_id: _given, ...rest } = body;
  return client.userId !== null ? { ...rest, user_id: client.userId } : rest;
}

/** INPUT_KEY_PREFIX: the prefix the request's input key lacks, or null when it is fine. */
export function missingPrefix(c: AppContext, request: CreateExportRequest): string | null {
  const template = tenancySettings(c.env).inputKeyPrefix;
  if (template === null) return null;
  const prefix = inputPrefixOf(template, request.project_id);
  return request.input_video_key.startsWith(prefix) ? null : prefix;
}

/**
 * CREATE_LIMITER (the Workers Rate Limiting binding) for one create of `fairKey`. A Worker without
 * the binding, or a limiter that fails, does not refuse: the quota and fair dispatch still hold.
 */
export async function underRateLimit(c: AppContext, fairKey: string): Promise<boolean> {
  const limiter = c.env.CREATE_LIMITER;
  if (!limiter) return true;
  try {
    return (await limiter.limit({ key: fairKey })).success;
  } catch (error) {
    log("warn", "CREATE_LIMITER failed; the create goes ahead", { error: String(error) });
    return true;
  }
}

/** SHA-256 of the canonical request body: equal bodies hash equally. */
export const requestHash = (request: CreateExportRequest): Promise<string> => sha256OfJson(request);

/** The row to insert for `request`, its input's R2 ETag and its Idempotency-Key, if any. */
export async function newJobOf(
  c: AppContext,
  request: CreateExportRequest,
  inputEtag: string,
  idempotency: { key: string; requestHash: string } | undefined,
): Promise<NewJob> {
  return {
    id: crypto.randomUUID(),
    ...request,
    idempotency,
    input_etag: inputEtag,
    params_hash: await paramsHash(request),
    // Held by its type's first endpoint (RUNPOD_ENDPOINTS; a malformed value fails here, before
    // anything is written).
    endpoint_id: endpointRoutes(c.env)[request.type][0] ?? null,
    max_active: tenancySettings(c.env).maxActivePerUser,
  };
}

/**
 * A job no claim has taken, no consumer has held (due_at set) and the dispatcher does not hold
 * may never have been enqueued (the first request's offer and send both failed, or its answer
 * was lost): an Idempotency-Key repeat enqueues it.
 */
export async function neverSent(c: AppContext, existing: JobRow): Promise<boolean> {
  return (
    existing.status === "pending" &&
    existing.attempt === 0 &&
    existing.due_at !== null &&
    !(await dispatcherHolds(c.env, existing))
  );
}

/**
 * Jobs just inserted (or found never enqueued): the dispatchers hold them from now on (their
 * positions count them), then their messages go, in one sendBatch. The rows are the truth: a send
 * that fails is left to the reconciler, which re-enqueues pending jobs whose message was lost, so
 * the jobs are accepted rather than failing a request whose retry would create them again.
 */
export async function enqueueNew(c: AppContext, rows: readonly JobRow[]): Promise<Job[]> {
  if (rows.length === 0) return [];
  const accepted = new Map<string, string>();
  const jobs = await withQueue(c.env, rows.map(toJob), { created: true, accepted });
  // A type's first endpoint was down and another holds the job (failover): D1 names the holder,
  // so that its batch never offers it to a second dispatcher.
  const answered = await Promise.all(
    jobs.map(async (job, i) => {
      const holder = accepted.get(job.id);
      const row = rows[i];
      if (holder === undefined || !row || holder === row.runpod_endpoint_id) return job;
      const moved = await recordHolder(jobDeps(c), job.id, holder).catch((error: unknown) => {
        log("warn", "recording a new job's holder failed", {
          job_id: job.id,
          error: String(error),
        });
        return null;
      });
      return moved ? { ...toJob(moved), queue: job.queue ?? null } : job;
    }),
  );
  try {
    await c.env.EXPORT_QUEUE.sendBatch(rows.map((row) => ({ body: { job_id: row.id } })));
  } catch (error) {
    log("error", "enqueue failed after insert", {
      job_ids: rows.map((row) => row.id),
      error: String(error),
    });
  }
  return answered;
}
