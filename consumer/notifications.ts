// The consumer's side of outbound webhooks: the `export-notifications` queue (one try per
// message, shared/notify.ts) and the cron's sweep of what is due (a message lost, or a retry
// longer than a queue delay can hold). A receiver that is slow or down holds only these batches:
// the jobs' queue, the dispatcher and the reconciler never wait for it.

import { forEachBounded } from "../shared/concurrency.ts";
import type { ConsumerEnv } from "../shared/env.ts";
import { log } from "../shared/log.ts";
import { syncNotifySwitch, tryNotification } from "../shared/notify.ts";
import { notifySettings } from "../shared/settings.ts";
import { dueNotifications } from "../shared/sql/notifications.ts";

/** Tries at once per batch (each waits at most NOTIFY_TIMEOUT_MS for its receiver). */
const TRIES_IN_FLIGHT = 6;
/** The longest delay a queue message can carry (12 h); longer retries are the sweep's. */
const MAX_DELAY_S = 43_200;
/** Due notifications the cron hands to the queue per run. */
const SWEEP_LIMIT = 100;

const messageId = (body: unknown): string | null =>
  typeof body === "object" &&
  body !== null &&
  typeof (body as { notification_id?: unknown }).notification_id === "string"
    ? (body as { notification_id: string }).notification_id
    : null;

/** A batch of `export-notifications`: each message one try; a failed try comes back later. */
export async function processNotifyBatch(
  env: ConsumerEnv,
  messages: readonly Message<unknown>[],
): Promise<void> {
  const settings = notifySettings(env);
  await syncNotifySwitch(env.DB, settings !== null);
  if (!settings) {
    log("info", "notifications dropped: NOTIFY_URL is not set", { messages: messages.length });
    for (const message of messages) message.ack();
    return;
  }
  const deps = { db: env.DB, videos: env.VIDEOS, settings };
  await forEachBounded(
    messages,
    TRIES_IN_FLIGHT,
    async (message) => {
      const id = messageId(message.body);
      if (id === null) {
        log("warn", "a notification message that names none", { message_id: message.id });
        message.ack();
        return;
      }
      const result = await tryNotification(deps, id);
      if (result.outcome === "retry") {
        message.retry({ delaySeconds: Math.min(MAX_DELAY_S, Math.max(0, result.inS)) });
      } else {
        message.ack();
      }
    },
    (message, error) => {
      // D1 unreachable mid-try: the lease (a minute) lapses and the sweep or this retry tries again.
      log("error", "a notification try failed", { message_id: message.id, error: String(error) });
      message.retry({ delaySeconds: 60 });
    },
  );
}

/**
 * The cron's part: the outbox's switch in step with NOTIFY_URL, and the due notifications handed
 * to the queue. Never throws (the reconciler runs beside it).
 */
export async function sweepNotifications(env: ConsumerEnv): Promise<number> {
  try {
    const settings = notifySettings(env);
    await syncNotifySwitch(env.DB, settings !== null, { always: true });
    if (!settings) return 0;
    const due = await dueNotifications(env.DB, SWEEP_LIMIT);
    if (due.length > 0) {
      await env.NOTIFY_QUEUE.sendBatch(due.map((id) => ({ body: { notification_id: id } })));
    }
    return due.length;
  } catch (error) {
    log("error", "the notifications sweep failed", { error: String(error) });
    return 0;
  }
}
