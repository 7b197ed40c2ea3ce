// The consumer Worker: wiring only. Domain logic lives in process-jobs.ts, reconciler.ts and
// dead-letters.ts.
import type { ConsumerEnv } from "../shared/env.ts";
import { recordDeadLetterMessages } from "./dead-letters.ts";
import { consumerDeps, processJobBatch } from "./process-jobs.ts";
import { reconcile } from "./reconciler.ts";

export default {
  async queue(batch: MessageBatch<unknown>, env: ConsumerEnv): Promise<void> {
    if (batch.queue.endsWith("-dlq")) {
      await recordDeadLetterMessages(env.DB, batch.queue, "dead_lettered", batch.messages);
      return;
    }
    const poison = await processJobBatch(consumerDeps(env), batch.messages);
    await recordDeadLetterMessages(env.DB, batch.queue, "unparseable", poison);
  },

  async scheduled(_controller: ScheduledController, env: ConsumerEnv): Promise<void> {
    await reconcile(consumerDeps(env), env.EXPORT_QUEUE);
  },
} satisfies ExportedHandler<ConsumerEnv>;
