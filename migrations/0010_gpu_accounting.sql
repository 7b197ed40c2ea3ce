-- Migration: GPU seconds, counted. Every run has a record; a job counts the GPU and queue time of
-- its runs; per-day aggregates answer GET /usage without reading jobs, and outlive archival.
--
-- gpu_ms / queue_ms: RunPod's executionTime / delayTime of the job's runs, failed ones included,
-- as known when each run's news changed the job (the transition's own UPDATE adds them: no extra
-- statement). News that comes after the job moved on reaches export_runs and usage_daily only.
ALTER TABLE export_jobs ADD COLUMN gpu_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE export_jobs ADD COLUMN queue_ms INTEGER NOT NULL DEFAULT 0;

-- One row per run RunPod accepted (and the pipeline learned of), written by the triggers below
-- in the statements that record the run and that end it. Not deleted by archival: it is billing.
CREATE TABLE IF NOT EXISTS export_runs (
    runpod_job_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    -- The endpoint the run was submitted to; NULL: RUNPOD_ENDPOINT_ID.
    endpoint_id TEXT,
    project_id INTEGER NOT NULL,
    user_id INTEGER,
    submitted_at TEXT NOT NULL,
    ended_at TEXT,
    -- completed, failed, cancelled (the job's event that ended the run), or what late news said.
    outcome TEXT,
    delay_ms INTEGER,
    execution_ms INTEGER,
    -- Execution time learned from news that came after the job moved on (a cancelled or
    -- superseded run's webhook, a duplicate run): it reaches usage_daily through this column,
    -- since the job's row, whose gpu_ms feeds usage otherwise, no longer changes.
    late_ms INTEGER NOT NULL DEFAULT 0
);
-- A job's runs, for its usage detail and the archive.
CREATE INDEX IF NOT EXISTS idx_export_runs_job ON export_runs(job_id, attempt);

-- Per UTC day and key (a project, and a user when the job names one): exports created, terminal
-- transitions, and the execution time of runs that ended that day. GET /usage reads one range.
CREATE TABLE IF NOT EXISTS usage_daily (
    kind TEXT NOT NULL CHECK (kind IN ('project', 'user')),
    day TEXT NOT NULL,
    key INTEGER NOT NULL,
    exports INTEGER NOT NULL DEFAULT 0,
    complete INTEGER NOT NULL DEFAULT 0,
    error INTEGER NOT NULL DEFAULT 0,
    gpu_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, day, key)
) WITHOUT ROWID;

CREATE TRIGGER IF NOT EXISTS trg_usage_created AFTER INSERT ON export_jobs
BEGIN
    INSERT INTO usage_daily (kind, day, key, exports)
    VALUES ('project', substr(NEW.created_at, 1, 10), NEW.project_id, 1)
    ON CONFLICT (kind, day, key) DO UPDATE SET exports = exports + 1;
    INSERT INTO usage_daily (kind, day, key, exports)
    SELECT 'user', substr(NEW.created_at, 1, 10), NEW.user_id, 1 WHERE NEW.user_id IS NOT NULL
    ON CONFLICT (kind, day, key) DO UPDATE SET exports = exports + 1;
END;

-- A terminal transition, or GPU time added (a run ended), counted today: one upsert per key.
CREATE TRIGGER IF NOT EXISTS trg_usage_ended AFTER UPDATE OF status, gpu_ms ON export_jobs
WHEN (NEW.status IN ('complete', 'error') AND OLD.status NOT IN ('complete', 'error'))
  OR NEW.gpu_ms <> OLD.gpu_ms
BEGIN
    INSERT INTO usage_daily (kind, day, key, complete, error, gpu_ms)
    VALUES ('project', strftime('%Y-%m-%d', 'now'), NEW.project_id,
            NEW.status = 'complete' AND OLD.status <> 'complete',
            NEW.status = 'error' AND OLD.status NOT IN ('complete', 'error'),
            NEW.gpu_ms - OLD.gpu_ms)
    ON CONFLICT (kind, day, key) DO UPDATE SET
        complete = complete + excluded.complete, error = error + excluded.error,
        gpu_ms = gpu_ms + excluded.gpu_ms;
    INSERT INTO usage_daily (kind, day, key, complete, error, gpu_ms)
    SELECT 'user', strftime('%Y-%m-%d', 'now'), NEW.user_id,
           NEW.status = 'complete' AND OLD.status <> 'complete',
           NEW.status = 'error' AND OLD.status NOT IN ('complete', 'error'),
           NEW.gpu_ms - OLD.gpu_ms
    WHERE NEW.user_id IS NOT NULL
    ON CONFLICT (kind, day, key) DO UPDATE SET
        complete = complete + excluded.complete, error = error + excluded.error,
        gpu_ms = gpu_ms + excluded.gpu_ms;
END;

-- The statement that records a run (or adopts one) writes its record.
CREATE TRIGGER IF NOT EXISTS trg_run_recorded AFTER UPDATE OF runpod_job_id ON export_jobs
WHEN NEW.runpod_job_id IS NOT NULL AND OLD.runpod_job_id IS NOT NEW.runpod_job_id
BEGIN
    INSERT OR IGNORE INTO export_runs
        (runpod_job_id, job_id, attempt, endpoint_id, project_id, user_id, submitted_at)
    VALUES (NEW.runpod_job_id, NEW.id, NEW.attempt, NULL, NEW.project_id,
            NEW.user_id, strftime('%Y-%m-%d %H:%M:%f', 'now'));
END;

-- The statement that ends a run (completed, failed, cancelled) completes its record with the
-- figures it added to the job.
CREATE TRIGGER IF NOT EXISTS trg_run_ended AFTER UPDATE OF version ON export_jobs
WHEN NEW.last_event IN ('completed', 'failed', 'cancelled')
  AND COALESCE(OLD.runpod_job_id, NEW.runpod_job_id) IS NOT NULL
BEGIN
    UPDATE export_runs
    SET ended_at = strftime('%Y-%m-%d %H:%M:%f', 'now'), outcome = NEW.last_event,
        execution_ms = NEW.gpu_ms - OLD.gpu_ms, delay_ms = NEW.queue_ms - OLD.queue_ms
    WHERE runpod_job_id = COALESCE(OLD.runpod_job_id, NEW.runpod_job_id) AND ended_at IS NULL;
END;

-- Late news (shared/sql/runs.ts recordLateRun): its execution time reaches usage_daily.
CREATE TRIGGER IF NOT EXISTS trg_usage_late_insert AFTER INSERT ON export_runs
WHEN NEW.late_ms > 0
BEGIN
    INSERT INTO usage_daily (kind, day, key, gpu_ms)
    VALUES ('project', strftime('%Y-%m-%d', 'now'), NEW.project_id, NEW.late_ms)
    ON CONFLICT (kind, day, key) DO UPDATE SET gpu_ms = gpu_ms + excluded.gpu_ms;
    INSERT INTO usage_daily (kind, day, key, gpu_ms)
    SELECT 'user', strftime('%Y-%m-%d', 'now'), NEW.user_id, NEW.late_ms
    WHERE NEW.user_id IS NOT NULL
    ON CONFLICT (kind, day, key) DO UPDATE SET gpu_ms = gpu_ms + excluded.gpu_ms;
END;

CREATE TRIGGER IF NOT EXISTS trg_usage_late_update AFTER UPDATE OF late_ms ON export_runs
WHEN NEW.late_ms > OLD.late_ms
BEGIN
    INSERT INTO usage_daily (kind, day, key, gpu_ms)
    VALUES ('project', strftime('%Y-%m-%d', 'now'), NEW.project_id, NEW.late_ms - OLD.late_ms)
    ON CONFLICT (kind, day, key) DO UPDATE SET gpu_ms = gpu_ms + excluded.gpu_ms;
    INSERT INTO usage_daily (kind, day, key, gpu_ms)
    SELECT 'user', strftime('%Y-%m-%d', 'now'), NEW.user_id, NEW.late_ms - OLD.late_ms
    WHERE NEW.user_id IS NOT NULL
    ON CONFLICT (kind, day, key) DO UPDATE SET gpu_ms = gpu_ms + excluded.gpu_ms;
END;
