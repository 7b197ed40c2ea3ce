import { z } from "zod";
import { type AppContext, apiError, zodIssues } from "../http.ts";
import { jobPage } from "../job-page.ts";

const MAX_PROJECTS = 100;

const positiveId = z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER);

export const listQuery = z
  .object({
    project_id: z.array(positiveId).max(MAX_PROJECTS, `at most ${MAX_PROJECTS} project_id values`),
    user_id: positiveId.optional(),
    active: z.enum(["true", "false"]).default("false"),
    limit: z.coerce.number().int().min(1).max(100).default(20),
    cursor: z.string().min(1).optional(),
  })
  .refine((query) => query.project_id.length > 0 !== (query.user_id !== undefined), {
    message: "give project_id (1 to 100) or user_id, not both",
    path: ["project_id"],
  });

/**
 * `GET /exports?project_id=1&project_id=2&active=true&limit=20&cursor=…` or `?user_id=7&…`:
 * newest first; `next_cursor` is null on the last page.
 */
export async function listExports(c: AppContext): Promise<Response> {
  const url = new URL(c.req.url);
  const single = (name: string) => url.searchParams.get(name) ?? undefined;
  const parsed = listQuery.safeParse({
    project_id: url.searchParams.getAll("project_id"),
    user_id: single("user_id"),
    active: single("active"),
    limit: single("limit"),
    cursor: single("cursor"),
  });
  if (!parsed.success) {
    return apiError(c, 400, "invalid_request", "the query is not valid", zodIssues(parsed.error));
  }
  const query = parsed.data;
  return jobPage(
    c,
    {
      projectIds: [...new Set(query.project_id)],
      userId: query.user_id,
      statuses: query.active === "true" ? "active" : null,
    },
    query.limit,
    query.cursor,
  );
}
