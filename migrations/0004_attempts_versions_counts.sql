-- Migration: attempts that never repeat, a version per row, status counts kept by triggers.

-- attempt: raised by every claim (1 for the first run); webhook and progress URLs carry it and
-- every guarded transition names it, so news of an older attempt changes nothing. Replay and
-- operator retry reset retry_count, never attempt.
ALTER TABLE export_jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
UPDATE export_jobs SET attempt = retry_count + (status = 'processing');

-- version: raised by every change of the row, so a client keeping the highest version per job
-- shows the truth whatever order answers and live messages arrive in.
ALTER TABLE export_jobs ADD COLUMN version INTEGER NOT NULL DEFAULT 1;

-- pending_since: when the job last became wanted (created, replayed, retried by an operator);
-- a job still pending PENDING_MAX_AGE_S after it ends `error` ('expired: …').
ALTER TABLE export_jobs ADD COLUMN pending_since TEXT;
UPDATE export_jobs SET pending_since = created_at;

-- Jobs by status for GET /stats without reading export_jobs: one row per status, kept in the
-- same transaction as every insert, status change and delete by the triggers below.
CREATE TABLE IF NOT EXISTS job_counts (
    status TEXT PRIMARY KEY,
    n INTEGER NOT NULL
);
INSERT INTO job_counts (status, n) VALUES ('pending', 0), ('processing', 0), ('complete', 0), ('error', 0);
UPDATE job_counts SET n = (SELECT COUNT(*) FROM export_jobs WHERE export_jobs.status = job_counts.status);

CREATE TRIGGER IF NOT EXISTS trg_job_counts_insert AFTER INSERT ON export_jobs
BEGIN
    UPDATE job_counts SET n = n + 1 WHERE status = NEW.status;
END;

CREATE TRIGGER IF NOT EXISTS trg_job_counts_update AFTER UPDATE OF status ON export_jobs
WHEN OLD.status <> NEW.status
BEGIN
    UPDATE job_counts SET n = n - 1 WHERE status = OLD.status;
    UPDATE job_counts SET n = n + 1 WHERE status = NEW.status;
END;

CREATE TRIGGER IF NOT EXISTS trg_job_counts_delete AFTER DELETE ON export_jobs
BEGIN
    UPDATE job_counts SET n = n - 1 WHERE status = OLD.status;
END;
