// Retention's statements on `export_jobs` (shared/archive.ts composes them with the events, dead
// letters and counts): which jobs are archivable, and the guard of an archived batch.

import { NOW_PLUS, seconds } from "../time.ts";
import * as due from "./due.ts";
import { allRows, type JobRow } from "./row.ts";

/**
 * The rows of a batch about to be archived, exactly as they were archived: `(id, version)` pairs
 * of one JSON array parameter (`[{"id":…,"version":…}]`). Every change raises version, so a job
 * that changed since it was read (an operator's retry) matches no pair and is neither counted nor
 * deleted.
 */
export const ARCHIVED_PAIRS = `(id, version) IN (SELECT value ->> '$.id', value ->> '$.version'
                                                 FROM json_each(?))`;

export const ARCHIVE_SQL = {
  // Jobs that finished before the cutoff (now − ARCHIVE_AFTER_S), oldest first, keyset-paged
  // within a pass on (finished_at, id) so that a job that cannot be archived (its put failed)
  // never holds up the ones after it. A plain read, no lease: the put is idempotent and the
  // delete is guarded by version (ARCHIVED_PAIRS), so two passes at once at worst put the same
  // object twice. A job whose RunPod /cancel is still to be retried (due_at set) waits for it.
  archivable: `SELECT * FROM export_jobs
               WHERE (finished_at, id) > (?, ?) AND finished_at < ${NOW_PLUS}
                 AND +status IN ('complete', 'error') AND ${due.isNothingDue}
               ORDER BY finished_at, id LIMIT ?`,
  // Which of a batch are still as they were read, in the same transaction as reading their events.
  archivedUnchanged: `SELECT id FROM export_jobs WHERE ${ARCHIVED_PAIRS}`,
  // RETURNING: D1's meta.changes would count the job_counts trigger's rows too.
  deleteArchived: `DELETE FROM export_jobs WHERE ${ARCHIVED_PAIRS} RETURNING id`,
} as const;

/** The keyset start of a pass: sorts before every stored timestamp. */
export const ARCHIVE_START = { finished_at: "", id: "" };

/** Up to `limit` jobs that finished more than `archiveAfterS` ago, after `after`, oldest first. */
export function archivableJobs(
  db: D1Database,
  archiveAfterS: number,
  after: { finished_at: string; id: string },
  limit: number,
): Promise<JobRow[]> {
  return allRows(
    db,
    ARCHIVE_SQL.archivable,
    after.finished_at,
    after.id,
    seconds(-archiveAfterS),
    limit,
  );
}
