-- Migration: a job's timeline, written in the same transaction as each change it records.
--
-- Every UPDATE of export_jobs names the event it is (`last_event`, NULL for bookkeeping such as a
-- reconciler lease); the trigger below turns it into a row of export_job_events inside the same
-- statement, so no transition can forget its event and no event exists without its change.
-- Keyed by (job_id, version, type, ref): events come out oldest first through the primary key
-- alone; `ref` tells apart events that change no row (a dead letter: its message id).
ALTER TABLE export_jobs ADD COLUMN last_event TEXT;

CREATE TABLE IF NOT EXISTS export_job_events (
    job_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    type TEXT NOT NULL,
    at TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    runpod_job_id TEXT,
    detail TEXT,
    ref TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, version, type, ref)
) WITHOUT ROWID;

CREATE TRIGGER IF NOT EXISTS trg_job_events_insert AFTER INSERT ON export_jobs
BEGIN
    INSERT INTO export_job_events (job_id, version, type, at, attempt)
    VALUES (NEW.id, NEW.version, 'created', NEW.created_at, NEW.attempt);
END;

CREATE TRIGGER IF NOT EXISTS trg_job_events_update AFTER UPDATE OF version ON export_jobs
WHEN NEW.last_event IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO export_job_events (job_id, version, type, at, attempt, runpod_job_id, detail)
    VALUES (
        NEW.id, NEW.version, NEW.last_event, strftime('%Y-%m-%d %H:%M:%f', 'now'), NEW.attempt,
        CASE WHEN NEW.last_event IN ('retried', 'replayed') THEN NULL
             ELSE COALESCE(NEW.runpod_job_id, OLD.runpod_job_id) END,
        CASE
            WHEN NEW.last_event IN ('submit_failed', 'failed', 'expired') THEN NEW.error
            WHEN NEW.last_event = 'progress' THEN CAST(NEW.progress AS TEXT)
            WHEN NEW.last_event = 'released' THEN 'not the job''s fault; retry_count unchanged'
            ELSE NULL
        END
    );
END;

-- A dead letter is in the job's timeline once per message (a redelivered letter inserts nothing).
CREATE TRIGGER IF NOT EXISTS trg_job_events_dead_letter AFTER INSERT ON dead_letters
WHEN NEW.job_id IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO export_job_events (job_id, version, type, at, attempt, detail, ref)
    SELECT id, version, 'dead_lettered', NEW.received_at, attempt,
           'message ' || NEW.id || ' (' || NEW.reason || ')', NEW.id
    FROM export_jobs WHERE id = NEW.job_id;
END;
