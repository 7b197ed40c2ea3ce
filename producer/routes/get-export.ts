import { createRoute, type RouteHandler } from "@hono/zod-openapi";
import { findJob } from "../../shared/archive.ts";
import { auth, errorReplies, jobIdParams, projectsOf, reply } from "../api.ts";
import { JobEnvelope } from "../api-schemas.ts";
import { type AppEnv, apiError } from "../http.ts";
import { jobWithQueue } from "../queue.ts";

export const getExportRoute = createRoute({
  method: "get",
  path: "/exports/{id}",
  operationId: "getExport",
  summary: "Get an export job",
  tags: ["exports"],
  ...auth("frontend"),
  request: { params: jobIdParams },
  responses: {
    200: reply(
      "the job; from its archive in R2, `archived: true`, once it was archived",
      JobEnvelope,
    ),
    ...errorReplies("frontend", { 404: ["not_found"] }),
  },
});

/**
 * `GET /exports/{id}`: from D1, else from its archive in R2 (`"archived": true`); 404 for a job
 * outside a scoped token's projects, as for one that does not exist.
 */
export const getExport: RouteHandler<typeof getExportRoute, AppEnv> = async (c) => {
  const { id } = c.req.valid("param");
  const job = await findJob(c.env.DB, c.env.VIDEOS, id, c.var.primaryDb, projectsOf(c));
  if (!job) return apiError(c, 404, "not_found", "no such export job");
  return c.json({ job: await jobWithQueue(c.env, job) }, 200);
};
