// Every SQL statement of reel-exports lives in this module. Each UPDATE is one guarded statement:
// it names the state it expects (`status`, the attempt as `retry_count`, the run) and RETURNING
// tells the caller whether the transition happened. A statement that matches no row means
// "someone else got there first" (a duplicate delivery, a late webhook), never an error.
// The state machine that decides which of these to call is shared/job-state.ts. Reads, the claim
// and the guarded transitions are retried on transient D1 errors (shared/d1-retry.ts): running one
// of them twice is safe.

import { retryTransient } from "./d1-retry.ts";
import type { JobType } from "./schemas.ts";

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
  due_at: string | null;
  idempotency_key: string | null;
  /** SHA-256 of the canonical request body; internal, never returned by the API. */
  request_hash: string | null;
}

/** A job as the API returns it: the row with `params` parsed back to an object. */
export type Job = Omit<JobRow, "params" | "request_hash"> & { params: Record<string, unknown> };

export function toJob(row: JobRow): Job {
  const { request_hash: _internal, ...rest } = row;
  return { ...rest, params: JSON.parse(row.params) as Record<string, unknown> };
}

// Timestamps are UTC text with milliseconds ("2026-11-24 10:30:00.123"): they sort as text,
// compare with the seed's datetime('now') values, and keep "newest first" exact within a second.
const NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')";
const nowPlus = (param: string) => `strftime('%Y-%m-%d %H:%M:%f', 'now', ${param})`;
const seconds = (n: number) => `${n >= 0 ? "+" : ""}${Math.round(n)} seconds`;

/** D1 binds at most 100 parameters per statement. */
const MAX_IDS_PER_STATEMENT = 90;

export interface NewJob {
  id: string;
  project_id: number;
  type: JobType;
  input_video_key: string;
  params: Record<string, unknown>;
  idempotency?: { key: string; requestHash: string } | undefined;
}

/**
 * The seed's "create job", with `pending` and due now. Null when the project already has a job
 * under the same Idempotency-Key (the unique index decides, also for two racing requests).
 */
export function insertJob(db: D1Database, job: NewJob): Promise<JobRow | null> {
  return db
    .prepare(
      `INSERT INTO export_jobs (id, project_id, type, input_video_key, params, idempotency_key,
                                request_hash, created_at, due_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ${NOW}, ${NOW})
       ON CONFLICT DO NOTHING
       RETURNING *`,
    )
    .bind(
      job.id,
      job.project_id,
      job.type,
      job.input_video_key,
      JSON.stringify(job.params),
      job.idempotency?.key ?? null,
      job.idempotency?.requestHash ?? null,
    )
    .first<JobRow>();
}

export function findJobByIdempotencyKey(
  db: D1Database,
  projectId: number,
  key: string,
): Promise<JobRow | null> {
  return db
    .prepare("SELECT * FROM export_jobs WHERE project_id = ? AND idempotency_key = ?")
    .bind(projectId, key)
    .first<JobRow>();
}

export function getJob(db: D1Database, id: string): Promise<JobRow | null> {
  return retryTransient(() =>
    db.prepare("SELECT * FROM export_jobs WHERE id = ?").bind(id).first<JobRow>(),
  );
}

export interface ListCursor {
  created_at: string;
  id: string;
}

export interface ListJobsQuery {
  /** Null: every project (operators). */
  projectIds: number[] | null;
  /** Null: every status. */
  statuses: JobStatus[] | null;
  limit: number;
  after: ListCursor | null;
}

/**
 * The seed's "active jobs for project" and "recent jobs" queries, generalised to several projects
 * and statuses, newest first, keyset-paged on (created_at, id). Returns up to `limit + 1` rows so
 * the caller knows whether there is a next page.
 */
export async function listJobs(db: D1Database, query: ListJobsQuery): Promise<JobRow[]> {
  const where = ["1 = 1"];
  const binds: (string | number)[] = [];
  if (query.projectIds) {
    where.push(`project_id IN (${query.projectIds.map(() => "?").join(", ")})`);
    binds.push(...query.projectIds);
  }
  if (query.statuses) {
    where.push(`status IN (${query.statuses.map(() => "?").join(", ")})`);
    binds.push(...query.statuses);
  }
  if (query.after) {
    where.push("(created_at < ? OR (created_at = ? AND id < ?))");
    binds.push(query.after.created_at, query.after.created_at, query.after.id);
  }
  const { results } = await retryTransient(() =>
    db
      .prepare(
        `SELECT * FROM export_jobs WHERE ${where.join(" AND ")}
         ORDER BY created_at DESC, id DESC LIMIT ?`,
      )
      .bind(...binds, query.limit + 1)
      .all<JobRow>(),
  );
  return results;
}

// ---------------------------------------------------------------------------------------------
// Transitions. Only shared/job-state.ts and the handlers' thin calls use these.
// ---------------------------------------------------------------------------------------------

/**
 * claim: pending → processing, for every id of a batch in one statement. A job that is not
 * `pending` (already claimed by another delivery, cancelled, finished) is simply not returned.
 * The claimed job's attempt number is its `retry_count`.
 */
export async function claimJobs(
  db: D1Database,
  ids: readonly string[],
  claimTimeoutS: number,
): Promise<JobRow[]> {
  const claimed: JobRow[] = [];
  for (let i = 0; i < ids.length; i += MAX_IDS_PER_STATEMENT) {
    const chunk = ids.slice(i, i + MAX_IDS_PER_STATEMENT);
    const { results } = await retryTransient(() =>
      db
        .prepare(
          `UPDATE export_jobs
           SET status = 'processing', started_at = ${NOW}, progress = 0, runpod_job_id = NULL,
               due_at = ${nowPlus("?")}
           WHERE id IN (${chunk.map(() => "?").join(", ")}) AND status = 'pending'
           RETURNING *`,
        )
        .bind(seconds(claimTimeoutS), ...chunk)
        .all<JobRow>(),
    );
    claimed.push(...results);
  }
  return claimed;
}

/**
 * recordRun: remember RunPod's id for the attempt that was claimed. Matches nothing when the job
 * moved on meanwhile (cancelled, or a fast webhook already finished it), so it never undoes that.
 */
export function recordRun(
  db: D1Database,
  id: string,
  attempt: number,
  runpodJobId: string,
  pollAfterS: number,
): Promise<JobRow | null> {
  return retryTransient(() =>
    db
      .prepare(
        `UPDATE export_jobs SET runpod_job_id = ?, due_at = ${nowPlus("?")}
         WHERE id = ? AND status = 'processing' AND retry_count = ? AND runpod_job_id IS NULL
         RETURNING *`,
      )
      .bind(runpodJobId, seconds(pollAfterS), id, attempt)
      .first<JobRow>(),
  );
}

/**
 * failAttempt: the seed's CASE update. SQLite evaluates every right-hand side on the old row, so
 * the first three failures re-pend the job and the fourth leaves it `error` with retry_count 4.
 * `runpodJobId` null means "no run was recorded" (submit failed, claim timed out); a run id means
 * "that run failed" and also matches a job whose run was not recorded yet.
 */
export function failAttempt(
  db: D1Database,
  id: string,
  attempt: number,
  runpodJobId: string | null,
  error: string,
  retryDelayS: number,
): Promise<Pick<JobRow, "status" | "retry_count"> | null> {
  return retryTransient(() =>
    db
      .prepare(
        `UPDATE export_jobs
         SET status = CASE WHEN retry_count < 3 THEN 'pending' ELSE 'error' END,
             error = ?,
             due_at = CASE WHEN retry_count < 3 THEN ${nowPlus("?")} ELSE NULL END,
             runpod_job_id = COALESCE(runpod_job_id, ?),
             retry_count = retry_count + 1
         WHERE id = ? AND status = 'processing' AND retry_count = ?
           AND (runpod_job_id IS NULL OR runpod_job_id = ?)
         RETURNING status, retry_count`,
      )
      .bind(error, seconds(retryDelayS), runpodJobId, id, attempt, runpodJobId)
      .first<Pick<JobRow, "status" | "retry_count">>(),
  );
}

/** completeJob: the seed's "mark job complete", for the current attempt and run only. */
export function completeJob(
  db: D1Database,
  id: string,
  attempt: number,
  runpodJobId: string,
  outputVideoKey: string,
): Promise<JobRow | null> {
  return retryTransient(() =>
    db
      .prepare(
        `UPDATE export_jobs
         SET status = 'complete', progress = 100, output_video_key = ?, completed_at = ${NOW},
             due_at = NULL, runpod_job_id = COALESCE(runpod_job_id, ?)
         WHERE id = ? AND status = 'processing' AND retry_count = ?
           AND (runpod_job_id IS NULL OR runpod_job_id = ?)
         RETURNING *`,
      )
      .bind(outputVideoKey, runpodJobId, id, attempt, runpodJobId)
      .first<JobRow>(),
  );
}

/** endRunCancelled: RunPod reports the current run CANCELLED → error 'cancelled'. */
export function endRunCancelled(
  db: D1Database,
  id: string,
  attempt: number,
  runpodJobId: string,
): Promise<JobRow | null> {
  return retryTransient(() =>
    db
      .prepare(
        `UPDATE export_jobs
         SET status = 'error', error = 'cancelled', due_at = NULL,
             runpod_job_id = COALESCE(runpod_job_id, ?)
         WHERE id = ? AND status = 'processing' AND retry_count = ?
           AND (runpod_job_id IS NULL OR runpod_job_id = ?)
         RETURNING *`,
      )
      .bind(runpodJobId, id, attempt, runpodJobId)
      .first<JobRow>(),
  );
}

/** cancelJob: a user's cancel of a job that has not finished. */
export function cancelJob(db: D1Database, id: string): Promise<JobRow | null> {
  return db
    .prepare(
      `UPDATE export_jobs SET status = 'error', error = 'cancelled', due_at = NULL
       WHERE id = ? AND status IN ('pending', 'processing')
       RETURNING *`,
    )
    .bind(id)
    .first<JobRow>();
}

/** recordProgress: raise the current attempt's progress (never backwards); it is news, too. */
export function recordProgress(
  db: D1Database,
  id: string,
  attempt: number,
  progress: number,
  pollAfterS: number,
): Promise<JobRow | null> {
  return retryTransient(() =>
    db
      .prepare(
        `UPDATE export_jobs SET progress = ?, due_at = ${nowPlus("?")}
         WHERE id = ? AND status = 'processing' AND retry_count = ? AND progress < ?
         RETURNING *`,
      )
      .bind(progress, seconds(pollAfterS), id, attempt, progress)
      .first<JobRow>(),
  );
}

// ---------------------------------------------------------------------------------------------
// Reconciler leases. Each is one statement that picks due jobs *and* pushes their due_at forward,
// so two reconciler passes running at once never pick the same job.
// ---------------------------------------------------------------------------------------------

/**
 * Pending jobs whose message looks lost: due for longer than `graceS`. A job waiting out a retry
 * delay has due_at in the future and is not picked. Picked jobs get due_at = now, so the next
 * re-enqueue of the same job waits another grace period.
 */
export async function leaseLostPendingJobs(
  db: D1Database,
  graceS: number,
  limit: number,
): Promise<string[]> {
  const { results } = await db
    .prepare(
      `UPDATE export_jobs SET due_at = ${NOW}
       WHERE id IN (SELECT id FROM export_jobs
                    WHERE status = 'pending' AND due_at <= ${nowPlus("?")}
                    ORDER BY due_at LIMIT ?)
         AND status = 'pending'
       RETURNING id`,
    )
    .bind(seconds(-graceS), limit)
    .all<{ id: string }>();
  return results.map((row) => row.id);
}

/**
 * Processing jobs past their due_at: the claim deadline when no run was recorded, the poll time
 * otherwise. Their due_at moves `leaseS` ahead before anything is asked of RunPod.
 */
export async function leaseDueProcessingJobs(
  db: D1Database,
  leaseS: number,
  limit: number,
): Promise<JobRow[]> {
  const { results } = await db
    .prepare(
      `UPDATE export_jobs SET due_at = ${nowPlus("?")}
       WHERE id IN (SELECT id FROM export_jobs
                    WHERE status = 'processing' AND due_at <= ${NOW}
                    ORDER BY due_at LIMIT ?)
         AND status = 'processing'
       RETURNING *`,
    )
    .bind(seconds(leaseS), limit)
    .all<JobRow>();
  return results;
}

// ---------------------------------------------------------------------------------------------
// Dead letters.
// ---------------------------------------------------------------------------------------------

export interface DeadLetterRow {
  id: string;
  queue: string;
  reason: "dead_lettered" | "unparseable";
  body: string;
  attempts: number;
  received_at: string;
  job_id: string | null;
  job_status: JobStatus | null;
  replayed_at: string | null;
}

export interface NewDeadLetter {
  id: string;
  queue: string;
  reason: DeadLetterRow["reason"];
  body: string;
  attempts: number;
  job_id: string | null;
}

export const DEAD_LETTERED_ERROR = "dead-lettered: its queue message ran out of deliveries";

/**
 * Records dead letters in one D1 transaction, idempotent on message id. Each records the job's
 * status at that moment; a job still `pending` is then marked `error` so the reconciler does not
 * resurrect it forever (a job with a live run is left alone). A redelivery of a dead letter that
 * was already replayed changes nothing.
 */
export async function recordDeadLetters(
  db: D1Database,
  letters: readonly NewDeadLetter[],
): Promise<void> {
  if (letters.length === 0) return;
  const statements = letters.flatMap((letter) => {
    const insert = db
      .prepare(
        `INSERT INTO dead_letters (id, queue, reason, body, attempts, received_at, job_id, job_status)
         VALUES (?, ?, ?, ?, ?, ${NOW}, ?, (SELECT status FROM export_jobs WHERE id = ?))
         ON CONFLICT (id) DO NOTHING`,
      )
      .bind(
        letter.id,
        letter.queue,
        letter.reason,
        letter.body,
        letter.attempts,
        letter.job_id,
        letter.job_id,
      );
    if (!letter.job_id) return [insert];
    const abandon = db
      .prepare(
        `UPDATE export_jobs SET status = 'error', error = ?, due_at = NULL
         WHERE id = ? AND status = 'pending'
           AND NOT EXISTS (SELECT 1 FROM dead_letters WHERE id = ? AND replayed_at IS NOT NULL)`,
      )
      .bind(DEAD_LETTERED_ERROR, letter.job_id, letter.id);
    return [insert, abandon];
  });
  await db.batch(statements);
}

export async function listDeadLetters(
  db: D1Database,
  limit: number,
  after: { created_at: string; id: string } | null,
): Promise<DeadLetterRow[]> {
  const page = after ? "WHERE (received_at < ? OR (received_at = ? AND id < ?))" : "";
  const binds = after ? [after.created_at, after.created_at, after.id] : [];
  const { results } = await db
    .prepare(`SELECT * FROM dead_letters ${page} ORDER BY received_at DESC, id DESC LIMIT ?`)
    .bind(...binds, limit + 1)
    .all<DeadLetterRow>();
  return results;
}

export function getDeadLetter(db: D1Database, id: string): Promise<DeadLetterRow | null> {
  return retryTransient(() =>
    db.prepare("SELECT * FROM dead_letters WHERE id = ?").bind(id).first<DeadLetterRow>(),
  );
}

export async function deleteDeadLetter(db: D1Database, id: string): Promise<boolean> {
  const result = await db.prepare("DELETE FROM dead_letters WHERE id = ?").bind(id).run();
  return result.meta.changes > 0;
}

/**
 * replay: in one transaction, mark the dead letter replayed and put its job back to `pending`
 * with its retry budget restored. Only a dead letter not yet replayed whose job is `pending` or
 * `error` qualifies; null otherwise (the caller tells why).
 */
export async function replayDeadLetter(
  db: D1Database,
  id: string,
): Promise<{ deadLetter: DeadLetterRow; job: JobRow } | null> {
  // A token unique to this replay: the job is reset only by the replay that marked the letter.
  const token = `${new Date().toISOString().replace("T", " ").replace("Z", "")}`;
  const [marked, reset] = await db.batch([
    db
      .prepare(
        `UPDATE dead_letters SET replayed_at = ?
         WHERE id = ? AND replayed_at IS NULL AND job_id IS NOT NULL
           AND EXISTS (SELECT 1 FROM export_jobs j
                       WHERE j.id = dead_letters.job_id AND j.status IN ('pending', 'error'))
         RETURNING *`,
      )
      .bind(token, id),
    db
      .prepare(
        `UPDATE export_jobs
         SET status = 'pending', retry_count = 0, error = NULL, progress = 0,
             runpod_job_id = NULL, started_at = NULL, completed_at = NULL, due_at = ${NOW}
         WHERE id = (SELECT job_id FROM dead_letters WHERE id = ? AND replayed_at = ?)
           AND status IN ('pending', 'error')
         RETURNING *`,
      )
      .bind(id, token),
  ]);
  const deadLetter = (marked?.results as DeadLetterRow[] | undefined)?.[0];
  const job = (reset?.results as JobRow[] | undefined)?.[0];
  return deadLetter && job ? { deadLetter, job } : null;
}

// ---------------------------------------------------------------------------------------------
// Stats: one round trip, every query index-backed or over the small dead_letters table.
// ---------------------------------------------------------------------------------------------

export interface Stats {
  jobs: Record<JobStatus, number>;
  oldest_pending_created_at: string | null;
  oldest_pending_age_s: number | null;
  processing_without_run: number;
  dead_letters: { total: number; not_replayed: number };
}

export async function readStats(db: D1Database): Promise<Stats> {
  const [byStatus, oldest, withoutRun, letters] = await retryTransient(() =>
    db.batch([
      db.prepare("SELECT status, COUNT(*) AS n FROM export_jobs GROUP BY status"),
      db.prepare(
        `SELECT created_at,
              CAST(ROUND((julianday('now') - julianday(created_at)) * 86400) AS INTEGER) AS age_s
       FROM export_jobs WHERE status = 'pending' ORDER BY created_at LIMIT 1`,
      ),
      db.prepare(
        "SELECT COUNT(*) AS n FROM export_jobs WHERE status = 'processing' AND runpod_job_id IS NULL",
      ),
      db.prepare(
        `SELECT COUNT(*) AS total, COALESCE(SUM(replayed_at IS NULL), 0) AS not_replayed
       FROM dead_letters`,
      ),
    ]),
  );
  const jobs: Record<JobStatus, number> = { pending: 0, processing: 0, complete: 0, error: 0 };
  for (const row of (byStatus?.results ?? []) as { status: JobStatus; n: number }[]) {
    jobs[row.status] = row.n;
  }
  const first = (oldest?.results as { created_at: string; age_s: number }[] | undefined)?.[0];
  const counts = (letters?.results as { total: number; not_replayed: number }[] | undefined)?.[0];
  return {
    jobs,
    oldest_pending_created_at: first?.created_at ?? null,
    oldest_pending_age_s: first?.age_s ?? null,
    processing_without_run: (withoutRun?.results as { n: number }[] | undefined)?.[0]?.n ?? 0,
    dead_letters: { total: counts?.total ?? 0, not_replayed: counts?.not_replayed ?? 0 },
  };
}
