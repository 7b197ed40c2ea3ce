-- Migration: retention. A job that finished (complete or error) more than ARCHIVE_AFTER_S ago is
-- written to R2 (`archive/export_jobs/<id>.json`) by the reconciler and then deleted from D1
-- together with its events and dead letters (consumer/reconciler.ts, shared/archive.ts).

-- finished_at: when the job reached complete or error; NULL while it is pending or processing.
-- Written by the very UPDATE that ends a job (fail*, complete*, cancel*, expirePending) and cleared
-- by those that put it back to pending (operator retry, replay), not by a trigger: a column in an
-- UPDATE that already rewrites the row costs no row, a trigger's second UPDATE of the row costs 2
-- more per finished job (the row again and its index entry). Measured with D1's
-- meta.rows_written: the happy path (insert, claim, record, a progress crossing 25, complete) went
-- from 31 to 32 rows, the 1 being the entry of the index below; a trigger would make it 34. A
-- failure that re-pends the job writes 7 rows as before (NULL stays NULL: no index entry).
ALTER TABLE export_jobs ADD COLUMN finished_at TEXT;

-- Jobs that finished before this migration: complete ones when they completed, error ones at
-- their last event (the one that ended them), else when they last started or were created.
UPDATE export_jobs
SET finished_at = COALESCE(
        completed_at,
        (SELECT MAX(e.at) FROM export_job_events e WHERE e.job_id = export_jobs.id),
        started_at,
        created_at)
WHERE status IN ('complete', 'error');

-- The archive's pick walks finished jobs oldest first, keyset-paged on (finished_at, id), up to
-- the cutoff. Partial: pending and processing jobs (finished_at NULL) cost this index nothing, so
-- it is written once when a job ends and once when it is deleted.
CREATE INDEX IF NOT EXISTS idx_export_jobs_finished
    ON export_jobs(finished_at, id) WHERE finished_at IS NOT NULL;

-- GET /stats `archived`: jobs archived (and deleted from D1) so far. One row, raised in the same
-- transaction as the deletes by the number of rows they delete, so it is exact under retries and
-- overlapping passes, and read without listing R2.
CREATE TABLE IF NOT EXISTS archive_counts (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    archived INTEGER NOT NULL
);
INSERT OR IGNORE INTO archive_counts (id, archived) VALUES (1, 0);
