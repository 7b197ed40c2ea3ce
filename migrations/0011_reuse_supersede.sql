-- Migration: GPU seconds, never wasted. An export identical to one already rendered is copied
-- (reuse), one identical to a job still on its way waits for it (single flight, `follows`), and a
-- newer export under the same supersede key ends the older ones.
--
-- input_etag:    the input object's R2 ETag when the job was created.
-- params_hash:   SHA-256 of the canonical JSON of {type, input_video_key, params}: with the ETag
--                and the project, what makes two exports identical (shared/identity.ts).
-- reuse:         0 when the request said "reuse": false (the job neither reuses nor follows;
--                its own output may still serve later jobs).
-- supersede_key: the request's supersede key.
-- follows:       the identical job whose output this one takes: a complete one (reuse), or one
--                still on its way, which it waits for (single flight). Kept once the job was
--                reused; when the leader ends without an output, the follower follows another
--                identical job on its way, or none (it runs).
-- followers:     how many jobs followed this one (internal: the leader's end wakes them only
--                when there were any).
-- reused_from:   the complete job whose output was copied to this job's own key.
ALTER TABLE export_jobs ADD COLUMN input_etag TEXT;
ALTER TABLE export_jobs ADD COLUMN params_hash TEXT;
ALTER TABLE export_jobs ADD COLUMN reuse INTEGER NOT NULL DEFAULT 1;
ALTER TABLE export_jobs ADD COLUMN supersede_key TEXT;
ALTER TABLE export_jobs ADD COLUMN follows TEXT;
ALTER TABLE export_jobs ADD COLUMN followers INTEGER NOT NULL DEFAULT 0;
ALTER TABLE export_jobs ADD COLUMN reused_from TEXT;

-- Identical jobs of a project: the newest complete one (reuse), an active one (single flight),
-- one range each.
CREATE INDEX IF NOT EXISTS idx_export_jobs_identical
    ON export_jobs(project_id, params_hash, input_etag, status, completed_at)
    WHERE params_hash IS NOT NULL;
-- A project's jobs under a supersede key, by status (the supersede statement's range).
CREATE INDEX IF NOT EXISTS idx_export_jobs_supersede
    ON export_jobs(project_id, supersede_key, status)
    WHERE supersede_key IS NOT NULL;
-- A leader's followers.
CREATE INDEX IF NOT EXISTS idx_export_jobs_follows
    ON export_jobs(follows, status)
    WHERE follows IS NOT NULL;

-- A follower counts on its leader: the leader's end then wakes it.
CREATE TRIGGER IF NOT EXISTS trg_followed AFTER INSERT ON export_jobs
WHEN NEW.follows IS NOT NULL
BEGIN
    UPDATE export_jobs SET followers = followers + 1 WHERE id = NEW.follows;
END;

-- …also a follower that moved to another leader (its first one ended without an output).
CREATE TRIGGER IF NOT EXISTS trg_refollowed AFTER UPDATE OF follows ON export_jobs
WHEN NEW.follows IS NOT NULL AND NEW.follows IS NOT OLD.follows
BEGIN
    UPDATE export_jobs SET followers = followers + 1 WHERE id = NEW.follows;
END;

-- A leader that ended (complete, or error: failed for good, cancelled, superseded, expired) makes
-- its held followers due now, in the statement that ended it: the consumer sends their messages
-- at once (shared/job-state.ts), and if that send is lost the reconciler's lost-message lease
-- re-enqueues them. Their consumer batch reuses the leader's output or releases them as ordinary
-- jobs. Bookkeeping: a new version, no timeline event.
CREATE TRIGGER IF NOT EXISTS trg_leader_ended AFTER UPDATE OF status ON export_jobs
WHEN NEW.followers > 0 AND NEW.status IN ('complete', 'error')
  AND OLD.status NOT IN ('complete', 'error')
BEGIN
    UPDATE export_jobs
    SET due_at = strftime('%Y-%m-%d %H:%M:%f', 'now'), version = version + 1, last_event = NULL
    WHERE follows = NEW.id AND status = 'pending';
END;

-- The timeline trigger of migration 0005, with the details of v3's events: `superseded` says by
-- which job, `reused` whose output was copied.
DROP TRIGGER IF EXISTS trg_job_events_update;
CREATE TRIGGER IF NOT EXISTS trg_job_events_update AFTER UPDATE OF version ON export_jobs
WHEN NEW.last_event IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO export_job_events (job_id, version, type, at, attempt, runpod_job_id, detail)
    VALUES (
        NEW.id, NEW.version, NEW.last_event, strftime('%Y-%m-%d %H:%M:%f', 'now'), NEW.attempt,
        CASE WHEN NEW.last_event IN ('retried', 'replayed', 'reused') THEN NULL
             ELSE COALESCE(NEW.runpod_job_id, OLD.runpod_job_id) END,
        CASE
            WHEN NEW.last_event IN ('submit_failed', 'failed', 'expired', 'superseded') THEN NEW.error
            WHEN NEW.last_event = 'progress' THEN CAST(NEW.progress AS TEXT)
            WHEN NEW.last_event = 'released' THEN 'not the job''s fault; retry_count unchanged'
            WHEN NEW.last_event = 'reused' THEN 'output of ' || NEW.reused_from
            ELSE NULL
        END
    );
END;

-- The run-ended trigger of migration 0010, also for a run whose job was superseded (its figures
-- come later, as late news, like a cancelled one's).
DROP TRIGGER IF EXISTS trg_run_ended;
CREATE TRIGGER IF NOT EXISTS trg_run_ended AFTER UPDATE OF version ON export_jobs
WHEN NEW.last_event IN ('completed', 'failed', 'cancelled', 'superseded')
  AND COALESCE(OLD.runpod_job_id, NEW.runpod_job_id) IS NOT NULL
BEGIN
    UPDATE export_runs
    SET ended_at = strftime('%Y-%m-%d %H:%M:%f', 'now'), outcome = NEW.last_event,
        execution_ms = NEW.gpu_ms - OLD.gpu_ms, delay_ms = NEW.queue_ms - OLD.queue_ms
    WHERE runpod_job_id = COALESCE(OLD.runpod_job_id, NEW.runpod_job_id) AND ended_at IS NULL;
END;
