// How live-status objects are named, and what their sockets receive: shared by the objects
// (shared/live-hub.ts) and the publisher (shared/live-publisher.ts), with no runtime imports.
import type { Job } from "./sql/jobs/row.ts";

/** The hub of one project's changes. */
export const projectHubName = (projectId: number) => `project:${projectId}`;
/** The operators' hub: every change of every project. */
export const ALL_HUB = "all";

/** What a live socket receives: a snapshot on connect, then one message per change. */
export type LiveMessage = { type: "snapshot"; jobs: Job[] } | { type: "job"; job: Job };
