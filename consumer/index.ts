// The consumer Worker: wiring only. Domain logic lives in process-jobs.ts, reconciler.ts,
// dead-letters.ts; its Durable Objects in shared/ (the dispatcher, live status).
import { WorkerEntrypoint } from "cloudflare:workers";
import type { RefillApi } from "../shared/dispatcher.ts";
import type { ConsumerEnv } from "../shared/env.ts";
import { log } from "../shared/log.ts";
import { syncNotifySwitch } from "../shared/notify.ts";
import { recordDeadLetterMessages } from "./dead-letters.ts";
import { processNotifyBatch, sweepNotifications } from "./notifications.ts";
import { consumerDeps, processJobBatch, submitAdmitted } from "./process-jobs.ts";
import { reconcile } from "./reconciler.ts";

// Every Durable Object class of reel-exports is hosted here; the producer binds them by name.
export { Dispatcher } from "../shared/dispatcher.ts";
export { LiveChannel, LiveHub } from "../shared/live-hub.ts";

/**
 * The refill path: the dispatcher hands the jobs it admitted for freed slots straight to the
 * consumer (an RPC on the Worker's own entrypoint, `ctx.exports.Refill`), instead of a queue
 * message and a batch's wait. The consumer claims and submits them as a batch would. It answers
 * the jobs it could not settle (D1 failed mid-way): the dispatcher sends those to the queue.
 */
export class Refill extends WorkerEntrypoint<ConsumerEnv> implements RefillApi {
  async submit(
    endpointId: string,
    admitted: { id: string; delayMs: number }[],
    warm = false,
  ): Promise<string[]> {
    const retry: string[] = [];
    await submitAdmitted(
      consumerDeps({ ...this.env, RUNPOD_ENDPOINT_ID: endpointId }, this.ctx),
      new Map(admitted.map((job) => [job.id, job.delayMs])),
      { done: () => {}, retry: (id) => retry.push(id) },
      warm,
    );
    return retry;
  }
}

/**
 * A batch that could not run at all (a missing setting, D1 or the gate unreachable) is retried
 * with a growing delay: 30 s, 60 s, … up to 2 h per delivery, so an incident or a bad deploy has
 * hours to be fixed before the messages reach the dead-letter queue (which fails no job).
 */
export function infrastructureRetryDelayS(attempts: number): number {
  return Math.min(7_200, 30 * 2 ** Math.max(0, attempts - 1));
}

/** The outbound webhooks' queue (wrangler.toml): its batches are tries of notifications. */
const NOTIFY_QUEUE_NAME = "export-notifications";

export default {
  async queue(
    batch: MessageBatch<unknown>,
    env: ConsumerEnv,
    ctx?: ExecutionContext,
  ): Promise<void> {
    try {
      if (batch.queue === NOTIFY_QUEUE_NAME) {
        await processNotifyBatch(env, batch.messages);
        return;
      }
      if (batch.queue.endsWith("-dlq")) {
        await recordDeadLetterMessages(env.DB, batch.queue, "dead_lettered", batch.messages);
        return;
      }
      // The outbox's switch follows this Worker's NOTIFY_URL from its first batch on.
      await syncNotifySwitch(env.DB, Boolean(env.NOTIFY_URL?.trim()));
      const poison = await processJobBatch(consumerDeps(env, ctx), batch.messages);
      await recordDeadLetterMessages(env.DB, batch.queue, "unparseable", poison);
    } catch (error) {
      const attempts = Math.max(1, ...batch.messages.map((message) => message.attempts));
      const delaySeconds = infrastructureRetryDelayS(attempts);
      log("error", "batch could not be processed; retrying later", {
        queue: batch.queue,
        messages: batch.messages.length,
        delay_s: delaySeconds,
        error: String(error),
      });
      batch.retryAll({ delaySeconds });
    }
  },

  async scheduled(
    _controller: ScheduledController,
    env: ConsumerEnv,
    ctx?: ExecutionContext,
  ): Promise<void> {
    await Promise.all([reconcile(consumerDeps(env, ctx)), sweepNotifications(env)]);
  },
} satisfies ExportedHandler<ConsumerEnv>;
