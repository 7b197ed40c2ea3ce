// An `export_jobs` row, the job the API answers with, and how the statements of this folder hand
// rows back. The statements themselves, one module per concern:
//
//   insert.ts       a new job
//   reads.ts        one job by id or Idempotency-Key; the dispatcher's checks of a batch
//   listings.ts     the paged listings (GET /exports, the dashboard, live status)
//   transitions.ts  the guarded state changes that shared/job-state.ts makes
//   leases.ts       bookkeeping: the reconciler's leases, the dispatcher's holds, cancel retries
//   archive.ts      retention: what is archivable, and the archived batch's guard
//   due.ts          what `due_at` means, and the only way the statements set or test it
//   catalog.ts      every statement by name, for the query-plan test and the bench
//
// Reads and the guarded statements are retried on transient D1 errors (shared/d1-retry.ts):
// running one of them twice is safe.

import { retryTransient, retryTransientOutcome } from "../../d1-retry.ts";
import { log } from "../../log.ts";
import type { Lane, QueueInfo } from "../../queue-estimate.ts";
import type { JobType } from "../../schemas.ts";

export type JobStatus = "pending" | "processing" | "complete" | "error";

/** An `export_jobs` row as D1 stores it. */
export interface JobRow {
  id: string;
  project_id: number;
  type: JobType;
  status: JobStatus;
  progress: number;
  input_video_key: string;
  output_video_key: string | null;
  params: string;
  error: string | null;
  retry_count: number;
  runpod_job_id: string | null;
  created_at: string;
  started_at: string | null;
  completed_at: string | null;
  /** When the job next needs attention; what that is depends on the status (due.ts). */
  due_at: string | null;
  idempotency_key: string | null;
  /** SHA-256 of the canonical request body; internal, never returned by the API. */
  request_hash: string | null;
  attempt: number;
  version: number;
  pending_since: string | null;
  last_event: string | null;
  user_id: number | null;
  /** When the job reached complete or error (migration 0007); internal, never returned. */
  finished_at: string | null;
  /**
   * The claim that made the current attempt (migration 0008): a claim whose answer D1 lost reads
   * its jobs back by it. Internal, never returned.
   */
  claim_token: string | null;
  /**
   * RunPod's executionTime / delayTime of the job's runs, failed ones included, as known when
   * each run's news changed the job (migration 0010): what the job cost in GPU time.
   */
  gpu_ms: number;
  queue_ms: number;
  /** The input object's R2 ETag when the job was created (migration 0011; null before). */
  input_etag: string | null;
  /**
   * SHA-256 of the canonical {type, input_video_key, params} (shared/identity.ts): with the
   * project and input_etag, what makes jobs identical. Internal, never returned.
   */
  params_hash: string | null;
  /** 0: the request said `"reuse": false`. */
  reuse: number;
  supersede_key: string | null;
  /** The identical job this one waits for (single flight). */
  follows: string | null;
  /** How many jobs were created following this one. Internal, never returned. */
  followers: number;
  /** The complete job whose output was copied to this job's key. */
  reused_from: string | null;
  /** The job's lane (migration 0012). */
  priority: Lane;
  /**
   * The RunPod endpoint of the current attempt (set by the claim) or, while the job waits, of the
   * dispatcher holding it (migration 0013); null: RUNPOD_ENDPOINT_ID.
   */
  runpod_endpoint_id: string | null;
}

/**
 * A job as the API returns it: the row with `params` parsed back to an object. `archived` is there
 * (true) only when the job is answered from its archive in R2 (shared/archive.ts).
 */
export type Job = Omit<
  JobRow,
  | "params"
  | "request_hash"
  | "pending_since"
  | "last_event"
  | "finished_at"
  | "claim_token"
  | "params_hash"
  | "followers"
  | "reuse"
> & {
  params: Record<string, unknown>;
  reuse: boolean;
  archived?: true;
  /**
   * Not part of the row (it never raises `version`): a pending job's queue position and ETA, in
   * the API's answers (null once the job runs or ended); live `job` messages leave it out.
   */
  queue?: QueueInfo | null;
};

export function toJob(row: JobRow): Job {
  const {
    request_hash: _hash,
    pending_since: _since,
    last_event: _event,
    finished_at: _finished,
    claim_token: _claim,
    params_hash: _hash2,
    followers: _followers,
    ...rest
  } = row;
  return {
    ...rest,
    params: JSON.parse(row.params) as Record<string, unknown>,
    reuse: row.reuse !== 0,
  };
}

/** The `error` of a job a user cancelled (or whose run RunPod reported CANCELLED). */
export const CANCELLED = "cancelled";

/** The `error` of a job a newer one superseded: `superseded by <new id>`. */
export const SUPERSEDED_BY = "superseded by ";

/**
 * WHERE: the job was ended by a request (a user's cancel, or a newer job's supersede): never
 * replayed or retried, and its run is cancelled at RunPod (again, until RunPod confirms).
 */
export const endedByRequest = (error = "error") =>
  `(${error} = '${CANCELLED}' OR substr(${error}, 1, ${SUPERSEDED_BY.length}) = '${SUPERSEDED_BY}')`;
/** WHERE: the opposite of endedByRequest, also for a NULL error. */
export const notEndedByRequest = (error = "error") =>
  `(${error} IS NULL OR NOT ${endedByRequest(error)})`;

/** Runs `sql` (retried on transient errors) and hands back its first row, or null. */
export const firstRow = (db: D1Database, sql: string, ...binds: unknown[]) =>
  retryTransient(() =>
    db
      .prepare(sql)
      .bind(...binds)
      .first<JobRow>(),
  );

/** Runs `sql` (retried on transient errors) and hands back every row. */
export const allRows = async (db: D1Database, sql: string, ...binds: unknown[]) =>
  (
    await retryTransient(() =>
      db
        .prepare(sql)
        .bind(...binds)
        .all<JobRow>(),
    )
  ).results;

/**
 * How to tell, after an answer D1 lost, whether a guarded statement had committed: the job it
 * changes, and whether that job as it is now shows this statement's change (the state it leads
 * to, for the same attempt and run). Another writer that made the same change (a duplicate
 * delivery) counts as this one: what follows a change — freeing a slot, publishing, re-enqueuing
 * — is safe to do twice.
 */
export interface ReadBack {
  id: string;
  shows(row: JobRow): boolean;
}

const BY_ID = "SELECT * FROM export_jobs WHERE id = ?";

/**
 * A guarded single-row statement, retried on transient errors. When a failed try may have
 * committed and the statement then matched no row, the job is read back (one primary-key read,
 * only then): if it shows the change, that row is the answer, as if the first answer had come.
 */
export async function guardedRow(
  db: D1Database,
  readBack: ReadBack,
  sql: string,
  ...binds: unknown[]
): Promise<JobRow | null> {
  const { value, ambiguous } = await retryTransientOutcome(() =>
    db
      .prepare(sql)
      .bind(...binds)
      .first<JobRow>(),
  );
  if (value || !ambiguous) return value;
  const now = await firstRow(db, BY_ID, readBack.id);
  if (!now || !readBack.shows(now)) return null;
  log("warn", "a write whose answer was lost had committed", {
    job_id: now.id,
    attempt: now.attempt,
    status: now.status,
  });
  return now;
}

/**
 * A guarded many-row statement, retried on transient errors; after a try that may have committed,
 * `readBack` (a read of the rows that statement marks) adds the rows its lost answer held.
 */
export async function guardedRows(
  db: D1Database,
  readBack: () => Promise<JobRow[]>,
  sql: string,
  ...binds: unknown[]
): Promise<JobRow[]> {
  const { value, ambiguous } = await retryTransientOutcome(() =>
    db
      .prepare(sql)
      .bind(...binds)
      .all<JobRow>(),
  );
  if (!ambiguous) return value.results;
  const rows = new Map(value.results.map((row) => [row.id, row]));
  const earlier = (await readBack()).filter((row) => !rows.has(row.id));
  if (earlier.length > 0) {
    log("warn", "a write whose answer was lost had committed", {
      jobs: earlier.map((row) => row.id),
    });
  }
  for (const row of earlier) rows.set(row.id, row);
  return [...rows.values()];
}
