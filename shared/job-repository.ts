// Every SQL statement of reel-exports lives in this module. Each UPDATE is one guarded statement:
// it names the state it expects (`status`, the attempt as `retry_count`, the run) and RETURNING
// tells the caller whether the transition happened. A statement that matches no row means
// "someone else got there first" (a duplicate delivery, a late webhook), never an error.
// The state machine that decides which of these to call is shared/job-state.ts.

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
}

/** A job as the API returns it: the row with `params` parsed back to an object. */
export type Job = Omit<JobRow, "params"> & { params: Record<string, unknown> };

export function toJob(row: JobRow): Job {
  return { ...row, params: JSON.parse(row.params) as Record<string, unknown> };
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
}

export function insertJob(db: D1Database, job: NewJob): Promise<JobRow | null> {
  return db
    .prepare(
      `INSERT INTO export_jobs (id, project_id, type, input_video_key, params, created_at, due_at)
       VALUES (?, ?, ?, ?, ?, ${NOW}, ${NOW})
       RETURNING *`,
    )
    .bind(job.id, job.project_id, job.type, job.input_video_key, JSON.stringify(job.params))
    .first<JobRow>();
}

export function getJob(db: D1Database, id: string): Promise<JobRow | null> {
  return db.prepare("SELECT * FROM export_jobs WHERE id = ?").bind(id).first<JobRow>();
}

export interface ListCursor {
  created_at: string;
  id: string;
}

export interface ListJobsQuery {
  projectIds: number[];
  activeOnly: boolean;
  limit: number;
  after: ListCursor | null;
}

/**
 * The seed's "active jobs for project" and "recent jobs" queries, generalised to several projects,
 * newest first, keyset-paged on (created_at, id). Returns up to `limit + 1` rows so the caller
 * knows whether there is a next page.
 */
export async function listJobs(db: D1Database, query: ListJobsQuery): Promise<JobRow[]> {
  const where = [`project_id IN (${query.projectIds.map(() => "?").join(", ")})`];
  const binds: (string | number)[] = [...query.projectIds];
  if (query.activeOnly) where.push("status IN ('pending', 'processing')");
  if (query.after) {
    where.push("(created_at < ? OR (created_at = ? AND id < ?))");
    binds.push(query.after.created_at, query.after.created_at, query.after.id);
  }
  const { results } = await db
    .prepare(
      `SELECT * FROM export_jobs WHERE ${where.join(" AND ")}
       ORDER BY created_at DESC, id DESC LIMIT ?`,
    )
    .bind(...binds, query.limit + 1)
    .all<JobRow>();
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
    const { results } = await db
      .prepare(
        `UPDATE export_jobs
         SET status = 'processing', started_at = ${NOW}, progress = 0, runpod_job_id = NULL,
             due_at = ${nowPlus("?")}
         WHERE id IN (${chunk.map(() => "?").join(", ")}) AND status = 'pending'
         RETURNING *`,
      )
      .bind(seconds(claimTimeoutS), ...chunk)
      .all<JobRow>();
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
  return db
    .prepare(
      `UPDATE export_jobs SET runpod_job_id = ?, due_at = ${nowPlus("?")}
       WHERE id = ? AND status = 'processing' AND retry_count = ? AND runpod_job_id IS NULL
       RETURNING *`,
    )
    .bind(runpodJobId, seconds(pollAfterS), id, attempt)
    .first<JobRow>();
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
  return db
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
    .first<Pick<JobRow, "status" | "retry_count">>();
}

/** completeJob: the seed's "mark job complete", for the current attempt and run only. */
export function completeJob(
  db: D1Database,
  id: string,
  attempt: number,
  runpodJobId: string,
  outputVideoKey: string,
): Promise<JobRow | null> {
  return db
    .prepare(
      `UPDATE export_jobs
       SET status = 'complete', progress = 100, output_video_key = ?, completed_at = ${NOW},
           due_at = NULL, runpod_job_id = COALESCE(runpod_job_id, ?)
       WHERE id = ? AND status = 'processing' AND retry_count = ?
         AND (runpod_job_id IS NULL OR runpod_job_id = ?)
       RETURNING *`,
    )
    .bind(outputVideoKey, runpodJobId, id, attempt, runpodJobId)
    .first<JobRow>();
}

/** endRunCancelled: RunPod reports the current run CANCELLED → error 'cancelled'. */
export function endRunCancelled(
  db: D1Database,
  id: string,
  attempt: number,
  runpodJobId: string,
): Promise<JobRow | null> {
  return db
    .prepare(
      `UPDATE export_jobs
       SET status = 'error', error = 'cancelled', due_at = NULL,
           runpod_job_id = COALESCE(runpod_job_id, ?)
       WHERE id = ? AND status = 'processing' AND retry_count = ?
         AND (runpod_job_id IS NULL OR runpod_job_id = ?)
       RETURNING *`,
    )
    .bind(runpodJobId, id, attempt, runpodJobId)
    .first<JobRow>();
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
  return db
    .prepare(
      `UPDATE export_jobs SET progress = ?, due_at = ${nowPlus("?")}
       WHERE id = ? AND status = 'processing' AND retry_count = ? AND progress < ?
       RETURNING *`,
    )
    .bind(progress, seconds(pollAfterS), id, attempt, progress)
    .first<JobRow>();
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
