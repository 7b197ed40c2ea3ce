-- Migration: endpoints. A job records the RunPod endpoint of its current attempt (set by the
-- claim: status polls, cancels and heals use it) and, while it waits, the endpoint whose
-- dispatcher holds it (set by the hold: the reconciler's audit asks that dispatcher). NULL, on
-- rows from before: RUNPOD_ENDPOINT_ID.
ALTER TABLE export_jobs ADD COLUMN runpod_endpoint_id TEXT;

-- A run's record names the endpoint it was submitted to.
DROP TRIGGER IF EXISTS trg_run_recorded;
CREATE TRIGGER IF NOT EXISTS trg_run_recorded AFTER UPDATE OF runpod_job_id ON export_jobs
WHEN NEW.runpod_job_id IS NOT NULL AND OLD.runpod_job_id IS NOT NEW.runpod_job_id
BEGIN
    INSERT OR IGNORE INTO export_runs
        (runpod_job_id, job_id, attempt, endpoint_id, project_id, user_id, submitted_at)
    VALUES (NEW.runpod_job_id, NEW.id, NEW.attempt, NEW.runpod_endpoint_id, NEW.project_id,
            NEW.user_id, strftime('%Y-%m-%d %H:%M:%f', 'now'));
END;
