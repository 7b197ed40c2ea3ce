// Outbound webhooks to the frontend's backend (NOTIFY_URL), per the Standard Webhooks spec:
// `webhook-id` (the notification's id, stable per event), `webhook-timestamp` (seconds, the time
// of this send), `webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">` keyed
// with NOTIFY_SECRET (`whsec_<base64 key>`). The body is
// `{"type":"export.completed"|"export.failed","timestamp":<the ending, ISO>,"data":{"job":…}}`,
// the job as GET /exports/{id} answers it, built at the first try and sent byte for byte on every
// retry. Delivery is the consumer's, from the outbox (shared/sql/notifications.ts): a try per
// queue message, leased so two never overlap, retried on any non-2xx answer, timeout or failed
// connection after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h (Standard Webhooks' schedule), until a
// retry would start 24 h after the series began: then it is `failed`.
import { readArchivedJob } from "./archive.ts";
import { log } from "./log.ts";
import { getJob } from "./sql/jobs/reads.ts";
import { toJob } from "./sql/jobs/row.ts";
import {
  leaseNotification,
  type NotificationRow,
  setNotifyEnabled,
  settleNotification,
  type TryOutcome,
} from "./sql/notifications.ts";

/** Standard Webhooks' retry schedule (seconds after each failed try). */
export const NOTIFY_RETRY_S = [5, 300, 1_800, 7_200, 18_000, 36_000];
/** A series of tries ends failed once a retry would start this long after it began. */
export const NOTIFY_WINDOW_S = 86_400;
/** A try holds its notification this long: no other try sends it meanwhile. */
export const NOTIFY_LEASE_S = 60;
/** How long a try waits for the receiver's answer. */
export const NOTIFY_TIMEOUT_MS = 10_000;

/** The notification of a job's ending: its id, the `webhook-id` (migration 0017's trigger). */
export function notificationIdOf(jobId: string, version: number): string {
  return `msg_${jobId.replaceAll("-", "")}_${version}`;
}

// What this consumer isolate last wrote to the outbox's switch (notify_settings).
let switchWritten: boolean | null = null;

/**
 * Keeps the outbox's switch in step with the consumer's NOTIFY_URL (the consumer delivers, so its
 * setting decides): the ending trigger writes notifications only while it is on. The consumer's
 * batches write it once per isolate; each cron run writes it whatever was written before (`always`),
 * so a switch left wrong by an older deploy is right within a minute. A failure is logged.
 */
export async function syncNotifySwitch(
  db: D1Database,
  enabled: boolean,
  options: { always?: boolean } = {},
): Promise<void> {
  if (switchWritten === enabled && !options.always) return;
  try {
    await setNotifyEnabled(db, enabled);
    switchWritten = enabled;
  } catch (error) {
    log("warn", "the notifications switch could not be written", { error: String(error) });
  }
}

/**
 * JobDeps.notify of a Worker whose NOTIFY_URL is set: hands the notifications to the consumer's
 * queue at once (one sendBatch); undefined without NOTIFY_URL (nothing is written to notify).
 */
export function notifierOf(env: {
  NOTIFY_URL?: string | undefined;
  NOTIFY_QUEUE: Queue<NotifyMessage>;
}): ((ids: string[]) => Promise<void>) | undefined {
  if (!env.NOTIFY_URL?.trim()) return undefined;
  return async (ids) => {
    await env.NOTIFY_QUEUE.sendBatch(ids.map((id) => ({ body: { notification_id: id } })));
  };
}

/** The queue message of a notification to try now. */
export interface NotifyMessage {
  notification_id: string;
}

export interface NotifySettings {
  url: string;
  /** NOTIFY_SECRET: `whsec_` and the base64 of the key (the prefix is optional). */
  secret: string;
  timeoutMs: number;
  /** Seconds before each retry (NOTIFY_RETRY_S by default). */
  retryS: readonly number[];
}

export interface NotifyDeps {
  db: D1Database;
  videos: R2Bucket;
  settings: NotifySettings;
}

const encoder = new TextEncoder();
const keys = new Map<string, Promise<CryptoKey>>();

/** The HMAC key of a `whsec_…` secret (its base64 part decoded), imported once per isolate. */
function signingKey(secret: string): Promise<CryptoKey> {
  let key = keys.get(secret);
  if (!key) {
    const base64 = secret.startsWith("whsec_") ? secret.slice("whsec_".length) : secret;
    const raw = Uint8Array.from(atob(base64), (char) => char.charCodeAt(0));
    key = crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    keys.set(secret, key);
  }
  return key;
}

/** `v1,<base64 signature>` of one send (Standard Webhooks). */
export async function signWebhook(
  secret: string,
  id: string,
  timestampS: number,
  body: string,
): Promise<string> {
  const mac = await crypto.subtle.sign(
    "HMAC",
    await signingKey(secret),
    encoder.encode(`${id}.${timestampS}.${body}`),
  );
  let binary = "";
  for (const byte of new Uint8Array(mac)) binary += String.fromCharCode(byte);
  return `v1,${btoa(binary)}`;
}

/** Whether NOTIFY_SECRET is usable: its key must decode. */
export function validNotifySecret(secret: string): boolean {
  try {
    const base64 = secret.startsWith("whsec_") ? secret.slice("whsec_".length) : secret;
    return base64.length > 0 && atob(base64).length > 0;
  } catch {
    return false;
  }
}

/** "2026-12-07 10:30:00.123" (UTC text) as ISO 8601. */
const iso = (utc: string) => `${utc.replace(" ", "T")}Z`;

/**
 * The body of `notification`: the one it was first sent with, else built now from the job (in D1,
 * else its archive); null when the job is gone altogether.
 */
async function bodyOf(deps: NotifyDeps, notification: NotificationRow): Promise<string | null> {
  if (notification.body !== null) return notification.body;
  const row = await getJob(deps.db, notification.job_id);
  const job = row
    ? { ...toJob(row), queue: null }
    : ((await readArchivedJob(deps.videos, notification.job_id))?.job ?? null);
  if (!job) return null;
  return JSON.stringify({
    type: notification.type,
    timestamp: iso(notification.ended_at),
    data: { job },
  });
}

/** Sends `body` once: its answer's status, or the error of a timeout or a failed connection. */
async function send(
  settings: NotifySettings,
  id: string,
  body: string,
): Promise<{ status: number } | { error: string }> {
  const timestampS = Math.floor(Date.now() / 1000);
  const abort = new AbortController();
  const timer = setTimeout(
    () => abort.abort(new DOMException("no answer in time", "TimeoutError")),
    settings.timeoutMs,
  );
  try {
    const res = await fetch(settings.url, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "webhook-id": id,
        "webhook-timestamp": String(timestampS),
        "webhook-signature": await signWebhook(settings.secret, id, timestampS, body),
      },
      body,
      signal: abort.signal,
    });
    await res.body?.cancel().catch(() => {});
    return { status: res.status };
  } catch (error) {
    const name = error instanceof Error ? error.name : "";
    return {
      error:
        name === "TimeoutError" || name === "AbortError"
          ? `no answer within ${settings.timeoutMs} ms`
          : `no connection: ${String(error)}`.slice(0, 300),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** What became of a try: and, for `retry`, when the next is due. */
export type TryResult =
  | { outcome: "delivered" | "failed" | "skipped" }
  | { outcome: "retry"; inS: number };

/**
 * One try of the notification `id`: leased (null lease: it is not due, or another try holds it:
 * `skipped`), sent, and its outcome recorded with the lease it holds (the outcome's triggers write
 * the job's `notified` / `notify_failed` event and count failures).
 */
export async function tryNotification(deps: NotifyDeps, id: string): Promise<TryResult> {
  const lease = await leaseNotification(deps.db, id, NOTIFY_LEASE_S);
  if (!lease) return { outcome: "skipped" };
  const body = await bodyOf(deps, lease);
  if (body === null) {
    await settleNotification(deps.db, lease, "", {
      kind: "failed",
      status: null,
      error: "the job no longer exists",
    });
    return { outcome: "failed" };
  }
  const answer = await send(deps.settings, lease.id, body);
  const status = "status" in answer ? answer.status : null;
  let outcome: TryOutcome;
  if (status !== null && status >= 200 && status < 300) {
    outcome = { kind: "delivered", status };
  } else {
    const error = "error" in answer ? answer.error : `HTTP ${status}`;
    const schedule = deps.settings.retryS;
    const inS = schedule[Math.min(lease.attempts - 1, schedule.length - 1)] ?? 0;
    const windowEnds = Date.parse(iso(lease.window_from)) + NOTIFY_WINDOW_S * 1000;
    outcome =
      lease.attempts > schedule.length || Date.now() + inS * 1000 > windowEnds
        ? { kind: "failed", status, error }
        : { kind: "retry", status, error, inS };
  }
  const settled = await settleNotification(deps.db, lease, body, outcome);
  if (!settled) {
    log("warn", "a notification's lease ran out during its try", { notification_id: id });
    return { outcome: "skipped" };
  }
  if (outcome.kind !== "delivered") {
    log("warn", "notification not delivered", {
      notification_id: id,
      job_id: lease.job_id,
      attempt: lease.attempts,
      status,
      error: outcome.error,
      outcome: outcome.kind,
    });
  }
  return outcome.kind === "retry"
    ? { outcome: "retry", inS: outcome.inS }
    : { outcome: outcome.kind === "delivered" ? "delivered" : "failed" };
}
