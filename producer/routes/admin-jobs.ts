import { createRoute, type RouteHandler, z } from "@hono/zod-openapi";
import { auth, errorReplies, pageQuery, queryParam, reply } from "../api.ts";
import { JobPage, jobStatus } from "../api-schemas.ts";
import { type AppEnv, badCursor } from "../http.ts";
import { jobPage } from "../job-page.ts";
import { withQueue } from "../queue.ts";

// An empty value (`?status=`, as the dashboard's "any" option sends) means no filter.
const adminQuery = z.object({
  project_id: queryParam(
    z.coerce
      .number()
      .int()
      .positive()
      .max(Number.MAX_SAFE_INTEGER)
      .optional()
      .openapi({ description: "only this project" }),
    { emptyIsAbsent: true },
  ),
  status: queryParam(jobStatus.optional().openapi({ description: "only this status" }), {
    emptyIsAbsent: true,
  }),
  ...pageQuery(50).shape,
});

export const listJobsForOperatorsRoute = createRoute({
  method: "get",
  path: "/admin/jobs",
  operationId: "listJobsForOperators",
  summary: "List jobs across projects, newest first (the dashboard's listing)",
  tags: ["operators"],
  ...auth("adminToken"),
  request: { query: adminQuery },
  responses: {
    200: reply("one page", JobPage),
    ...errorReplies("adminToken", { 400: ["invalid_request"] }),
  },
});

/**
 * `GET /admin/jobs?project_id=&status=&limit=&cursor=` (ADMIN_TOKEN): the operators' listing
 * across projects for the dashboard; not part of the frontend's API.
 */
export const listJobsForOperators: RouteHandler<typeof listJobsForOperatorsRoute, AppEnv> = async (
  c,
) => {
  const query = c.req.valid("query");
  const page = await jobPage(
    c.env.DB,
    {
      projectIds: query.project_id === undefined ? null : [query.project_id],
      statuses: query.status ?? null,
    },
    query.limit,
    query.cursor,
  );
  if (!page) return badCursor(c);
  return c.json({ ...page, jobs: await withQueue(c.env, page.jobs) }, 200);
};
