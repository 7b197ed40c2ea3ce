// Every statement on `dead_letters` (and the job side of a replay).

import { retryTransient } from "../d1-retry.ts";
import { ARCHIVED_PAIRS } from "./jobs/archive.ts";
import * as due from "./jobs/due.ts";
import { type JobRow, type JobStatus, notEndedByRequest } from "./jobs/row.ts";
import { NOW } from "./time.ts";

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

export const DEAD_LETTER_SQL = {
  insert: `INSERT INTO dead_letters (id, queue, reason, body, attempts, received_at, job_id, job_status)
           VALUES (?, ?, ?, ?, ?, ${NOW}, ?, (SELECT status FROM export_jobs WHERE id = ?))
           ON CONFLICT (id) DO NOTHING`,
  list: `SELECT * FROM dead_letters WHERE (received_at, id) < (?, ?)
         ORDER BY received_at DESC, id DESC LIMIT ?`,
  byId: "SELECT * FROM dead_letters WHERE id = ?",
  delete: "DELETE FROM dead_letters WHERE id = ?",
  // Replay, one transaction: mark the letter (only one not yet replayed whose job is waiting or
  // ended in a failure, never a cancelled one), then reset the job that this very replay marked.
  markReplayed: `UPDATE dead_letters SET replayed_at = ?
                 WHERE id = ? AND replayed_at IS NULL AND job_id IS NOT NULL
                   AND EXISTS (SELECT 1 FROM export_jobs j
                               WHERE j.id = dead_letters.job_id
                                 AND j.status IN ('pending', 'error')
                                 AND ${notEndedByRequest("j.error")})
                 RETURNING *`,
  replayJob: `UPDATE export_jobs
              SET status = 'pending', runpod_job_id = NULL, retry_count = 0, error = NULL,
                  progress = 0, started_at = NULL, completed_at = NULL, finished_at = NULL,
                  ${due.retryAt(NOW)}, pending_since = ${NOW}, version = version + 1,
                  last_event = 'replayed'
              WHERE id = (SELECT job_id FROM dead_letters WHERE id = ? AND replayed_at = ?)
                AND status IN ('pending', 'error') AND ${notEndedByRequest()}
              RETURNING *`,
  // Retention: the dead letters of the jobs a batch archives (idx_dead_letters_job), in the same
  // transaction as the jobs' delete and only for jobs still as they were archived.
  deleteArchived: `DELETE FROM dead_letters
                   WHERE job_id IN (SELECT id FROM export_jobs WHERE ${ARCHIVED_PAIRS})`,
} as const;

const FIRST_PAGE = ["9999-12-31", ""] as const;

/**
 * Records dead letters in one D1 transaction, idempotent on message id, each with its job's
 * status at that moment. The job itself is left as it is: a job still `pending` (never
 * dispatched, or waiting out a retry) is the reconciler's to re-enqueue and, after
 * PENDING_MAX_AGE_S, to expire; a dead letter is no verdict on the job, and a later one can never
 * undo a replay.
 */
export async function recordDeadLetters(
  db: D1Database,
  letters: readonly NewDeadLetter[],
): Promise<void> {
  if (letters.length === 0) return;
  await retryTransient(() =>
    db.batch(
      letters.map((letter) =>
        db
          .prepare(DEAD_LETTER_SQL.insert)
          .bind(
            letter.id,
            letter.queue,
            letter.reason,
            letter.body,
            letter.attempts,
            letter.job_id,
            letter.job_id,
          ),
      ),
    ),
  );
}

export async function listDeadLetters(
  db: D1Database,
  limit: number,
  after: { created_at: string; id: string } | null,
): Promise<DeadLetterRow[]> {
  const cursor = after ? [after.created_at, after.id] : FIRST_PAGE;
  const { results } = await retryTransient(() =>
    db
      .prepare(DEAD_LETTER_SQL.list)
      .bind(...cursor, limit + 1)
      .all<DeadLetterRow>(),
  );
  return results;
}

export function getDeadLetter(db: D1Database, id: string): Promise<DeadLetterRow | null> {
  return retryTransient(() => db.prepare(DEAD_LETTER_SQL.byId).bind(id).first<DeadLetterRow>());
}

export async function deleteDeadLetter(db: D1Database, id: string): Promise<boolean> {
  const result = await retryTransient(() => db.prepare(DEAD_LETTER_SQL.delete).bind(id).run());
  return result.meta.changes > 0;
}

/**
 * replay: mark the dead letter replayed and put its job back to `pending` with its retry budget
 * restored (a fresh attempt comes with the next claim). Null when the letter does not qualify
 * (the caller tells why).
 */
export async function replayDeadLetter(
  db: D1Database,
  id: string,
): Promise<{ deadLetter: DeadLetterRow; job: JobRow } | null> {
  // A token unique to this replay: the job is reset only by the replay that marked the letter.
  const token = `${new Date().toISOString().replace("T", " ").replace("Z", "")}:${crypto.randomUUID()}`;
  const [marked, reset] = await retryTransient(() =>
    db.batch([
      db.prepare(DEAD_LETTER_SQL.markReplayed).bind(token, id),
      db.prepare(DEAD_LETTER_SQL.replayJob).bind(id, token),
    ]),
  );
  const deadLetter = (marked?.results as DeadLetterRow[] | undefined)?.[0];
  const job = (reset?.results as JobRow[] | undefined)?.[0];
  return deadLetter && job ? { deadLetter, job } : null;
}
