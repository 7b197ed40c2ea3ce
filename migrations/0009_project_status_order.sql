-- Migration: a project's jobs of one status, newest first, as one index range.
--
-- GET /exports?project_id=…&active=true (and the live snapshot's active jobs, and the live
-- queue message's pending ones) read a project's jobs of a status newest first, keyset-paged on
-- (created_at, id). Through (project_id, status) alone every active job of the project was read
-- and sorted for each page: 50,000 pending jobs in one project made one call 712k VM steps. With
-- (created_at, id) after the equality columns each (project, status) range is walked newest
-- first from the cursor, and SQLite stops it once LIMIT rows are in (the sort left only merges
-- the ranges of the listed projects and statuses: at most LIMIT rows each).
CREATE INDEX IF NOT EXISTS idx_export_jobs_project_status_created
    ON export_jobs(project_id, status, created_at, id);

-- (project_id, status) is a prefix of the index above, and its two listings were its only users
-- (test/workers/query-plans.test.ts plans every statement): dropped. Every index costs a write
-- per row change that moves its key; this one's key moves exactly when the dropped one's did
-- (a status change: project_id, created_at and id never change), so the exchange costs no row
-- written per job, only wider entries (~40 bytes of created_at and id each).
DROP INDEX IF EXISTS idx_export_jobs_project_status;
