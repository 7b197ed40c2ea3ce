// What `due_at` means on `export_jobs`, and the only way statements set or test it.
//
// One column, five meanings; the row's status (for processing, also whether a run is recorded)
// says which:
//
//   status               due_at   meaning
//   pending              NULL     held: waiting in the dispatcher for a slot (a follower:
//                                 waiting for its leader, migration 0011)
//   pending              a time   retry time: when it may be tried (again); once it is
//                                 PENDING_GRACE_S past, its queue message looks lost
//   processing, no run   a time   claim deadline: past it, the attempt's run counts as lost
//   processing, a run    a time   poll time: past it, the reconciler asks RunPod
//   error 'cancelled'    a time   cancel retry: RunPod's /cancel is to be tried again
//   or 'superseded by'
//   complete, error      NULL     nothing due
//
// Who sets which: insert, release, the seed's CASE (re-pended), operator retry, replay and the
// lost-message lease a retry time; hold holds; claim a claim deadline; recordRun a poll time;
// a progress report and the processing lease either of those two; supersede (for a job with a
// run), markCancelUnconfirmed and its lease a cancel retry; a leader's end (migration 0011's
// trigger) its held followers' retry time; every other end, and a confirmed cancel, nothing due.
//
// Each meaning has its helpers below, named for it: SET fragments (`due_at = …`) and WHERE
// fragments (`due_at <= …`, `due_at IS NULL`). Several give the same text (`held` and
// `nothingDue` are both `due_at = NULL`): the name is the point, so that a reader of a statement
// knows which meaning it sets or tests. A test always stands beside the status that gives it its
// meaning (so the leases and the held audit reach their rows through the (status, due_at)
// index). `ORDER BY due_at` (the longest due first) neither sets nor tests, and is written out.
//
// Explicit helpers rather than one column per meaning: no migration, the same indexes and query
// plans, and this one module says what the column means.

import { NOW, type NOW_PLUS } from "../time.ts";

/** A time: now (NOW) or now moved by a bound "+N seconds" parameter (NOW_PLUS). */
type At = typeof NOW | typeof NOW_PLUS;

const setTo = (at: At | "NULL") => `due_at = ${at}`;
const reachedBy = (at: At) => `due_at <= ${at}`;

// ---------------------------------------------------------------------------------------------
// pending: held (NULL) or its retry time
// ---------------------------------------------------------------------------------------------

/** SET: a pending job is held — the dispatcher keeps it waiting for a slot. */
export const held = setTo("NULL");

/** WHERE (with `status = 'pending'`): the job is held. */
export const isHeld = "due_at IS NULL";

/** INSERT's value for a new job's due_at: pending, its retry time is now (tried at once). */
export const firstTry: At = NOW;

/** SET: a pending job's retry time, when it may be tried (again). */
export const retryAt = (at: At) => setTo(at);

/**
 * SET, for the seed's CASE: the job is re-pended when `repends` holds (on the old row), with its
 * retry time `at`; otherwise it ends, and nothing is due.
 */
export const retryAtOrNothingDue = (repends: string, at: At) =>
  `due_at = CASE WHEN ${repends} THEN ${at} ELSE NULL END`;

/** WHERE (with `status = 'pending'`): the retry time has come by `at`. */
export const retryDueBy = (at: At) => reachedBy(at);

// ---------------------------------------------------------------------------------------------
// processing: the claim deadline (no run recorded) or the poll time (a run recorded)
// ---------------------------------------------------------------------------------------------

/** SET, at the claim: no run is recorded yet; past `at`, the attempt's run counts as lost. */
export const claimDeadline = (at: At) => setTo(at);

/** SET, once the attempt's run is recorded: the reconciler asks RunPod about it after `at`. */
export const pollAt = (at: At) => setTo(at);

/**
 * SET, by a statement that does not look whether a run is recorded (a progress report, the
 * reconciler's lease): the claim deadline without a run, the poll time with one.
 */
export const claimDeadlineOrPollAt = (at: At) => setTo(at);

/** WHERE (with `status = 'processing'`): the claim deadline or the poll time has come by `at`. */
export const claimDeadlineOrPollDueBy = (at: At) => reachedBy(at);

// ---------------------------------------------------------------------------------------------
// error 'cancelled': a RunPod /cancel to retry; complete and error otherwise: nothing due
// ---------------------------------------------------------------------------------------------

/** SET: RunPod's /cancel of a cancelled job's run is to be tried again at `at`. */
export const cancelRetryAt = (at: At) => setTo(at);

/** WHERE (with `status = 'error'`): a cancel retry is pending. */
export const hasCancelRetry = "due_at IS NOT NULL";

/** WHERE (with `status = 'error'`): the cancel retry's time has come by `at`. */
export const cancelRetryDueBy = (at: At) => reachedBy(at);

/** SET: the job finished (or its cancel retry is done): nothing is due. */
export const nothingDue = setTo("NULL");

/** WHERE (with `status IN ('complete', 'error')`): nothing is due, no cancel retry pending. */
export const isNothingDue = "due_at IS NULL";
