import { readArchivedJob } from "../../shared/archive.ts";
import { cancelJob } from "../../shared/job-state.ts";
import * as repo from "../../shared/sql/jobs/reads.ts";
import { toJob } from "../../shared/sql/jobs/row.ts";
import { jobDepsWithRunpod } from "../deps.ts";
import { type AppContext, apiError } from "../http.ts";

/**
 * `POST /exports/{id}/cancel`: pending or processing → error 'cancelled', then RunPod's
 * `/cancel/{id}` when a run exists; a failed /cancel is tried again by the reconciler, and the
 * run's late webhook is ignored because the job is terminal. An archived job (shared/archive.ts)
 * answers 409 already_finished like any finished one.
 */
export async function cancelExport(c: AppContext): Promise<Response> {
  const id = c.req.param("id") ?? "";
  const cancelled = await cancelJob(jobDepsWithRunpod(c), id);
  if (!cancelled) {
    // Not in D1 any more: an archived job finished long ago.
    const job = (await repo.getJob(c.env.DB, id)) ?? (await readArchivedJob(c.env.VIDEOS, id))?.job;
    if (!job) return apiError(c, 404, "not_found", "no such export job");
    return apiError(c, 409, "already_finished", `the job is already ${job.status}`);
  }
  return c.json({ job: toJob(cancelled) });
}
