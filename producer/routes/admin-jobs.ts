import { z } from "zod";
import { type AppContext, apiError, zodIssues } from "../http.ts";
import { jobPage } from "../job-page.ts";

export const adminQuery = z.object({
  project_id: z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER).optional(),
  status: z.enum(["pending", "processing", "complete", "error"]).optional(),
  limit: z.coerce.number().int().min(1).max(100).default(50),
  cursor: z.string().min(1).optional(),
});

/**
 * `GET /admin/jobs?project_id=&status=&limit=&cursor=` (ADMIN_TOKEN): the operators' listing
 * across projects for the dashboard; not part of the frontend's API.
 */
export async function listJobsForOperators(c: AppContext): Promise<Response> {
  const parsed = adminQuery.safeParse({
    project_id: c.req.query("project_id") || undefined,
    status: c.req.query("status") || undefined,
    limit: c.req.query("limit"),
    cursor: c.req.query("cursor"),
  });
  if (!parsed.success) {
    return apiError(c, 400, "invalid_request", "the query is not valid", zodIssues(parsed.error));
  }
  const query = parsed.data;
  return jobPage(
    c,
    {
      projectIds: query.project_id === undefined ? null : [query.project_id],
      statuses: query.status ?? null,
    },
    query.limit,
    query.cursor,
  );
}
