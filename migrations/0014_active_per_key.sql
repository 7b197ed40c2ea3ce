-- Migration: quotas. Active (pending + processing) jobs per fairness key (user_id, else project:
-- 'user:<id>' / 'project:<id>', as the dispatcher names them), one row per key, kept by the same
-- triggers that keep `job_counts`, in the same transaction as every insert, status change and
-- delete. `POST /exports` checks it inside its INSERT … SELECT (MAX_ACTIVE_PER_USER), so a
-- create over the quota writes nothing, with no scan and no race (D1 runs one write at a time).
CREATE TABLE IF NOT EXISTS active_jobs (
    fair_key TEXT PRIMARY KEY,
    n INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO active_jobs (fair_key, n)
SELECT CASE WHEN user_id IS NULL THEN 'project:' || project_id ELSE 'user:' || user_id END, COUNT(*)
FROM export_jobs WHERE status IN ('pending', 'processing') GROUP BY 1;

DROP TRIGGER IF EXISTS trg_job_counts_insert;
CREATE TRIGGER IF NOT EXISTS trg_job_counts_insert AFTER INSERT ON export_jobs
BEGIN
    UPDATE job_counts SET n = n + 1 WHERE status = NEW.status;
    INSERT INTO active_jobs (fair_key, n)
    SELECT CASE WHEN NEW.user_id IS NULL THEN 'project:' || NEW.project_id
                ELSE 'user:' || NEW.user_id END, 1
    WHERE NEW.status IN ('pending', 'processing')
    ON CONFLICT (fair_key) DO UPDATE SET n = n + 1;
END;

-- Only a change between active and finished moves the key's count (pending ↔ processing does
-- not). A key whose count reaches 0 keeps its row (one small row per key that ever had a job).
DROP TRIGGER IF EXISTS trg_job_counts_update;
CREATE TRIGGER IF NOT EXISTS trg_job_counts_update AFTER UPDATE OF status ON export_jobs
WHEN OLD.status <> NEW.status
BEGIN
    UPDATE job_counts SET n = n - 1 WHERE status = OLD.status;
    UPDATE job_counts SET n = n + 1 WHERE status = NEW.status;
    INSERT INTO active_jobs (fair_key, n)
    SELECT CASE WHEN NEW.user_id IS NULL THEN 'project:' || NEW.project_id
                ELSE 'user:' || NEW.user_id END,
           CASE WHEN NEW.status IN ('pending', 'processing') THEN 1 ELSE -1 END
    WHERE (OLD.status IN ('pending', 'processing')) <> (NEW.status IN ('pending', 'processing'))
    ON CONFLICT (fair_key) DO UPDATE SET n = n + excluded.n;
END;

DROP TRIGGER IF EXISTS trg_job_counts_delete;
CREATE TRIGGER IF NOT EXISTS trg_job_counts_delete AFTER DELETE ON export_jobs
BEGIN
    UPDATE job_counts SET n = n - 1 WHERE status = OLD.status;
    UPDATE active_jobs SET n = n - 1
    WHERE OLD.status IN ('pending', 'processing')
      AND fair_key = CASE WHEN OLD.user_id IS NULL THEN 'project:' || OLD.project_id
                          ELSE 'user:' || OLD.user_id END;
END;
