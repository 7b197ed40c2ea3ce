-- Migration: when a job next needs attention, and an index for listing a project's jobs.
--
-- due_at means, by status:
--   pending    : the earliest time the job may be tried (now, or after its retry delay);
--                the reconciler re-enqueues it when due_at + PENDING_GRACE_S has passed.
--   processing : the claim deadline (no run recorded yet) or the next time to poll RunPod.
--   complete / error : NULL.
ALTER TABLE export_jobs ADD COLUMN due_at TEXT;

UPDATE export_jobs SET due_at = created_at WHERE status IN ('pending', 'processing');

CREATE INDEX IF NOT EXISTS idx_export_jobs_status_due ON export_jobs(status, due_at);

-- Listing is newest first per project: (project_id, created_at, id) serves the ORDER BY and cursor.
CREATE INDEX IF NOT EXISTS idx_export_jobs_project_created ON export_jobs(project_id, created_at, id);
