// The guarded state changes of `export_jobs`: every statement that writes a job's timeline event
// (`last_event`, migration 0005's trigger). Only shared/job-state.ts, the state machine, calls
// these.
//
// Each UPDATE is one guarded statement: it names the state it expects (`status`, the `attempt`,
// the run) and RETURNING tells the caller whether the transition happened. A statement that
// matches no row means "someone else got there first" (a duplicate delivery, a late webhook),
// never an error. Every UPDATE raises `version`. Where an outer condition would tempt SQLite's
// planner away from the primary key, it is written `+status` (no index).

import { NOW, NOW_PLUS, seconds } from "../time.ts";
import * as due from "./due.ts";
import { LEADER_ON_ITS_WAY } from "./leases.ts";
import {
  allRows,
  CANCELLED,
  guardedRow,
  guardedRows,
  type JobRow,
  notEndedByRequest,
  SUPERSEDED_BY,
} from "./row.ts";

/**
 * `SET` fragment of the statements that end a run: its RunPod figures (executionTime,
 * delayTime; 0 when unknown) added to the job's `gpu_ms` and `queue_ms`. First in the SET, so
 * their two binds come first (migration 0010's triggers carry them to the run's record and the
 * day's usage).
 */
const RUN_FIGURES = "gpu_ms = gpu_ms + ?, queue_ms = queue_ms + ?";

/** A run's RunPod figures, as its news told them (ms; 0 when unknown). */
export interface RunSpend {
  executionMs: number;
  delayMs: number;
}
export const NO_SPEND: RunSpend = { executionMs: 0, delayMs: 0 };
const spent = (spend: RunSpend) => [
  Math.max(0, Math.round(spend.executionMs)),
  Math.max(0, Math.round(spend.delayMs)),
];

/** `SET` fragments every transition to `pending` shares: a fresh start for the next claim. */
const BACK_TO_PENDING = `status = 'pending', runpod_job_id = NULL, version = version + 1,
                         finished_at = NULL, last_event = 'retried'`;

/** The seed's CASE ends the job on its fourth failure: then it has finished. */
const FINISHED_ON_FOURTH_FAILURE = `finished_at = CASE WHEN retry_count < 3 THEN NULL ELSE ${NOW} END`;

/**
 * The seed's CASE update, binding the error and the retry delay. SQLite evaluates every
 * right-hand side on the old row, so the first three failures re-pend the job and the fourth
 * leaves it `error` with retry_count 4.
 */
const SEED_RETRY = `status = CASE WHEN retry_count < 3 THEN 'pending' ELSE 'error' END,
  error = ?,
  ${due.retryAtOrNothingDue("retry_count < 3", NOW_PLUS)},
  ${FINISHED_ON_FOURTH_FAILURE},
  retry_count = retry_count + 1, version = version + 1`;

export const TRANSITION_SQL = {
  claim: `UPDATE export_jobs
          SET status = 'processing', attempt = attempt + 1, started_at = ${NOW}, progress = 0,
              ${due.claimDeadline(NOW_PLUS)}, version = version + 1, last_event = 'claimed',
              claim_token = ?, runpod_endpoint_id = ?
          WHERE id IN (SELECT value FROM json_each(?)) AND +status = 'pending'
          RETURNING *`,
  // After a claim whose answer was lost: the jobs that claim made, still waiting for their run.
  claimedBy: `SELECT * FROM export_jobs
              WHERE id IN (SELECT value FROM json_each(?)) AND +claim_token = ?
                AND +status = 'processing' AND +runpod_job_id IS NULL`,
  recordRun: `UPDATE export_jobs SET runpod_job_id = ?, ${due.pollAt(NOW_PLUS)}, version = version + 1, last_event = 'submitted'
              WHERE id = ? AND status = 'processing' AND attempt = ? AND runpod_job_id IS NULL
              RETURNING *`,
  release: `UPDATE export_jobs SET status = 'pending', ${due.retryAt(NOW_PLUS)}, version = version + 1, last_event = 'released'
            WHERE id = ? AND status = 'processing' AND attempt = ? AND runpod_job_id IS NULL
            RETURNING *`,
  // The seed's CASE update (SEED_RETRY), for no run, the recorded run, or a run not recorded yet.
  failWithoutRun: `UPDATE export_jobs SET ${SEED_RETRY}, last_event = ?
                   WHERE id = ? AND status = 'processing' AND attempt = ? AND runpod_job_id IS NULL
                   RETURNING *`,
  // A run failed: a re-pended job forgets it (the next claim records its own), an ended one keeps it.
  failRecordedRun: `UPDATE export_jobs
                    SET ${RUN_FIGURES}, ${SEED_RETRY}, last_event = 'failed',
                        runpod_job_id = CASE WHEN retry_count < 3 THEN NULL ELSE runpod_job_id END
                    WHERE id = ? AND status = 'processing' AND attempt = ? AND runpod_job_id = ?
                    RETURNING *`,
  failUnrecordedRun: `UPDATE export_jobs
                      SET ${RUN_FIGURES}, ${SEED_RETRY}, last_event = 'failed',
                          runpod_job_id = CASE WHEN retry_count < 3 THEN NULL ELSE ? END
                      WHERE id = ? AND status = 'processing' AND attempt = ?
                        AND runpod_job_id IS NULL
                      RETURNING *`,
  // The seed's "mark job complete", for the current attempt and run only.
  completeRecordedRun: `UPDATE export_jobs
                        SET ${RUN_FIGURES}, status = 'complete', progress = 100, output_video_key = ?,
                            completed_at = ${NOW}, finished_at = ${NOW}, ${due.nothingDue},
                            version = version + 1, last_event = 'completed'
                        WHERE id = ? AND status = 'processing' AND attempt = ? AND runpod_job_id = ?
                        RETURNING *`,
  // A webhook faster than recordRun (or a run adopted after the client timed out on /run).
  completeUnrecordedRun: `UPDATE export_jobs
                          SET ${RUN_FIGURES}, status = 'complete', progress = 100, output_video_key = ?,
                              completed_at = ${NOW}, finished_at = ${NOW}, ${due.nothingDue},
                              runpod_job_id = ?,
                              version = version + 1, last_event = 'completed'
                          WHERE id = ? AND status = 'processing' AND attempt = ?
                            AND runpod_job_id IS NULL
                          RETURNING *`,
  cancelledRecordedRun: `UPDATE export_jobs
                         SET ${RUN_FIGURES}, status = 'error', error = '${CANCELLED}', ${due.nothingDue},
                             finished_at = ${NOW}, version = version + 1, last_event = 'cancelled'
                         WHERE id = ? AND status = 'processing' AND attempt = ? AND runpod_job_id = ?
                         RETURNING *`,
  cancelledUnrecordedRun: `UPDATE export_jobs
                           SET ${RUN_FIGURES}, status = 'error', error = '${CANCELLED}', ${due.nothingDue},
                               finished_at = ${NOW}, runpod_job_id = ?, version = version + 1,
                               last_event = 'cancelled'
                           WHERE id = ? AND status = 'processing' AND attempt = ?
                             AND runpod_job_id IS NULL
                           RETURNING *`,
  cancel: `UPDATE export_jobs
           SET status = 'error', error = '${CANCELLED}', ${due.nothingDue}, finished_at = ${NOW},
               version = version + 1, last_event = 'cancelled'
           WHERE id = ? AND status IN ('pending', 'processing')
           RETURNING *`,
  // …by a scoped client token: only a job of one of its projects (a JSON array).
  cancelInProjects: `UPDATE export_jobs
                     SET status = 'error', error = '${CANCELLED}', ${due.nothingDue},
                         finished_at = ${NOW}, version = version + 1, last_event = 'cancelled'
                     WHERE id = ? AND status IN ('pending', 'processing')
                       AND project_id IN (SELECT value FROM json_each(?))
                     RETURNING *`,
  // Reuse: a pending job completes with a copy of an identical complete job's output, no run.
  reuse: `UPDATE export_jobs
          SET status = 'complete', progress = 100, output_video_key = ?, reused_from = ?,
              completed_at = ${NOW}, finished_at = ${NOW}, ${due.nothingDue},
              version = version + 1, last_event = 'reused'
          WHERE id = ? AND status = 'pending'
          RETURNING *`,
  // Supersede, in the new job's insert transaction (insert.ts): the project's older pending and
  // processing jobs under the same key end 'superseded by <new id>' — except those identical to
  // the new job when it follows (their leader, or a complete identical job). Only jobs inserted
  // before the new one (rowid), and only if the new one was inserted (an Idempotency-Key
  // conflict inserted nothing: no rowid, no match). A job with a run keeps a cancel retry due
  // until RunPod confirms its /cancel (as a user's cancel).
  supersede: `UPDATE export_jobs
              SET status = 'error', error = '${SUPERSEDED_BY}' || ?,
                  due_at = CASE WHEN runpod_job_id IS NULL THEN NULL ELSE ${NOW_PLUS} END,
                  finished_at = ${NOW}, version = version + 1, last_event = 'superseded'
              WHERE id IN (SELECT id FROM export_jobs
                           WHERE project_id = ? AND supersede_key = ?
                             AND status IN ('pending', 'processing'))
                AND +status IN ('pending', 'processing')
                AND rowid < (SELECT rowid FROM export_jobs WHERE id = ?)
                AND NOT COALESCE(params_hash = ? AND input_etag = ?
                                 AND (SELECT follows FROM export_jobs WHERE id = ?) IS NOT NULL, 0)
              RETURNING *`,
  // After a supersede whose answer was lost: the jobs it ended.
  supersededBy: `SELECT * FROM export_jobs
                 WHERE project_id = ? AND supersede_key = ? AND status = 'error'
                   AND +error = '${SUPERSEDED_BY}' || ?`,
  progress: `UPDATE export_jobs SET progress = ?, ${due.claimDeadlineOrPollAt(NOW_PLUS)}, version = version + 1, last_event = CASE WHEN CAST(? AS INTEGER) / 25 > progress / 25 THEN 'progress' END
             WHERE id = ? AND status = 'processing' AND attempt = ? AND progress < ?
             RETURNING *`,

  // Operators' retry (and replay): error jobs that were not cancelled, back to pending with their
  // retry budget restored; the attempt number is kept, so the next claim takes a fresh one.
  retryByIds: `UPDATE export_jobs
               SET ${BACK_TO_PENDING}, retry_count = 0, error = NULL, progress = 0,
                   started_at = NULL, completed_at = NULL, ${due.retryAt(NOW)}, pending_since = ${NOW}
               WHERE id IN (SELECT value FROM json_each(?)) AND +status = 'error'
                 AND ${notEndedByRequest()}
               RETURNING *`,
  retryByFilter: `UPDATE export_jobs
                  SET ${BACK_TO_PENDING}, retry_count = 0, error = NULL, progress = 0,
                      started_at = NULL, completed_at = NULL, ${due.retryAt(NOW)},
                      pending_since = ${NOW}
                  WHERE id IN (SELECT id FROM export_jobs
                               WHERE status = 'error' AND created_at >= ? AND created_at < ?
                                 AND ${notEndedByRequest()}
                                 AND substr(error, 1, length(?)) = ?
                               ORDER BY created_at LIMIT ?)
                    AND +status = 'error'
                  RETURNING *`,

  // The reconciler's expiry: pending jobs wanted for too long, oldest first. A follower is not
  // expired while its leader is on its way (the leader expires or ends on its own, and then
  // releases it, its wait counted anew); one whose wake-up was lost is.
  expirePending: `UPDATE export_jobs
                  SET status = 'error', error = ?, ${due.nothingDue}, finished_at = ${NOW},
                      version = version + 1, last_event = 'expired'
                  WHERE id IN (SELECT id FROM export_jobs
                               WHERE status = 'pending' AND created_at < ?
                                 AND pending_since < ?
                                 AND (follows IS NULL OR NOT ${LEADER_ON_ITS_WAY})
                               ORDER BY created_at LIMIT ?)
                    AND +status = 'pending'
                  RETURNING *`,
} as const;

/**
 * claim: pending → processing with the next attempt, for every id of a batch in one statement,
 * to be submitted to `endpointId` (the attempt's endpoint).
 */
export function claimJobs(
  db: D1Database,
  ids: readonly string[],
  claimTimeoutS: number,
  endpointId: string | null = null,
): Promise<JobRow[]> {
  if (ids.length === 0) return Promise.resolve([]);
  // The claim's own mark: after an answer D1 lost, the jobs it claimed are read back by it, so a
  // batch never takes jobs it claimed for another's (nor leaves them to the claim timeout).
  const token = crypto.randomUUID();
  const list = JSON.stringify(ids);
  return guardedRows(
    db,
    () => allRows(db, TRANSITION_SQL.claimedBy, list, token),
    TRANSITION_SQL.claim,
    seconds(claimTimeoutS),
    token,
    endpointId,
    list,
  );
}

/** What a guarded statement's change looks like on the job, for its read-back (row.ts). */
const shows = {
  run: (id: string, attempt: number, runpodJobId: string) => ({
    id,
    shows: (row: JobRow) => row.attempt === attempt && row.runpod_job_id === runpodJobId,
  }),
  released: (id: string, attempt: number) => ({
    id,
    shows: (row: JobRow) =>
      row.attempt === attempt && row.status === "pending" && row.last_event === "released",
  }),
  failed: (id: string, attempt: number, error: string, event: string) => ({
    id,
    shows: (row: JobRow) =>
      row.attempt === attempt &&
      (row.status === "pending" || row.status === "error") &&
      row.last_event === event &&
      row.error === error,
  }),
  completed: (id: string, attempt: number, runpodJobId: string | null) => ({
    id,
    shows: (row: JobRow) =>
      row.attempt === attempt && row.status === "complete" && row.runpod_job_id === runpodJobId,
  }),
  cancelled: (id: string, attempt?: number) => ({
    id,
    shows: (row: JobRow) =>
      (attempt === undefined || row.attempt === attempt) &&
      row.status === "error" &&
      row.error === CANCELLED,
  }),
  progressed: (id: string, attempt: number, progress: number) => ({
    id,
    shows: (row: JobRow) =>
      row.attempt === attempt && row.status === "processing" && row.progress >= progress,
  }),
};

export function recordRun(
  db: D1Database,
  id: string,
  attempt: number,
  runpodJobId: string,
  pollAfterS: number,
): Promise<JobRow | null> {
  return guardedRow(
    db,
    shows.run(id, attempt, runpodJobId),
    TRANSITION_SQL.recordRun,
    runpodJobId,
    seconds(pollAfterS),
    id,
    attempt,
  );
}

export function releaseJob(
  db: D1Database,
  id: string,
  attempt: number,
  delayS: number,
): Promise<JobRow | null> {
  return guardedRow(
    db,
    shows.released(id, attempt),
    TRANSITION_SQL.release,
    seconds(delayS),
    id,
    attempt,
  );
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
  spend: RunSpend = NO_SPEND,
): Promise<JobRow | null> {
  const delay = seconds(retryDelayS);
  const failed = shows.failed(job.id, attempt, error, event);
  if (runpodJobId === null) {
    return guardedRow(
      db,
      failed,
      TRANSITION_SQL.failWithoutRun,
      error,
      delay,
      event,
      job.id,
      attempt,
    );
  }
  return byRun(
    job.runpod_job_id,
    runpodJobId,
    () =>
      guardedRow(
        db,
        failed,
        TRANSITION_SQL.failRecordedRun,
        ...spent(spend),
        error,
        delay,
        job.id,
        attempt,
        runpodJobId,
      ),
    () =>
      guardedRow(
        db,
        failed,
        TRANSITION_SQL.failUnrecordedRun,
        ...spent(spend),
        error,
        delay,
        runpodJobId,
        job.id,
        attempt,
      ),
  );
}

/** The seed's "mark job complete"; `runpodJobId` null: the attempt recorded no run (claim timeout). */
export function completeJob(
  db: D1Database,
  job: Pick<JobRow, "id" | "runpod_job_id">,
  attempt: number,
  runpodJobId: string | null,
  outputVideoKey: string,
  spend: RunSpend = NO_SPEND,
): Promise<JobRow | null> {
  const completed = shows.completed(job.id, attempt, runpodJobId);
  const unrecorded = () =>
    guardedRow(
      db,
      completed,
      TRANSITION_SQL.completeUnrecordedRun,
      ...spent(spend),
      outputVideoKey,
      runpodJobId,
      job.id,
      attempt,
    );
  if (runpodJobId === null) return unrecorded();
  return byRun(
    job.runpod_job_id,
    runpodJobId,
    () =>
      guardedRow(
        db,
        completed,
        TRANSITION_SQL.completeRecordedRun,
        ...spent(spend),
        outputVideoKey,
        job.id,
        attempt,
        runpodJobId,
      ),
    unrecorded,
  );
}

/** RunPod reports the attempt's run CANCELLED → error 'cancelled'. */
export function endRunCancelled(
  db: D1Database,
  job: Pick<JobRow, "id" | "runpod_job_id">,
  attempt: number,
  runpodJobId: string,
  spend: RunSpend = NO_SPEND,
): Promise<JobRow | null> {
  const cancelled = shows.cancelled(job.id, attempt);
  return byRun(
    job.runpod_job_id,
    runpodJobId,
    () =>
      guardedRow(
        db,
        cancelled,
        TRANSITION_SQL.cancelledRecordedRun,
        ...spent(spend),
        job.id,
        attempt,
        runpodJobId,
      ),
    () =>
      guardedRow(
        db,
        cancelled,
        TRANSITION_SQL.cancelledUnrecordedRun,
        ...spent(spend),
        runpodJobId,
        job.id,
        attempt,
      ),
  );
}

/**
 * cancelJob: a user's cancel of a job that has not finished; with `projects` (a scoped client
 * token's), only a job of one of them.
 */
export function cancelJob(
  db: D1Database,
  id: string,
  projects: readonly number[] | null = null,
): Promise<JobRow | null> {
  return projects === null
    ? guardedRow(db, shows.cancelled(id), TRANSITION_SQL.cancel, id)
    : guardedRow(
        db,
        shows.cancelled(id),
        TRANSITION_SQL.cancelInProjects,
        id,
        JSON.stringify(projects),
      );
}

/** reuse: a pending job completes with the copy of `sourceId`'s output at its own key. */
export function reuseOutput(
  db: D1Database,
  id: string,
  outputVideoKey: string,
  sourceId: string,
): Promise<JobRow | null> {
  return guardedRow(
    db,
    { id, shows: (row) => row.status === "complete" && row.reused_from === sourceId },
    TRANSITION_SQL.reuse,
    outputVideoKey,
    sourceId,
    id,
  );
}

/** recordProgress: raise the current attempt's progress (never backwards); it is news, too. */
export function recordProgress(
  db: D1Database,
  id: string,
  attempt: number,
  progress: number,
  pollAfterS: number,
): Promise<JobRow | null> {
  return guardedRow(
    db,
    shows.progressed(id, attempt, progress),
    TRANSITION_SQL.progress,
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
  return allRows(db, TRANSITION_SQL.retryByIds, JSON.stringify(ids));
}

export interface RetryFilter {
  errorPrefix: string;
  createdAfter: string;
  createdBefore: string;
  limit: number;
}

export function retryJobsByFilter(db: D1Database, filter: RetryFilter): Promise<JobRow[]> {
  return allRows(
    db,
    TRANSITION_SQL.retryByFilter,
    filter.createdAfter,
    filter.createdBefore,
    filter.errorPrefix,
    filter.errorPrefix,
    filter.limit,
  );
}

/** Pending jobs wanted for longer than `maxAgeS` and still never run to the end: `expired`. */
export function expirePendingJobs(
  db: D1Database,
  cutoff: string,
  error: string,
  limit: number,
): Promise<JobRow[]> {
  return allRows(db, TRANSITION_SQL.expirePending, error, cutoff, cutoff, limit);
}
