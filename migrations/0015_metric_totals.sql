-- Migration: running totals for GET /metrics' counters, one row each, kept by triggers in the
-- same transaction as the change they count (no scan of usage_daily or export_runs to read them).
--   gpu_ms           GPU execution time of every run ever counted (RunPod's executionTime): what
--                    usage_daily adds up per day and key, as one total
--   notify_failures  outbound webhook deliveries that ended failed (the integration's outbox)
CREATE TABLE IF NOT EXISTS metric_totals (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

INSERT OR IGNORE INTO metric_totals (name, value)
SELECT 'gpu_ms', COALESCE(SUM(gpu_ms), 0) FROM usage_daily WHERE kind = 'project';
INSERT OR IGNORE INTO metric_totals (name, value) VALUES ('notify_failures', 0);

-- The same changes that reach usage_daily (migration 0010): a job's GPU time added, and late news
-- of a run (its late_ms).
CREATE TRIGGER IF NOT EXISTS trg_gpu_total AFTER UPDATE OF gpu_ms ON export_jobs
WHEN NEW.gpu_ms <> OLD.gpu_ms
BEGIN
    UPDATE metric_totals SET value = value + NEW.gpu_ms - OLD.gpu_ms WHERE name = 'gpu_ms';
END;

CREATE TRIGGER IF NOT EXISTS trg_gpu_total_late_insert AFTER INSERT ON export_runs
WHEN NEW.late_ms > 0
BEGIN
    UPDATE metric_totals SET value = value + NEW.late_ms WHERE name = 'gpu_ms';
END;

CREATE TRIGGER IF NOT EXISTS trg_gpu_total_late_update AFTER UPDATE OF late_ms ON export_runs
WHEN NEW.late_ms > OLD.late_ms
BEGIN
    UPDATE metric_totals SET value = value + NEW.late_ms - OLD.late_ms WHERE name = 'gpu_ms';
END;
