// The consumer Worker: wiring only. Domain logic lives in process-jobs.ts and reconciler.ts.
import type { ConsumerEnv } from "../shared/env.ts";
import { log } from "../shared/log.ts";
import { consumerDeps, processJobBatch } from "./process-jobs.ts";
import { reconcile } from "./reconciler.ts";

export default {
  async queue(batch: MessageBatch<unknown>, env: ConsumerEnv): Promise<void> {
    if (batch.queue.endsWith("-dlq")) {
      for (const message of batch.messages) {
        log("warn", "dead letter", { id: message.id, body: message.body });
        message.ack();
      }
      return;
    }
    const poison = await processJobBatch(consumerDeps(env), batch.messages);
    for (const message of poison) {
      log("warn", "unparseable message acknowledged", { id: message.id, body: message.body });
    }
  },

  async scheduled(_controller: ScheduledController, env: ConsumerEnv): Promise<void> {
    await reconcile(consumerDeps(env), env.EXPORT_QUEUE);
  },
} satisfies ExportedHandler<ConsumerEnv>;
