// Queue position and ETA in the API's answers: a pending job's `queue`, from the dispatcher's
// estimate (shared/dispatcher.ts `estimate`, shared/queue-estimate.ts). One call for all the
// pending jobs of an answer; a job that is not pending has `queue: null`. The estimate is an
// extra, never the truth: when the dispatcher does not answer in time, `queue` is null and the
// job is answered all the same.
import type { ProducerEnv } from "../shared/env.ts";
import { fairKeyOf } from "../shared/fair-queue.ts";
import { groupBy } from "../shared/group-by.ts";
import { log } from "../shared/log.ts";
import type { QueueInfo } from "../shared/queue-estimate.ts";
import { endpointRoutes } from "../shared/settings.ts";
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
  options: { created?: boolean; accepted?: Map<string, string> } = {},
): Promise<Job[]> {
  // A follower has no place of its own: it waits for its leader (`follows`), not for a slot.
  const pending = jobs.filter(
    (job) => job.status === "pending" && !job.archived && job.follows === null,
  );
  const estimates = new Map<string, QueueInfo>();
  if (pending.length > 0) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        options.created
          ? offerNew(env, pending, estimates, options.accepted)
          : estimate(env, pending, estimates),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`no estimate within ${ESTIMATE_TIMEOUT_MS} ms`)),
            ESTIMATE_TIMEOUT_MS,
          );
        }),
      ]);
    } catch (error) {
      log("warn", "queue estimate unavailable", { jobs: pending.length, error: String(error) });
    } finally {
      clearTimeout(timer);
    }
  }
  return jobs.map((job) => ({ ...job, queue: estimates.get(job.id) ?? null }));
}

const queued = (job: Job) => ({
  id: job.id,
  key: fairKeyOf(job),
  type: job.type,
  lane: job.priority,
});

/**
 * Just created: held by the first endpoint of its type's list (RUNPOD_ENDPOINTS) that takes it; a
 * down one refuses while another can take over (failover), and the next is asked.
 */
async function offerNew(
  env: ProducerEnv,
  jobs: readonly Job[],
  out: Map<string, QueueInfo>,
  accepted?: Map<string, string>,
) {
  const routes = endpointRoutes(env);
  let left = [...jobs];
  for (let i = 0; left.length > 0 && i < 8; i++) {
    const refused: Job[] = [];
    for (const [endpoint, group] of groupBy(left, (job) => routes[job.type][i])) {
      const answer = await dispatcherOf(env, endpoint).offerNew(
        group.map((job) => ({ ...queued(job), createdAt: job.created_at })),
      );
      if (answer === null) refused.push(...group);
      else {
        for (const { id, queue } of answer) out.set(id, queue);
        for (const job of group) accepted?.set(job.id, endpoint);
      }
    }
    left = refused;
  }
}

/** Where pending jobs stand, each at the dispatcher holding it (else its type's first). */
async function estimate(env: ProducerEnv, jobs: readonly Job[], out: Map<string, QueueInfo>) {
  const routes = endpointRoutes(env);
  const groups = groupBy(jobs, (job) => job.runpod_endpoint_id ?? routes[job.type][0]);
  for (const [endpoint, group] of groups) {
    for (const { id, queue } of await dispatcherOf(env, endpoint).estimate(group.map(queued))) {
      out.set(id, queue);
    }
  }
}

function dispatcherOf(env: ProducerEnv, endpointId: string | null = null) {
  return env.DISPATCHER.get(env.DISPATCHER.idFromName(endpointId ?? env.RUNPOD_ENDPOINT_ID ?? ""));
}

/**
 * Whether the dispatcher holding the job (D1 names it; else its type's first) holds it, waiting
 * or in flight. A job it holds is on its way: the dispatcher sends its message when its turn
 * comes. False also when the dispatcher does not answer.
 */
export async function dispatcherHolds(
  env: ProducerEnv,
  job: Pick<Job, "id" | "type" | "runpod_endpoint_id">,
): Promise<boolean> {
  try {
    const endpoint = job.runpod_endpoint_id ?? endpointRoutes(env)[job.type][0] ?? null;
    return (await dispatcherOf(env, endpoint).known([job.id])).includes(job.id);
  } catch (error) {
    log("warn", "dispatcher did not say whether it holds a job", {
      job_id: job.id,
      error: String(error),
    });
    return false;
  }
}

/** One job with `queue` set. */
export async function jobWithQueue(
  env: ProducerEnv,
  job: Job,
  options: { created?: boolean; accepted?: Map<string, string> } = {},
): Promise<Job> {
  const [answered] = await withQueue(env, [job], options);
  return answered ?? job;
}
