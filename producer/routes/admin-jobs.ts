import { z } from "zod";
import * as repo from "../../shared/job-repository.ts";
import { toJob } from "../../shared/job-repository.ts";
import { readCursor, toPage } from "../cursor.ts";
import { type AppContext, apiError, badCursor, zodIssues } from "../http.ts";

const adminQuery = z.object({
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
  const cursor = readCursor(query.cursor, () => badCursor(c));
  if ("response" in cursor) return cursor.response;
  const rows = await repo.listJobs(c.env.DB, {
    projectIds: query.project_id === undefined ? null : [query.project_id],
    statuses: query.status === undefined ? null : [query.status],
    limit: query.limit,
    after: cursor.after,
  });
  const page = toPage(rows, query.limit, (row) => row);
  return c.json({ jobs: page.items.map(toJob), next_cursor: page.next_cursor });
}
