// Where a job's changes go after D1 has them: the live-status Durable Objects of the producer
// (shared/live-hub.ts, which says how they are keyed). shared/job-state.ts calls `publish` for
// every transition, through publishJobs; D1 stays the truth, so a publication that fails is
// logged there and changes nothing.
import type { LiveHub } from "./live-hub.ts";
import { ALL_HUB, type LiveProgress, projectHubName } from "./live-keys.ts";
import type { Job } from "./sql/jobs/row.ts";

export { ALL_HUB, type LiveMessage, type LiveProgress, projectHubName } from "./live-keys.ts";

export interface LivePublisher {
  publish(job: Job): Promise<void>;
  /** Progress that D1 did not record (live only, at the row's version). */
  progress(update: LiveProgress): Promise<void>;
}

/** For code paths with nobody to tell (tools, tests of the state machine alone). */
export const NO_LIVE_STATUS: LivePublisher = { publish: async () => {}, progress: async () => {} };

/**
 * The publisher of a Worker's bindings: each change goes to its project's hub and to the "all"
 * hub (each answers at once when nobody listens). Without the binding, nobody is told.
 */
export function livePublisher(env: { LIVE_HUB?: DurableObjectNamespace<LiveHub> }): LivePublisher {
  const hubs = env.LIVE_HUB;
  if (!hubs) return NO_LIVE_STATUS;
  const hub = (name: string) => hubs.get(hubs.idFromName(name));
  return {
    async publish(job) {
      const results = await Promise.allSettled([
        hub(projectHubName(job.project_id)).publish(job),
        hub(ALL_HUB).publish(job),
      ]);
      const failed = results.find((result) => result.status === "rejected");
      if (failed) throw failed.reason;
    },
    async progress(update) {
      const results = await Promise.allSettled([
        hub(projectHubName(update.project_id)).publishProgress(update),
        hub(ALL_HUB).publishProgress(update),
      ]);
      const failed = results.find((result) => result.status === "rejected");
      if (failed) throw failed.reason;
    },
  };
}
