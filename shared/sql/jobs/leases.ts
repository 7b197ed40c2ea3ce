// Bookkeeping on `export_jobs`: changes that are no transition (the status stays, no timeline
// event: `last_event = NULL`), only `due_at` and `version` move. The reconciler's leases, the
// dispatcher's holds and the audit of them, and the RunPod cancels the reconciler is to retry.
//
// A lease is one statement that picks due jobs *and* pushes their due_at forward, through the
// (status, due_at) index, so two reconciler passes running at once never pick the same job.
// What due_at means for each status, and the helpers that set and test it: due.ts.

import { retryTransient } from "../../d1-retry.ts";
import { NOW, NOW_PLUS, seconds } from "../time.ts";
import * as due from "./due.ts";
import { allRows, endedByRequest, firstRow, type JobRow } from "./row.ts";

/**
 * WHERE, on a follower's row: its leader is still on its way. A follower is held only then: one
 * whose leader ended between its batch's read and its hold keeps the due time the leader's end
 * gave it (migration 0011), so the lost-message lease is its net.
 */
export const LEADER_ON_ITS_WAY = `EXISTS (SELECT 1 FROM export_jobs l
                                          WHERE l.id = export_jobs.follows
                                            AND l.status IN ('pending', 'processing'))`;

/** What every bookkeeping change also sets: a new version, and no timeline event. */
const BOOKKEEPING = "version = version + 1, last_event = NULL";

/**
 * A lease: up to `?` jobs of `status` that `dueTest` picks, the longest due first, their due_at
 * moved by `set` in the same statement (`+status` keeps the outer match off the index).
 */
const lease = (status: string, set: string, dueTest: string) =>
  `UPDATE export_jobs SET ${set}, ${BOOKKEEPING}
   WHERE id IN (SELECT id FROM export_jobs
                WHERE status = '${status}' AND ${dueTest}
                ORDER BY due_at LIMIT ?)
     AND +status = '${status}'
   RETURNING *`;

export const LEASE_SQL = {
  leaseLostPending: lease("pending", due.retryAt(NOW), due.retryDueBy(NOW_PLUS)),
  // Jobs the dispatcher keeps waiting for a slot: due_at NULL on a pending row means "the
  // dispatcher holds it", so the lost-message lease above never takes it (once per wait). Only a
  // job that is due: one re-pended or released meanwhile (its due_at ahead) waits out its delay.
  hold: `UPDATE export_jobs SET ${due.held}, runpod_endpoint_id = ?, ${BOOKKEEPING}
         WHERE id IN (SELECT value FROM json_each(?)) AND +status = 'pending'
           AND ${due.retryDueBy(NOW)}
           AND (follows IS NULL OR ${LEADER_ON_ITS_WAY})
         RETURNING *`,
  // The reconciler's audit of held jobs against the dispatcher, keyset-paged on rowid (the
  // order of the (status, due_at) index within due_at IS NULL): a read, no lease. A follower is
  // held by its leader, not the dispatcher: its leader's status comes along (a primary-key read).
  held: `SELECT rowid AS seq, id, runpod_endpoint_id AS endpoint,
                (SELECT l.status FROM export_jobs l WHERE l.id = export_jobs.follows) AS leader
         FROM export_jobs
         WHERE status = 'pending' AND ${due.isHeld} AND rowid > ?
         ORDER BY rowid LIMIT ?`,
  // A follower whose leader ended without an output to reuse (it failed for good, was cancelled,
  // superseded or expired; or it is gone) follows another identical job still on its way, or
  // none: then it is an ordinary job, offered to the dispatcher, its wait counted from now. One
  // job per statement, so that the second of two released followers follows the first.
  refollow: `UPDATE export_jobs
             SET follows = (SELECT e.id FROM export_jobs e
                            WHERE e.project_id = export_jobs.project_id
                              AND e.params_hash = export_jobs.params_hash
                              AND e.input_etag = export_jobs.input_etag
                              AND e.status IN ('pending', 'processing') AND e.follows IS NULL
                              AND e.id <> export_jobs.id
                            LIMIT 1),
                 pending_since = ${NOW}, ${BOOKKEEPING}
             WHERE id = ? AND status = 'pending' AND follows IS NOT NULL
             RETURNING *`,
  // The followers still waiting for a leader that just ended (woken by migration 0011's trigger
  // in the statement that ended it): their messages are sent at once.
  followersOf: `SELECT id FROM export_jobs
                WHERE follows IN (SELECT value FROM json_each(?)) AND status = 'pending'`,
  leaseDueProcessing: lease(
    "processing",
    due.claimDeadlineOrPollAt(NOW_PLUS),
    due.claimDeadlineOrPollDueBy(NOW),
  ),
  // RunPod's /cancel failed after a user's cancel: due_at on an `error` row means "cancel its run
  // again"; the reconciler picks such rows through (status, due_at) and clears due_at when done.
  cancelUnconfirmed: `UPDATE export_jobs SET ${due.cancelRetryAt(NOW_PLUS)}, ${BOOKKEEPING}
                      WHERE id = ? AND status = 'error' AND ${endedByRequest()}
                        AND runpod_job_id = ?
                      RETURNING *`,
  // A new job held by another endpoint than its type's first (that one was down): D1 names it.
  recordHolder: `UPDATE export_jobs SET runpod_endpoint_id = ?, ${BOOKKEEPING}
                 WHERE id = ? AND status = 'pending' AND attempt = 0
                   AND runpod_endpoint_id IS NOT ?
                 RETURNING *`,
  // A run whose /run answer came after its job was cancelled or superseded (claimed, not yet
  // recorded): it becomes the job's run, with a cancel retry due, so that a /cancel that fails is
  // tried again by the reconciler (and its GPU time reaches its record).
  adoptUnwantedRun: `UPDATE export_jobs
                     SET runpod_job_id = ?, ${due.cancelRetryAt(NOW_PLUS)}, ${BOOKKEEPING}
                     WHERE id = ? AND status = 'error' AND ${endedByRequest()} AND attempt = ?
                       AND runpod_job_id IS NULL
                     RETURNING *`,
  cancelConfirmed: `UPDATE export_jobs SET ${due.nothingDue}, ${BOOKKEEPING}
                    WHERE id = ? AND status = 'error' AND ${due.hasCancelRetry}
                    RETURNING *`,
  leaseUnconfirmedCancels: lease("error", due.cancelRetryAt(NOW_PLUS), due.cancelRetryDueBy(NOW)),
} as const;

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
  return allRows(db, LEASE_SQL.leaseLostPending, seconds(-graceS), limit);
}

/**
 * Pending jobs the dispatcher of `endpointId` keeps waiting (null: RUNPOD_ENDPOINT_ID's): their
 * due_at cleared, the dispatcher named (see LEASE_SQL.hold).
 */
export function holdJobs(
  db: D1Database,
  ids: readonly string[],
  endpointId: string | null = null,
): Promise<JobRow[]> {
  if (ids.length === 0) return Promise.resolve([]);
  return allRows(db, LEASE_SQL.hold, endpointId, JSON.stringify(ids));
}

/** A held job as the audit reads it: `leader`, a follower's leader's status (null: none, or gone). */
export interface HeldJob {
  seq: number;
  id: string;
  /** The endpoint whose dispatcher holds it (null: RUNPOD_ENDPOINT_ID's). */
  endpoint: string | null;
  leader: JobRow["status"] | null;
}

/** A page of held jobs after rowid `after` (0 for the first page), for the reconciler's audit. */
export async function heldJobs(db: D1Database, after: number, limit: number): Promise<HeldJob[]> {
  const { results } = await retryTransient(() =>
    db.prepare(LEASE_SQL.held).bind(after, limit).all<HeldJob>(),
  );
  return results;
}

/** A released follower: it follows another identical job on its way, or none. */
export function refollow(db: D1Database, id: string): Promise<JobRow | null> {
  return firstRow(db, LEASE_SQL.refollow, id);
}

/** The pending followers of these (ended) leaders. */
export async function followersOf(db: D1Database, leaderIds: readonly string[]): Promise<string[]> {
  if (leaderIds.length === 0) return [];
  const { results } = await retryTransient(() =>
    db.prepare(LEASE_SQL.followersOf).bind(JSON.stringify(leaderIds)).all<{ id: string }>(),
  );
  return results.map((row) => row.id);
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
  return allRows(db, LEASE_SQL.leaseDueProcessing, seconds(leaseS), limit);
}

/** RunPod's /cancel of a cancelled job's run failed: try it again in `retryInS`. */
export function markCancelUnconfirmed(
  db: D1Database,
  id: string,
  runpodJobId: string,
  retryInS: number,
): Promise<JobRow | null> {
  return firstRow(db, LEASE_SQL.cancelUnconfirmed, seconds(retryInS), id, runpodJobId);
}

/** A new job's holder, when not its type's first endpoint (failover at creation). */
export function recordHolder(
  db: D1Database,
  id: string,
  endpointId: string,
): Promise<JobRow | null> {
  return firstRow(db, LEASE_SQL.recordHolder, endpointId, id, endpointId);
}

/** A run that came after its job was cancelled or superseded: recorded, its cancel retry due. */
export function adoptUnwantedRun(
  db: D1Database,
  id: string,
  attempt: number,
  runpodJobId: string,
  retryInS: number,
): Promise<JobRow | null> {
  return firstRow(db, LEASE_SQL.adoptUnwantedRun, runpodJobId, seconds(retryInS), id, attempt);
}

/** RunPod's /cancel went through (or RunPod forgot the run): nothing left to retry. */
export function markCancelConfirmed(db: D1Database, id: string): Promise<JobRow | null> {
  return firstRow(db, LEASE_SQL.cancelConfirmed, id);
}

/** Cancelled jobs whose RunPod /cancel is due to be tried again, leased for `leaseS`. */
export function leaseUnconfirmedCancels(
  db: D1Database,
  leaseS: number,
  limit: number,
): Promise<JobRow[]> {
  return allRows(db, LEASE_SQL.leaseUnconfirmedCancels, seconds(leaseS), limit);
}
