// Every statement on `export_jobs`. Each UPDATE is one guarded statement: it names the state it
// expects (`status`, the `attempt`, the run) and RETURNING tells the caller whether the transition
// happened. A statement that matches no row means "someone else got there first" (a duplicate
// delivery, a late webhook), never an error. Every UPDATE raises `version`.
//
// Statements are static text (lists travel as one JSON array parameter through `json_each`, so no
// statement binds more than a handful of D1's 100 parameters), collected in JOB_SQL so that
// test/workers/query-plans.test.ts can check the plan of each one. Where an outer condition would
// tempt SQLite's planner away from the primary key, it is written `+status` (no index).
//
// The state machine that decides which of these to call is shared/job-state.ts. Reads and the
// guarded transitions are retried on transient D1 errors (shared/d1-retry.ts): running one of
// them twice is safe.

import { retryTransient } from "../d1-retry.ts";
import type { JobType } from "../schemas.ts";
import { NOW, NOW_PLUS, seconds } from "./time.ts";

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
  attempt: number;
  version: number;
  pending_since: string | null;
  last_event: string | null;
  user_id: number | null;
  /** When the job reached complete or error (migration 0007); internal, never returned. */
  finished_at: string | null;
}

/**
 * A job as the API returns it: the row with `params` parsed back to an object. `archived` is there
 * (true) only when the job is answered from its archive in R2 (shared/archive.ts).
 */
export type Job = Omit<
  JobRow,
  "params" | "request_hash" | "pending_since" | "last_event" | "finished_at"
> & {
  params: Record<string, unknown>;
  archived?: true;
};

export function toJob(row: JobRow): Job {
  const {
    request_hash: _hash,
    pending_since: _since,
    last_event: _event,
    finished_at: _finished,
    ...rest
  } = row;
  return { ...rest, params: JSON.parse(row.params) as Record<string, unknown> };
}

export const CANCELLED = "cancelled";

/** `SET` fragments every transition to `pending` shares: a fresh start for the next claim. */
const BACK_TO_PENDING = `status = 'pending', runpod_job_id = NULL, version = version + 1,
                         finished_at = NULL, last_event = 'retried'`;

/** The seed's CASE ends the job on its fourth failure: then it has finished. */
const FINISHED_ON_FOURTH_FAILURE = `finished_at = CASE WHEN retry_count < 3 THEN NULL ELSE ${NOW} END`;

/**
 * The rows of a batch about to be archived, exactly as they were archived: `(id, version)` pairs
 * of one JSON array parameter (`[{"id":…,"version":…}]`). Every change raises version, so a job
 * that changed since it was read (an operator's retry) matches no pair and is neither counted nor
 * deleted.
 */
export const ARCHIVED_PAIRS = `(id, version) IN (SELECT value ->> '$.id', value ->> '$.version'
                                                 FROM json_each(?))`;

/**
 * The seed's CASE update, binding the error and the retry delay. SQLite evaluates every
 * right-hand side on the old row, so the first three failures re-pend the job and the fourth
 * leaves it `error` with retry_count 4.
 */
const SEED_RETRY = `status = CASE WHEN retry_count < 3 THEN 'pending' ELSE 'error' END,
  error = ?,
  due_at = CASE WHEN retry_count < 3 THEN ${NOW_PLUS} ELSE NULL END,
  ${FINISHED_ON_FOURTH_FAILURE},
  retry_count = retry_count + 1, version = version + 1`;

export const JOB_SQL = {
  insert: `INSERT INTO export_jobs (id, project_id, user_id, type, input_video_key, params,
                                    idempotency_key, request_hash, created_at, due_at, pending_since)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ${NOW}, ${NOW}, ${NOW})
           ON CONFLICT DO NOTHING
           RETURNING *`,
  byIdempotencyKey: "SELECT * FROM export_jobs WHERE project_id = ? AND idempotency_key = ?",
  byId: "SELECT * FROM export_jobs WHERE id = ?",
  // The dispatcher's slots checked against D1: which of these jobs are still processing.
  processingAmong: `SELECT id FROM export_jobs
                    WHERE id IN (SELECT value FROM json_each(?)) AND +status = 'processing'`,
  // What the dispatcher needs of a batch's jobs that are still waiting: their fairness key and age.
  pendingByIds: `SELECT id, project_id, user_id, created_at FROM export_jobs
                 WHERE id IN (SELECT value FROM json_each(?)) AND +status = 'pending'`,

  // Listings, newest first, keyset-paged on (created_at, id) with a row-value cursor.
  listByProjects: `SELECT * FROM export_jobs
                   WHERE project_id IN (SELECT value FROM json_each(?)) AND (created_at, id) < (?, ?)
                   ORDER BY created_at DESC, id DESC LIMIT ?`,
  // Active jobs are few per project: (project_id, status) reads only them, then they are sorted.
  // Left to itself the planner takes (status, created_at): every active job of every project.
  listActiveByProjects: `SELECT * FROM export_jobs INDEXED BY idx_export_jobs_project_status
                         WHERE project_id IN (SELECT value FROM json_each(?))
                           AND status IN ('pending', 'processing') AND (created_at, id) < (?, ?)
                         ORDER BY created_at DESC, id DESC LIMIT ?`,
  // One active status: its few rows through (project_id, status), then sorted.
  listByProjectsAndActiveStatus: `SELECT * FROM export_jobs INDEXED BY idx_export_jobs_project_status
                                  WHERE project_id IN (SELECT value FROM json_each(?))
                                    AND status = ? AND (created_at, id) < (?, ?)
                                  ORDER BY created_at DESC, id DESC LIMIT ?`,
  // A finished status (most of a project's history) walks it newest first until the page is full.
  listByProjectsAndStatus: `SELECT * FROM export_jobs
                            WHERE project_id IN (SELECT value FROM json_each(?)) AND +status = ?
                              AND (created_at, id) < (?, ?)
                            ORDER BY created_at DESC, id DESC LIMIT ?`,
  listByUser: `SELECT * FROM export_jobs
               WHERE user_id = ? AND (created_at, id) < (?, ?)
               ORDER BY created_at DESC, id DESC LIMIT ?`,
  listActiveByUser: `SELECT * FROM export_jobs INDEXED BY idx_export_jobs_user_created
                     WHERE user_id = ? AND +status IN ('pending', 'processing')
                       AND (created_at, id) < (?, ?)
                     ORDER BY created_at DESC, id DESC LIMIT ?`,
  listAll: `SELECT * FROM export_jobs WHERE (created_at, id) < (?, ?)
            ORDER BY created_at DESC, id DESC LIMIT ?`,
  // Operators' status filter: (status, created_at) newest first, ties sorted by id as they come
  // (SQLite sorts only the right part of the ORDER BY), so a page reads about a page of rows
  // whether the status is rare or common. Walking (created_at, id) instead read the whole table
  // for a rare status (1,000,001 rows for `processing` among 1M jobs, measured by npm run bench).
  listAllByStatus: `SELECT * FROM export_jobs INDEXED BY idx_export_jobs_status_created
                    WHERE status = ? AND (created_at, id) < (?, ?)
                    ORDER BY created_at DESC, id DESC LIMIT ?`,

  claim: `UPDATE export_jobs
          SET status = 'processing', attempt = attempt + 1, started_at = ${NOW}, progress = 0,
              due_at = ${NOW_PLUS}, version = version + 1, last_event = 'claimed'
          WHERE id IN (SELECT value FROM json_each(?)) AND +status = 'pending'
          RETURNING *`,
  recordRun: `UPDATE export_jobs SET runpod_job_id = ?, due_at = ${NOW_PLUS}, version = version + 1, last_event = 'submitted'
              WHERE id = ? AND status = 'processing' AND attempt = ? AND runpod_job_id IS NULL
              RETURNING *`,
  release: `UPDATE export_jobs SET status = 'pending', due_at = ${NOW_PLUS}, version = version + 1, last_event = 'released'
            WHERE id = ? AND status = 'processing' AND attempt = ? AND runpod_job_id IS NULL
            RETURNING *`,
  // The seed's CASE update (SEED_RETRY), for no run, the recorded run, or a run not recorded yet.
  failWithoutRun: `UPDATE export_jobs SET ${SEED_RETRY}, last_event = ?
                   WHERE id = ? AND status = 'processing' AND attempt = ? AND runpod_job_id IS NULL
                   RETURNING *`,
  // A run failed: a re-pended job forgets it (the next claim records its own), an ended one keeps it.
  failRecordedRun: `UPDATE export_jobs
                    SET ${SEED_RETRY}, last_event = 'failed',
                        runpod_job_id = CASE WHEN retry_count < 3 THEN NULL ELSE runpod_job_id END
                    WHERE id = ? AND status = 'processing' AND attempt = ? AND runpod_job_id = ?
                    RETURNING *`,
  failUnrecordedRun: `UPDATE export_jobs
                      SET ${SEED_RETRY}, last_event = 'failed',
                          runpod_job_id = CASE WHEN retry_count < 3 THEN NULL ELSE ? END
                      WHERE id = ? AND status = 'processing' AND attempt = ?
                        AND runpod_job_id IS NULL
                      RETURNING *`,
  // The seed's "mark job complete", for the current attempt and run only.
  completeRecordedRun: `UPDATE export_jobs
                        SET status = 'complete', progress = 100, output_video_key = ?,
                            completed_at = ${NOW}, finished_at = ${NOW}, due_at = NULL,
                            version = version + 1, last_event = 'completed'
                        WHERE id = ? AND status = 'processing' AND attempt = ? AND runpod_job_id = ?
                        RETURNING *`,
  // A webhook faster than recordRun (or a run adopted after the client timed out on /run).
  completeUnrecordedRun: `UPDATE export_jobs
                          SET status = 'complete', progress = 100, output_video_key = ?,
                              completed_at = ${NOW}, finished_at = ${NOW}, due_at = NULL,
                              runpod_job_id = ?,
                              version = version + 1, last_event = 'completed'
                          WHERE id = ? AND status = 'processing' AND attempt = ?
                            AND runpod_job_id IS NULL
                          RETURNING *`,
  cancelledRecordedRun: `UPDATE export_jobs
                         SET status = 'error', error = '${CANCELLED}', due_at = NULL,
                             finished_at = ${NOW}, version = version + 1, last_event = 'cancelled'
                         WHERE id = ? AND status = 'processing' AND attempt = ? AND runpod_job_id = ?
                         RETURNING *`,
  cancelledUnrecordedRun: `UPDATE export_jobs
                           SET status = 'error', error = '${CANCELLED}', due_at = NULL,
                               finished_at = ${NOW}, runpod_job_id = ?, version = version + 1,
                               last_event = 'cancelled'
                           WHERE id = ? AND status = 'processing' AND attempt = ?
                             AND runpod_job_id IS NULL
                           RETURNING *`,
  cancel: `UPDATE export_jobs
           SET status = 'error', error = '${CANCELLED}', due_at = NULL, finished_at = ${NOW},
               version = version + 1, last_event = 'cancelled'
           WHERE id = ? AND status IN ('pending', 'processing')
           RETURNING *`,
  // RunPod's /cancel failed after a user's cancel: due_at on an `error` row means "cancel its run
  // again"; the reconciler picks such rows through (status, due_at) and clears due_at when done.
  cancelUnconfirmed: `UPDATE export_jobs SET due_at = ${NOW_PLUS}, version = version + 1, last_event = NULL
                      WHERE id = ? AND status = 'error' AND error = '${CANCELLED}'
                        AND runpod_job_id = ?
                      RETURNING *`,
  cancelConfirmed: `UPDATE export_jobs SET due_at = NULL, version = version + 1, last_event = NULL
                    WHERE id = ? AND status = 'error' AND due_at IS NOT NULL
                    RETURNING *`,
  progress: `UPDATE export_jobs SET progress = ?, due_at = ${NOW_PLUS}, version = version + 1, last_event = CASE WHEN CAST(? AS INTEGER) / 25 > progress / 25 THEN 'progress' END
             WHERE id = ? AND status = 'processing' AND attempt = ? AND progress < ?
             RETURNING *`,

  // Operators' retry (and replay): error jobs that were not cancelled, back to pending with their
  // retry budget restored; the attempt number is kept, so the next claim takes a fresh one.
  retryByIds: `UPDATE export_jobs
               SET ${BACK_TO_PENDING}, retry_count = 0, error = NULL, progress = 0,
                   started_at = NULL, completed_at = NULL, due_at = ${NOW}, pending_since = ${NOW}
               WHERE id IN (SELECT value FROM json_each(?)) AND +status = 'error'
                 AND error IS NOT '${CANCELLED}'
               RETURNING *`,
  retryByFilter: `UPDATE export_jobs
                  SET ${BACK_TO_PENDING}, retry_count = 0, error = NULL, progress = 0,
                      started_at = NULL, completed_at = NULL, due_at = ${NOW},
                      pending_since = ${NOW}
                  WHERE id IN (SELECT id FROM export_jobs
                               WHERE status = 'error' AND created_at >= ? AND created_at < ?
                                 AND error IS NOT '${CANCELLED}'
                                 AND substr(error, 1, length(?)) = ?
                               ORDER BY created_at LIMIT ?)
                    AND +status = 'error'
                  RETURNING *`,

  // Reconciler leases: one statement picks due jobs *and* pushes their due_at forward, so two
  // reconciler passes running at once never pick the same job.
  leaseLostPending: `UPDATE export_jobs SET due_at = ${NOW}, version = version + 1, last_event = NULL
                     WHERE id IN (SELECT id FROM export_jobs
                                  WHERE status = 'pending' AND due_at <= ${NOW_PLUS}
                                  ORDER BY due_at LIMIT ?)
                       AND +status = 'pending'
                     RETURNING *`,
  // Jobs the dispatcher keeps waiting for a slot: due_at NULL on a pending row means "the
  // dispatcher holds it", so the lost-message lease above never takes it (once per wait). Only a
  // job that is due: one re-pended or released meanwhile (its due_at ahead) waits out its delay.
  hold: `UPDATE export_jobs SET due_at = NULL, version = version + 1, last_event = NULL
         WHERE id IN (SELECT value FROM json_each(?)) AND +status = 'pending'
           AND due_at <= ${NOW}
         RETURNING *`,
  // The reconciler's audit of held jobs against the dispatcher, keyset-paged on rowid (the
  // order of the (status, due_at) index within due_at IS NULL): a read, no lease.
  held: `SELECT rowid AS seq, id FROM export_jobs
         WHERE status = 'pending' AND due_at IS NULL AND rowid > ?
         ORDER BY rowid LIMIT ?`,
  leaseDueProcessing: `UPDATE export_jobs SET due_at = ${NOW_PLUS}, version = version + 1, last_event = NULL
                       WHERE id IN (SELECT id FROM export_jobs
                                    WHERE status = 'processing' AND due_at <= ${NOW}
                                    ORDER BY due_at LIMIT ?)
                         AND +status = 'processing'
                       RETURNING *`,
  leaseUnconfirmedCancels: `UPDATE export_jobs SET due_at = ${NOW_PLUS}, version = version + 1, last_event = NULL
                            WHERE id IN (SELECT id FROM export_jobs
                                         WHERE status = 'error' AND due_at <= ${NOW}
                                         ORDER BY due_at LIMIT ?)
                              AND +status = 'error'
                            RETURNING *`,
  expirePending: `UPDATE export_jobs
                  SET status = 'error', error = ?, due_at = NULL, finished_at = ${NOW},
                      version = version + 1, last_event = 'expired'
                  WHERE id IN (SELECT id FROM export_jobs
                               WHERE status = 'pending' AND created_at < ?
                                 AND pending_since < ?
                               ORDER BY created_at LIMIT ?)
                    AND +status = 'pending'
                  RETURNING *`,

  // Retention (shared/archive.ts): jobs that finished before the cutoff (now − ARCHIVE_AFTER_S),
  // oldest first, keyset-paged within a pass on (finished_at, id) so that a job that cannot be
  // archived (its put failed) never holds up the ones after it. A plain read, no lease: the put
  // is idempotent and the delete is guarded by version (ARCHIVED_PAIRS), so two passes at once
  // at worst put the same object twice. A job whose RunPod /cancel is still to be retried
  // (due_at set) waits for it.
  archivable: `SELECT * FROM export_jobs
               WHERE (finished_at, id) > (?, ?) AND finished_at < ${NOW_PLUS}
                 AND +status IN ('complete', 'error') AND due_at IS NULL
               ORDER BY finished_at, id LIMIT ?`,
  // Which of a batch are still as they were read, in the same transaction as reading their events.
  archivedUnchanged: `SELECT id FROM export_jobs WHERE ${ARCHIVED_PAIRS}`,
  // RETURNING: D1's meta.changes would count the job_counts trigger's rows too.
  deleteArchived: `DELETE FROM export_jobs WHERE ${ARCHIVED_PAIRS} RETURNING id`,
} as const;

/** The upper bound of a first page's row-value cursor: sorts after every stored timestamp. */
const FIRST_PAGE = { created_at: "9999-12-31", id: "" };

export interface NewJob {
  id: string;
  project_id: number;
  user_id?: number | undefined;
  type: JobType;
  input_video_key: string;
  params: Record<string, unknown>;
  idempotency?: { key: string; requestHash: string } | undefined;
}

/**
 * The seed's "create job", with `pending` and due now. Null when the project already has a job
 * under the same Idempotency-Key (the unique index decides, also for two racing requests). Safe
 * to retry: a second try of a committed insert conflicts on the id and returns null.
 */
export function insertJob(db: D1Database, job: NewJob): Promise<JobRow | null> {
  return retryTransient(() =>
    db
      .prepare(JOB_SQL.insert)
      .bind(
        job.id,
        job.project_id,
        job.user_id ?? null,
        job.type,
        job.input_video_key,
        JSON.stringify(job.params),
        job.idempotency?.key ?? null,
        job.idempotency?.requestHash ?? null,
      )
      .first<JobRow>(),
  );
}

export function findJobByIdempotencyKey(
  db: D1Database,
  projectId: number,
  key: string,
): Promise<JobRow | null> {
  return retryTransient(() =>
    db.prepare(JOB_SQL.byIdempotencyKey).bind(projectId, key).first<JobRow>(),
  );
}

export async function processingAmong(db: D1Database, ids: readonly string[]): Promise<string[]> {
  if (ids.length === 0) return [];
  const { results } = await retryTransient(() =>
    db.prepare(JOB_SQL.processingAmong).bind(JSON.stringify(ids)).all<{ id: string }>(),
  );
  return results.map((row) => row.id);
}

export async function pendingJobs(
  db: D1Database,
  ids: readonly string[],
): Promise<Pick<JobRow, "id" | "project_id" | "user_id" | "created_at">[]> {
  if (ids.length === 0) return [];
  const { results } = await retryTransient(() =>
    db
      .prepare(JOB_SQL.pendingByIds)
      .bind(JSON.stringify(ids))
      .all<Pick<JobRow, "id" | "project_id" | "user_id" | "created_at">>(),
  );
  return results;
}

export function getJob(db: D1Database, id: string): Promise<JobRow | null> {
  return retryTransient(() => db.prepare(JOB_SQL.byId).bind(id).first<JobRow>());
}

export interface ListCursor {
  created_at: string;
  id: string;
}

export interface ListJobsQuery {
  /** Null: every project (operators). */
  projectIds: number[] | null;
  /** Instead of projects: one user's jobs. */
  userId?: number | undefined;
  /** Null: every status; `active`: pending and processing. */
  statuses: "active" | JobStatus | null;
  limit: number;
  after: ListCursor | null;
}

/**
 * The seed's "active jobs for project" and "recent jobs" queries, generalised to several projects,
 * newest first, keyset-paged on (created_at, id). Returns up to `limit + 1` rows so the caller
 * knows whether there is a next page.
 */
export async function listJobs(db: D1Database, query: ListJobsQuery): Promise<JobRow[]> {
  const after = query.after ?? FIRST_PAGE;
  const page = [after.created_at, after.id, query.limit + 1] as const;
  const projects = JSON.stringify(query.projectIds);
  const statement =
    query.userId !== undefined
      ? db
          .prepare(query.statuses === "active" ? JOB_SQL.listActiveByUser : JOB_SQL.listByUser)
          .bind(query.userId, ...page)
      : query.projectIds === null
        ? query.statuses === null || query.statuses === "active"
          ? db.prepare(JOB_SQL.listAll).bind(...page)
          : db.prepare(JOB_SQL.listAllByStatus).bind(query.statuses, ...page)
        : query.statuses === "active"
          ? db.prepare(JOB_SQL.listActiveByProjects).bind(projects, ...page)
          : query.statuses === null
            ? db.prepare(JOB_SQL.listByProjects).bind(projects, ...page)
            : db
                .prepare(
                  query.statuses === "pending" || query.statuses === "processing"
                    ? JOB_SQL.listByProjectsAndActiveStatus
                    : JOB_SQL.listByProjectsAndStatus,
                )
                .bind(projects, query.statuses, ...page);
  const { results } = await retryTransient(() => statement.all<JobRow>());
  return results;
}

// ---------------------------------------------------------------------------------------------
// Transitions. Only shared/job-state.ts calls these.
// ---------------------------------------------------------------------------------------------

const first = (db: D1Database, sql: string, ...binds: unknown[]) =>
  retryTransient(() =>
    db
      .prepare(sql)
      .bind(...binds)
      .first<JobRow>(),
  );

const all = async (db: D1Database, sql: string, ...binds: unknown[]) =>
  (
    await retryTransient(() =>
      db
        .prepare(sql)
        .bind(...binds)
        .all<JobRow>(),
    )
  ).results;

/** claim: pending → processing with the next attempt, for every id of a batch in one statement. */
export function claimJobs(
  db: D1Database,
  ids: readonly string[],
  claimTimeoutS: number,
): Promise<JobRow[]> {
  if (ids.length === 0) return Promise.resolve([]);
  return all(db, JOB_SQL.claim, seconds(claimTimeoutS), JSON.stringify(ids));
}

export function recordRun(
  db: D1Database,
  id: string,
  attempt: number,
  runpodJobId: string,
  pollAfterS: number,
): Promise<JobRow | null> {
  return first(db, JOB_SQL.recordRun, runpodJobId, seconds(pollAfterS), id, attempt);
}

export function releaseJob(
  db: D1Database,
  id: string,
  attempt: number,
  delayS: number,
): Promise<JobRow | null> {
  return first(db, JOB_SQL.release, seconds(delayS), id, attempt);
}

/**
 * Runs the variant of a run-guarded transition that fits the row as last read (the run recorded,
 * or not yet), and the other variant when the row moved in between (recordRun landed meanwhile).
 * Two variants instead of `COALESCE(runpod_job_id, ?)`, which would rewrite the seed's
 * `idx_export_jobs_runpod` entry on every transition even when the value does not change.
 */
async function byRun(
  seen: string | null,
  runpodJobId: string,
  recorded: () => Promise<JobRow | null>,
  unrecorded: () => Promise<JobRow | null>,
): Promise<JobRow | null> {
  if (seen === runpodJobId) return recorded();
  if (seen !== null) return null; // another run is this attempt's
  return (await unrecorded()) ?? recorded();
}

/** failAttempt: the seed's CASE update, for the attempt's recorded run or for no run at all. */
export function failAttempt(
  db: D1Database,
  job: Pick<JobRow, "id" | "runpod_job_id">,
  attempt: number,
  runpodJobId: string | null,
  error: string,
  retryDelayS: number,
  event: "submit_failed" | "failed" = runpodJobId === null ? "submit_failed" : "failed",
): Promise<JobRow | null> {
  const delay = seconds(retryDelayS);
  if (runpodJobId === null) {
    return first(db, JOB_SQL.failWithoutRun, error, delay, event, job.id, attempt);
  }
  return byRun(
    job.runpod_job_id,
    runpodJobId,
    () => first(db, JOB_SQL.failRecordedRun, error, delay, job.id, attempt, runpodJobId),
    () => first(db, JOB_SQL.failUnrecordedRun, error, delay, runpodJobId, job.id, attempt),
  );
}

/** The seed's "mark job complete"; `runpodJobId` null: the attempt recorded no run (claim timeout). */
export function completeJob(
  db: D1Database,
  job: Pick<JobRow, "id" | "runpod_job_id">,
  attempt: number,
  runpodJobId: string | null,
  outputVideoKey: string,
): Promise<JobRow | null> {
  if (runpodJobId === null) {
    return first(db, JOB_SQL.completeUnrecordedRun, outputVideoKey, null, job.id, attempt);
  }
  return byRun(
    job.runpod_job_id,
    runpodJobId,
    () => first(db, JOB_SQL.completeRecordedRun, outputVideoKey, job.id, attempt, runpodJobId),
    () => first(db, JOB_SQL.completeUnrecordedRun, outputVideoKey, runpodJobId, job.id, attempt),
  );
}

/** RunPod reports the attempt's run CANCELLED → error 'cancelled'. */
export function endRunCancelled(
  db: D1Database,
  job: Pick<JobRow, "id" | "runpod_job_id">,
  attempt: number,
  runpodJobId: string,
): Promise<JobRow | null> {
  return byRun(
    job.runpod_job_id,
    runpodJobId,
    () => first(db, JOB_SQL.cancelledRecordedRun, job.id, attempt, runpodJobId),
    () => first(db, JOB_SQL.cancelledUnrecordedRun, runpodJobId, job.id, attempt),
  );
}

/** cancelJob: a user's cancel of a job that has not finished. */
export function cancelJob(db: D1Database, id: string): Promise<JobRow | null> {
  return first(db, JOB_SQL.cancel, id);
}

export function markCancelUnconfirmed(
  db: D1Database,
  id: string,
  runpodJobId: string,
  retryInS: number,
): Promise<JobRow | null> {
  return first(db, JOB_SQL.cancelUnconfirmed, seconds(retryInS), id, runpodJobId);
}

export function markCancelConfirmed(db: D1Database, id: string): Promise<JobRow | null> {
  return first(db, JOB_SQL.cancelConfirmed, id);
}

/** recordProgress: raise the current attempt's progress (never backwards); it is news, too. */
export function recordProgress(
  db: D1Database,
  id: string,
  attempt: number,
  progress: number,
  pollAfterS: number,
): Promise<JobRow | null> {
  return first(
    db,
    JOB_SQL.progress,
    progress,
    seconds(pollAfterS),
    progress,
    id,
    attempt,
    progress,
  );
}

export function retryJobsByIds(db: D1Database, ids: readonly string[]): Promise<JobRow[]> {
  if (ids.length === 0) return Promise.resolve([]);
  return all(db, JOB_SQL.retryByIds, JSON.stringify(ids));
}

export interface RetryFilter {
  errorPrefix: string;
  createdAfter: string;
  createdBefore: string;
  limit: number;
}

export function retryJobsByFilter(db: D1Database, filter: RetryFilter): Promise<JobRow[]> {
  return all(
    db,
    JOB_SQL.retryByFilter,
    filter.createdAfter,
    filter.createdBefore,
    filter.errorPrefix,
    filter.errorPrefix,
    filter.limit,
  );
}

// ---------------------------------------------------------------------------------------------
// Reconciler leases.
// ---------------------------------------------------------------------------------------------

/**
 * Pending jobs whose message looks lost: due for longer than `graceS`. A job waiting out a retry
 * delay has due_at in the future and is not picked. Picked jobs get due_at = now, so the next
 * re-enqueue of the same job waits another grace period.
 */
export function leaseLostPendingJobs(
  db: D1Database,
  graceS: number,
  limit: number,
): Promise<JobRow[]> {
  return all(db, JOB_SQL.leaseLostPending, seconds(-graceS), limit);
}

/** Pending jobs the dispatcher keeps waiting: their due_at cleared (see JOB_SQL.hold). */
export function holdJobs(db: D1Database, ids: readonly string[]): Promise<JobRow[]> {
  if (ids.length === 0) return Promise.resolve([]);
  return all(db, JOB_SQL.hold, JSON.stringify(ids));
}

/** A page of held jobs after rowid `after` (0 for the first page), for the reconciler's audit. */
export async function heldJobs(
  db: D1Database,
  after: number,
  limit: number,
): Promise<{ seq: number; id: string }[]> {
  const { results } = await retryTransient(() =>
    db.prepare(JOB_SQL.held).bind(after, limit).all<{ seq: number; id: string }>(),
  );
  return results;
}

/**
 * Processing jobs past their due_at: the claim deadline when no run was recorded, the poll time
 * otherwise. Their due_at moves `leaseS` ahead before anything is asked of RunPod.
 */
export function leaseDueProcessingJobs(
  db: D1Database,
  leaseS: number,
  limit: number,
): Promise<JobRow[]> {
  return all(db, JOB_SQL.leaseDueProcessing, seconds(leaseS), limit);
}

export function leaseUnconfirmedCancels(
  db: D1Database,
  leaseS: number,
  limit: number,
): Promise<JobRow[]> {
  return all(db, JOB_SQL.leaseUnconfirmedCancels, seconds(leaseS), limit);
}

/** Pending jobs wanted for longer than `maxAgeS` and still never run to the end: `expired`. */
export function expirePendingJobs(
  db: D1Database,
  cutoff: string,
  error: string,
  limit: number,
): Promise<JobRow[]> {
  return all(db, JOB_SQL.expirePending, error, cutoff, cutoff, limit);
}

// ---------------------------------------------------------------------------------------------
// Retention (shared/archive.ts composes these with the events, dead letters and counts).
// ---------------------------------------------------------------------------------------------

/** The keyset start of a pass: sorts before every stored timestamp. */
export const ARCHIVE_START = { finished_at: "", id: "" };

/** Up to `limit` jobs that finished more than `archiveAfterS` ago, after `after`, oldest first. */
export function archivableJobs(
  db: D1Database,
  archiveAfterS: number,
  after: { finished_at: string; id: string },
  limit: number,
): Promise<JobRow[]> {
  return all(db, JOB_SQL.archivable, after.finished_at, after.id, seconds(-archiveAfterS), limit);
}
