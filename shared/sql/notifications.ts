// Every statement on the outbox of outbound webhooks (`notifications`, migration 0017): its rows
// are written by the trigger of the statement that ends a job; here they are leased for a try,
// settled (delivered, retried later, failed), swept when due, listed and redelivered.

import { retryTransient } from "../d1-retry.ts";
import { ARCHIVED_PAIRS } from "./jobs/archive.ts";
import { NOW, NOW_PLUS, seconds } from "./time.ts";

export type NotificationStatus = "pending" | "delivered" | "failed";
export type NotificationType = "export.completed" | "export.failed";

export interface NotificationRow {
  id: string;
  job_id: string;
  version: number;
  type: NotificationType;
  ended_at: string;
  status: NotificationStatus;
  attempts: number;
  due_at: string | null;
  window_from: string;
  last_status: number | null;
  last_error: string | null;
  delivered_at: string | null;
  body: string | null;
}

export const NOTIFY_SQL = {
  // NOTIFY_URL set or not: the ending trigger writes outbox rows only while it is.
  setEnabled: "UPDATE notify_settings SET enabled = ? WHERE id = 1 AND enabled <> ?",
  // A try: the notification if it is pending and due, held `?` ahead (its lease) with the try
  // counted. Two messages of one notification never send it at once.
  lease: `UPDATE notifications SET due_at = ${NOW_PLUS}, attempts = attempts + 1
          WHERE id = ? AND status = 'pending' AND due_at <= ${NOW}
          RETURNING *`,
  // The try's outcome, for the lease it holds (its `attempts`): delivered, due again, or failed.
  delivered: `UPDATE notifications
              SET status = 'delivered', delivered_at = ${NOW}, due_at = NULL, last_status = ?,
                  last_error = NULL, body = COALESCE(body, ?)
              WHERE id = ? AND status = 'pending' AND attempts = ?
              RETURNING *`,
  retryLater: `UPDATE notifications
               SET due_at = ${NOW_PLUS}, last_status = ?, last_error = ?, body = COALESCE(body, ?)
               WHERE id = ? AND status = 'pending' AND attempts = ?
               RETURNING *`,
  failed: `UPDATE notifications
           SET status = 'failed', due_at = NULL, last_status = ?, last_error = ?,
               body = COALESCE(body, ?)
           WHERE id = ? AND status = 'pending' AND attempts = ?
           RETURNING *`,
  // The cron's safety net: pending notifications whose try is due (a lost message, a retry whose
  // delay the queue could not hold), the longest due first.
  due: `SELECT id FROM notifications INDEXED BY idx_notifications_due
        WHERE status = 'pending' AND due_at <= ${NOW}
        ORDER BY due_at LIMIT ?`,
  // An operator's redelivery: a new series (window and tries), due now, whatever its status.
  redeliver: `UPDATE notifications
              SET status = 'pending', attempts = 0, due_at = ${NOW}, window_from = ${NOW},
                  last_error = NULL
              WHERE id = ?
              RETURNING *`,
  // GET /admin/notifications: newest first, keyset-paged on (ended_at, id); one status's range,
  // or the three ranges each cut at LIMIT, then merged (a page reads at most three pages).
  listByStatus: `SELECT * FROM notifications INDEXED BY idx_notifications_status
                 WHERE status = ? AND (ended_at, id) < (?, ?)
                 ORDER BY ended_at DESC, id DESC LIMIT ?`,
  listAll: `SELECT * FROM (${["pending", "delivered", "failed"]
    .map(
      (status) => `SELECT * FROM (SELECT * FROM notifications INDEXED BY idx_notifications_status
                   WHERE status = '${status}' AND (ended_at, id) < (?, ?)
                   ORDER BY ended_at DESC, id DESC LIMIT ?)`,
    )
    .join(" UNION ALL ")})
            ORDER BY ended_at DESC, id DESC LIMIT ?`,
  // Retention: the settled notifications of jobs still as they were archived go with them, in the
  // archive's transaction (a job's are few: one per ending and redelivery series). A pending one
  // stays and is delivered all the same, its job read from the archive.
  deleteArchived: `DELETE FROM notifications
                   WHERE job_id IN (SELECT id FROM export_jobs WHERE ${ARCHIVED_PAIRS})
                     AND status <> 'pending'`,
} as const;

async function first(
  db: D1Database,
  sql: string,
  ...binds: unknown[]
): Promise<NotificationRow | null> {
  return retryTransient(() =>
    db
      .prepare(sql)
      .bind(...binds)
      .first<NotificationRow>(),
  );
}

/** Keeps the outbox's switch in step with NOTIFY_URL (a write only when it changes). */
export async function setNotifyEnabled(db: D1Database, enabled: boolean): Promise<void> {
  const value = enabled ? 1 : 0;
  await retryTransient(() => db.prepare(NOTIFY_SQL.setEnabled).bind(value, value).run());
}

/** A try of `id`, leased for `leaseS`; null when it is not pending and due (another has it). */
export function leaseNotification(
  db: D1Database,
  id: string,
  leaseS: number,
): Promise<NotificationRow | null> {
  return first(db, NOTIFY_SQL.lease, seconds(leaseS), id);
}

export type TryOutcome =
  | { kind: "delivered"; status: number }
  | { kind: "retry"; status: number | null; error: string; inS: number }
  | { kind: "failed"; status: number | null; error: string };

/** Records the outcome of the try that holds `lease`; null when the lease was lost meanwhile. */
export function settleNotification(
  db: D1Database,
  lease: NotificationRow,
  body: string,
  outcome: TryOutcome,
): Promise<NotificationRow | null> {
  switch (outcome.kind) {
    case "delivered":
      return first(db, NOTIFY_SQL.delivered, outcome.status, body, lease.id, lease.attempts);
    case "retry":
      return first(
        db,
        NOTIFY_SQL.retryLater,
        seconds(outcome.inS),
        outcome.status,
        outcome.error,
        body,
        lease.id,
        lease.attempts,
      );
    case "failed":
      return first(
        db,
        NOTIFY_SQL.failed,
        outcome.status,
        outcome.error,
        body,
        lease.id,
        lease.attempts,
      );
  }
}

/** Up to `limit` pending notifications whose try is due. */
export async function dueNotifications(db: D1Database, limit: number): Promise<string[]> {
  const { results } = await retryTransient(() =>
    db.prepare(NOTIFY_SQL.due).bind(limit).all<{ id: string }>(),
  );
  return results.map((row) => row.id);
}

export function redeliverNotification(db: D1Database, id: string): Promise<NotificationRow | null> {
  return first(db, NOTIFY_SQL.redeliver, id);
}

/** One page of notifications, newest first (`limit + 1` rows: the caller tells a next page). */
export async function listNotifications(
  db: D1Database,
  status: NotificationStatus | null,
  after: { created_at: string; id: string } | null,
  limit: number,
): Promise<NotificationRow[]> {
  const { created_at, id } = after ?? { created_at: "9999-12-31", id: "" };
  const range = [created_at, id, limit + 1];
  const statement =
    status === null
      ? db.prepare(NOTIFY_SQL.listAll).bind(...range, ...range, ...range, limit + 1)
      : db.prepare(NOTIFY_SQL.listByStatus).bind(status, created_at, id, limit + 1);
  const { results } = await retryTransient(() => statement.all<NotificationRow>());
  return results;
}
