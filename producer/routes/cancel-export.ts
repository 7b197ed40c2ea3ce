import * as repo from "../../shared/job-repository.ts";
import { toJob } from "../../shared/job-repository.ts";
import { log } from "../../shared/log.ts";
import { createRunpodClient } from "../../shared/runpod-client.ts";
import { runpodSettings } from "../../shared/settings.ts";
import { type AppContext, apiError } from "../http.ts";

/**
 * `POST /exports/{id}/cancel`: pending or processing → error 'cancelled', then RunPod's
 * `/cancel/{id}` when a run exists (best effort: a failed cancel is logged, the job stays
 * cancelled, and the run's late webhook is ignored because the job is terminal).
 */
export async function cancelExport(c: AppContext): Promise<Response> {
  const id = c.req.param("id") ?? "";
  const cancelled = await repo.cancelJob(c.env.DB, id);
  if (!cancelled) {
    const job = await repo.getJob(c.env.DB, id);
    if (!job) return apiError(c, 404, "not_found", "no such export job");
    return apiError(c, 409, "already_finished", `the job is already ${job.status}`);
  }
  if (cancelled.runpod_job_id) {
    const runId = cancelled.runpod_job_id;
    try {
      await createRunpodClient(runpodSettings(c.env)).cancelRun(runId);
    } catch (error) {
      log("warn", "RunPod cancel failed; the job stays cancelled", {
        job_id: id,
        runpod_job_id: runId,
        error: String(error),
      });
    }
  }
  return c.json({ job: toJob(cancelled) });
}
