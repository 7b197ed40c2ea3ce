-- Migration: outbound webhooks (NOTIFY_URL), through an outbox.
--
-- When a job ends (complete, or error: failed, cancelled, superseded, expired), the statement that
-- ends it — whichever Worker runs it — inserts its notification here through the trigger below,
-- in the same transaction. The consumer delivers from here (shared/notify.ts: its queue, the cron
-- as a safety net) and records each outcome here; the triggers after that write the job's
-- timeline event (`notified`, `notify_failed`: never a change of the job or its version) and the
-- failures counter of GET /metrics, in the statement that records the outcome.

-- Whether NOTIFY_URL is set: the consumer keeps this row in step with its setting (each cron run,
-- and once per isolate), so that no outbox row is written while nobody is to be notified.
CREATE TABLE IF NOT EXISTS notify_settings (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    enabled INTEGER NOT NULL
);
INSERT OR IGNORE INTO notify_settings (id, enabled) VALUES (1, 0);

CREATE TABLE IF NOT EXISTS notifications (
    -- The Standard Webhooks `webhook-id`: stable per event (the job and the version that ended
    -- it), so a receiver dedupes repeats.
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('export.completed', 'export.failed')),
    ended_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    -- Tries of the current series (a redelivery starts a new one).
    attempts INTEGER NOT NULL DEFAULT 0,
    -- Pending: when the next try is due (a try in progress holds it a minute ahead, its lease).
    due_at TEXT,
    -- The series' start: it fails for good once a retry would start 24 h after it.
    window_from TEXT NOT NULL,
    last_status INTEGER,
    last_error TEXT,
    delivered_at TEXT,
    -- The payload as first sent: every retry sends the same bytes.
    body TEXT
);
-- The cron's sweep: pending notifications whose try is due, the longest due first.
CREATE INDEX IF NOT EXISTS idx_notifications_due ON notifications(due_at) WHERE status = 'pending';
-- GET /admin/notifications?status=…: newest first per status.
CREATE INDEX IF NOT EXISTS idx_notifications_status ON notifications(status, ended_at, id);
-- The archive removes a job's notifications with the job.
CREATE INDEX IF NOT EXISTS idx_notifications_job ON notifications(job_id);

CREATE TRIGGER IF NOT EXISTS trg_notify_ended AFTER UPDATE OF status ON export_jobs
WHEN NEW.status IN ('complete', 'error') AND OLD.status NOT IN ('complete', 'error')
  AND (SELECT enabled FROM notify_settings WHERE id = 1) = 1
BEGIN
    INSERT OR IGNORE INTO notifications (id, job_id, version, type, ended_at, due_at, window_from)
    VALUES ('msg_' || replace(NEW.id, '-', '') || '_' || NEW.version, NEW.id, NEW.version,
            CASE WHEN NEW.status = 'complete' THEN 'export.completed' ELSE 'export.failed' END,
            strftime('%Y-%m-%d %H:%M:%f', 'now'), strftime('%Y-%m-%d %H:%M:%f', 'now'),
            strftime('%Y-%m-%d %H:%M:%f', 'now'));
END;

-- A delivery's outcome in the job's timeline: at the job's current version (so the timeline stays
-- in the order things happened), without changing the job. `ref` names the notification and the
-- try, so a redelivery's outcome is an event of its own.
CREATE TRIGGER IF NOT EXISTS trg_notify_outcome AFTER UPDATE OF status ON notifications
WHEN NEW.status IN ('delivered', 'failed') AND OLD.status = 'pending'
BEGIN
    INSERT OR IGNORE INTO export_job_events (job_id, version, type, at, attempt, detail, ref)
    SELECT j.id, j.version, CASE WHEN NEW.status = 'delivered' THEN 'notified' ELSE 'notify_failed' END,
           strftime('%Y-%m-%d %H:%M:%f', 'now'), j.attempt,
           NEW.type || ' ' || NEW.id || ': ' ||
           CASE WHEN NEW.status = 'delivered'
                THEN 'HTTP ' || NEW.last_status || ' after ' || NEW.attempts || ' tries'
                ELSE 'gave up after ' || NEW.attempts || ' tries (' || COALESCE(NEW.last_error, '') || ')'
           END,
           NEW.id || ':' || NEW.window_from
    FROM export_jobs j WHERE j.id = NEW.job_id;
    UPDATE metric_totals SET value = value + 1
    WHERE name = 'notify_failures' AND NEW.status = 'failed';
END;
