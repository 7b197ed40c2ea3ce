// Queue position and ETA in the API's answers: a pending job's `queue`, from the dispatcher's
// estimate (shared/dispatcher.ts `estimate`, shared/queue-estimate.ts). One call for all the
// pending jobs of an answer; a job that is not pending has `queue: null`. The estimate is an
// extra, never the truth: when the dispatcher does not answer in time, `queue` is null and the
// job is answered all the same.
import type { ProducerEnv } from "../shared/env.ts";
import { fairKeyOf } from "../shared/fair-queue.ts";
import { log } from "../shared/log.ts";
import type { QueueInfo } from "../shared/queue-estimate.ts";
import type { Job } from "../shared/sql/jobs/row.ts";

/** How long an answer waits for the dispatcher's estimate. */
export const ESTIMATE_TIMEOUT_MS = 1_000;

/**
 * The jobs with `queue` set: an estimate for each pending one, null for the others. `created`:
 * the jobs were just created, and the dispatcher holds them from now on (offerNew), so that their
 * positions, and those of the jobs created after them, count them before their queue messages
 * reach a consumer.
 */
export async function withQueue(
  env: ProducerEnv,
  jobs: Job[],
  options: { created?: boolean } = {},
): Promise<Job[]> {
  // A follower has no place of its own: it waits for its leader (`follows`), not for a slot.
  const pending = jobs.filter(
    (job) => job.status === "pending" && !job.archived && job.follows === null,
  );
  const estimates = new Map<string, QueueInfo>();
  if (pending.length > 0) {
    const dispatcher = dispatcherOf(env);
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const queued = pending.map((job) => ({
        id: job.id,
        key: fairKeyOf(job),
        type: job.type,
        lane: job.priority,
      }));
      const answer = await Promise.race([
        options.created
          ? dispatcher.offerNew(
              queued.map((job, i) => ({ ...job, createdAt: pending[i]?.created_at ?? "" })),
            )
          : dispatcher.estimate(queued),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`no estimate within ${ESTIMATE_TIMEOUT_MS} ms`)),
            ESTIMATE_TIMEOUT_MS,
          );
        }),
      ]);
      for (const { id, queue } of answer) estimates.set(id, queue);
    } catch (error) {
      log("warn", "queue estimate unavailable", { jobs: pending.length, error: String(error) });
    } finally {
      clearTimeout(timer);
    }
  }
  return jobs.map((job) => ({ ...job, queue: estimates.get(job.id) ?? null }));
}

function dispatcherOf(env: ProducerEnv) {
  return env.DISPATCHER.get(env.DISPATCHER.idFromName(env.RUNPOD_ENDPOINT_ID ?? ""));
}

/**
 * Whether the dispatcher holds the job (waiting or in flight). A job it holds is on its way: the
 * dispatcher sends its message when its turn comes. False also when the dispatcher does not answer.
 */
export async function dispatcherHolds(env: ProducerEnv, jobId: string): Promise<boolean> {
  try {
    return (await dispatcherOf(env).known([jobId])).includes(jobId);
  } catch (error) {
    log("warn", "dispatcher did not say whether it holds a job", {
      job_id: jobId,
      error: String(error),
    });
    return false;
  }
}

/** One job with `queue` set. */
export async function jobWithQueue(
  env: ProducerEnv,
  job: Job,
  options: { created?: boolean } = {},
): Promise<Job> {
  const [answered] = await withQueue(env, [job], options);
  return answered ?? job;
}
