import { createRoute, type RouteHandler, z } from "@hono/zod-openapi";
import {
  auth,
  errorReplies,
  pageQuery,
  projectNotAllowed,
  projectsOf,
  queryParam,
  reply,
} from "../api.ts";
import { JobPage } from "../api-schemas.ts";
import { type AppEnv, apiError, badCursor } from "../http.ts";
import { jobPage } from "../job-page.ts";
import { withQueue } from "../queue.ts";

const MAX_PROJECTS = 100;

const positiveId = z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER);

/**
 * `?project_id=` repeated: a query string gives one value as a string and several as an array;
 * both (and none) are read as a list, and documented as the array they are.
 */
const projectIds = z
  .preprocess(
    (value) => (value === undefined ? [] : Array.isArray(value) ? value : [value]),
    z.array(positiveId).max(MAX_PROJECTS, `at most ${MAX_PROJECTS} project_id values`),
  )
  .openapi({
    type: "array",
    items: { type: "integer", minimum: 1, maximum: Number.MAX_SAFE_INTEGER },
    maxItems: MAX_PROJECTS,
    description:
      "Repeat for several projects (1 to 100): ?project_id=1&project_id=2. Give project_id " +
      "or user_id, exactly one of them.",
  });

export const listQuery = z
  .object({
    project_id: projectIds,
    user_id: queryParam(
      positiveId.optional().openapi({
        description: "A user's jobs instead of projects' (never together with project_id).",
      }),
    ),
    active: queryParam(
      z
        .enum(["true", "false"])
        .default("false")
        .openapi({ description: "true: only pending and processing jobs" }),
    ),
    ...pageQuery(20).shape,
  })
  .refine((query) => query.project_id.length > 0 !== (query.user_id !== undefined), {
    message: "give project_id (1 to 100) or user_id, not both",
    path: ["project_id"],
  });

export const listExportsRoute = createRoute({
  method: "get",
  path: "/exports",
  operationId: "listExports",
  summary:
    "List the jobs of one or more projects (`project_id`), or of one user (`user_id`), newest " +
    "first; exactly one of the two is given (a scoped token: its own projects, by project_id)",
  tags: ["exports"],
  ...auth("frontend"),
  request: { query: listQuery },
  responses: {
    200: reply("one page", JobPage),
    ...errorReplies("frontend", { 400: ["invalid_request"], 403: ["project_not_allowed"] }),
  },
});

/**
 * `GET /exports?project_id=1&project_id=2&active=true&limit=20&cursor=…` or `?user_id=7&…`:
 * newest first; `next_cursor` is null on the last page.
 */
export const listExports: RouteHandler<typeof listExportsRoute, AppEnv> = async (c) => {
  const query = c.req.valid("query");
  // A scoped token lists its own projects, by project_id (a user's jobs may be in others).
  const allowed = projectsOf(c);
  if (allowed !== null) {
    const outside = query.project_id.filter((id) => !allowed.includes(id));
    if (query.user_id !== undefined) {
      return apiError(
        c,
        403,
        "project_not_allowed",
        "a scoped token lists its projects by project_id, not by user_id",
      );
    }
    if (outside.length > 0) return projectNotAllowed(c, outside);
  }
  const page = await jobPage(
    c.env.DB,
    {
      projectIds: [...new Set(query.project_id)],
      userId: query.user_id,
      statuses: query.active === "true" ? "active" : null,
    },
    query.limit,
    query.cursor,
  );
  if (!page) return badCursor(c);
  return c.json({ ...page, jobs: await withQueue(c.env, page.jobs) }, 200);
};
