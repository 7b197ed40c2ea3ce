-- Migration: the project's owner, as the frontend's backend knows it. Optional; stored, returned
-- with the job, the fairness key of dispatch (else the project), and listed by
-- GET /exports?user_id=… (the design note's "Get User's Recent Jobs" without a projects table).
ALTER TABLE export_jobs ADD COLUMN user_id INTEGER;

-- A user's jobs newest first: the ORDER BY and the row-value cursor are one index range. Partial:
-- jobs without a user cost this index nothing.
CREATE INDEX IF NOT EXISTS idx_export_jobs_user_created
    ON export_jobs(user_id, created_at, id) WHERE user_id IS NOT NULL;
