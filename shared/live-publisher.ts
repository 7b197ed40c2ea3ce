// Where a job's changes go after D1 has them: the live-status shards of shared/live-hub.ts (which
// says how the objects are keyed and who forwards to whom). shared/job-state.ts calls `publish`
// once per statement that changed rows, through publishJobs, with all of them; the publisher
// groups them by shard (`all:<project id mod LIVE_SHARDS>`) and makes ONE call per shard touched,
// whoever listens: a shard with no subscriber answers at once and forwards nothing. D1 stays the
// truth, so a publication that fails is logged there (with the job ids of the shards that failed)
// and changes nothing.
import type { LiveHub } from "./live-hub.ts";
import { type LiveProgress, shardHubName, shardOfProject } from "./live-keys.ts";
import type { Job } from "./sql/jobs/row.ts";

export { type LiveMessage, type LiveProgress, projectHubName } from "./live-keys.ts";

export interface LivePublisher {
  /** The changes of one statement (or of a few together); rejects when some were not told. */
  publish(jobs: readonly Job[]): Promise<void>;
  /** Progress that D1 did not record (live only, at the row's version): to its project's shard. */
  progress(update: LiveProgress): Promise<void>;
}

/** For code paths with nobody to tell (tools, tests of the state machine alone). */
export const NO_LIVE_STATUS: LivePublisher = { publish: async () => {}, progress: async () => {} };

/** A publication that did not reach every shard: the jobs of the shards that failed. */
export class LivePublicationError extends Error {
  readonly jobIds: readonly string[];

  constructor(jobIds: readonly string[], reason: unknown) {
    super(`live shard(s) not reached for ${jobIds.length} job(s): ${String(reason)}`);
    this.name = "LivePublicationError";
    this.jobIds = jobIds;
  }
}

/** The publisher of a Worker's bindings; without the binding, nobody is told. */
export function livePublisher(env: { LIVE_HUB?: DurableObjectNamespace<LiveHub> }): LivePublisher {
  const hubs = env.LIVE_HUB;
  if (!hubs) return NO_LIVE_STATUS;
  return {
    async publish(jobs) {
      const byShard = new Map<number, Job[]>();
      for (const job of jobs) {
        const shard = shardOfProject(job.project_id);
        const batch = byShard.get(shard);
        if (batch) batch.push(job);
        else byShard.set(shard, [job]);
      }
      const batches = [...byShard];
      const results = await Promise.allSettled(
        batches.map(([shard, batch]) =>
          hubs.get(hubs.idFromName(shardHubName(shard))).publish(batch),
        ),
      );
      const failed = batches.filter((_, i) => results[i]?.status === "rejected");
      if (failed.length === 0) return;
      const reason = results.find((result) => result.status === "rejected")?.reason;
      throw new LivePublicationError(
        failed.flatMap(([, batch]) => batch.map((job) => job.id)),
        reason,
      );
    },
    async progress(update) {
      await hubs
        .get(hubs.idFromName(shardHubName(shardOfProject(update.project_id))))
        .publishProgress(update);
    },
  };
}
