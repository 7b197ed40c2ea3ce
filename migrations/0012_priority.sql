-- Migration: lanes. A job's priority (interactive, standard, batch), stored and returned; the
-- dispatcher serves its lanes by weighted round robin (shared/fair-queue.ts). Rows from before
-- are standard.
ALTER TABLE export_jobs ADD COLUMN priority TEXT NOT NULL DEFAULT 'standard'
    CHECK (priority IN ('interactive', 'standard', 'batch'));
