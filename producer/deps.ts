// What the producer's handlers hand the state machine (shared/job-state.ts).
import type { JobDeps, RunpodDeps } from "../shared/job-state.ts";
import { livePublisher } from "../shared/live-publisher.ts";
import { notifierOf } from "../shared/notify.ts";
import { createRunpodClient } from "../shared/runpod-client.ts";
import { pollAfterSeconds, retrySettings, runpodSettings } from "../shared/settings.ts";
import type { AppContext } from "./http.ts";

/** The request's `waitUntil`, when the runtime gave it an execution context. */
function waitUntilOf(c: AppContext): JobDeps["defer"] {
  try {
    const ctx = c.executionCtx;
    return (work) => ctx.waitUntil(work);
  } catch {
    return undefined; // called without one (the handler invoked directly)
  }
}

export function jobDeps(c: AppContext): JobDeps {
  const endpoint = runpodSettings(c.env).endpointId;
  return {
    slots: (endpointId) =>
      c.env.DISPATCHER.get(c.env.DISPATCHER.idFromName(endpointId ?? endpoint)),
    db: c.env.DB,
    queue: c.env.EXPORT_QUEUE,
    retry: retrySettings(c.env),
    pollAfterS: pollAfterSeconds(c.env),
    videos: c.env.VIDEOS,
    live: livePublisher(c.env),
    defer: waitUntilOf(c),
    notify: notifierOf(c.env),
  };
}

/** …and RunPod's client for any endpoint (null: RUNPOD_ENDPOINT_ID). */
export function jobDepsWithRunpod(c: AppContext): JobDeps & RunpodDeps {
  const settings = runpodSettings(c.env);
  return {
    ...jobDeps(c),
    runpodOf: (endpointId) =>
      createRunpodClient({ ...settings, endpointId: endpointId ?? settings.endpointId }),
  };
}
