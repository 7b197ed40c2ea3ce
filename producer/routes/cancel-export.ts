import { createRoute, type RouteHandler } from "@hono/zod-openapi";
import { findJob } from "../../shared/archive.ts";
import { cancelJob } from "../../shared/job-state.ts";
import { toJob } from "../../shared/sql/jobs/row.ts";
import { auth, errorReplies, jobIdParams, projectsOf, reply } from "../api.ts";
import { JobEnvelope } from "../api-schemas.ts";
import { jobDepsWithRunpod } from "../deps.ts";
import { type AppEnv, apiError } from "../http.ts";

export const cancelExportRoute = createRoute({
  method: "post",
  path: "/exports/{id}/cancel",
  operationId: "cancelExport",
  summary: "Cancel a pending or processing job (error 'cancelled'; RunPod's run is cancelled)",
  tags: ["exports"],
  ...auth("frontend"),
  request: { params: jobIdParams },
  responses: {
    200: reply("the cancelled job", JobEnvelope),
    ...errorReplies("frontend", { 404: ["not_found"], 409: ["already_finished"] }),
  },
});

/**
 * `POST /exports/{id}/cancel`: pending or processing → error 'cancelled', then RunPod's
 * `/cancel/{id}` when a run exists; a failed /cancel is tried again by the reconciler, and the
 * run's late webhook is ignored because the job is terminal. An archived job (shared/archive.ts)
 * answers 409 already_finished like any finished one.
 */
export const cancelExport: RouteHandler<typeof cancelExportRoute, AppEnv> = async (c) => {
  const { id } = c.req.valid("param");
  const projects = projectsOf(c);
  const cancelled = await cancelJob(jobDepsWithRunpod(c), id, projects);
  if (!cancelled) {
    const job = await findJob(c.env.DB, c.env.VIDEOS, id, undefined, projects);
    if (!job) return apiError(c, 404, "not_found", "no such export job");
    return apiError(c, 409, "already_finished", `the job is already ${job.status}`);
  }
  return c.json({ job: toJob(cancelled) }, 200);
};
