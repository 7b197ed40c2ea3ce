-- Migration: dead letters, Idempotency-Key on POST /exports, and an index for operators' listings.

-- Every message the consumer gives up on: dead-lettered from export-jobs (via export-jobs-dlq) or
-- unparseable on export-jobs itself. The id is the queue message id, so recording is idempotent.
CREATE TABLE IF NOT EXISTS dead_letters (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    reason TEXT NOT NULL CHECK (reason IN ('dead_lettered', 'unparseable')),
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    received_at TEXT NOT NULL,
    job_id TEXT,
    job_status TEXT,
    replayed_at TEXT
);

CREATE INDEX IF NOT EXISTS idx_dead_letters_received ON dead_letters(received_at, id);
CREATE INDEX IF NOT EXISTS idx_dead_letters_job ON dead_letters(job_id);

-- Idempotency-Key (IETF draft): a key names one request per project; the hash of its body tells a
-- retry (same body) from a reuse (another body).
ALTER TABLE export_jobs ADD COLUMN idempotency_key TEXT;
ALTER TABLE export_jobs ADD COLUMN request_hash TEXT;

CREATE UNIQUE INDEX IF NOT EXISTS idx_export_jobs_idempotency
    ON export_jobs(project_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- The operators' job listing across projects, newest first.
CREATE INDEX IF NOT EXISTS idx_export_jobs_created ON export_jobs(created_at, id);
