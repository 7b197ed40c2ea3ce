import * as repo from "../shared/sql/jobs/listings.ts";
import { toJob } from "../shared/sql/jobs/row.ts";
import { readCursor, toPage } from "./cursor.ts";
import { type AppContext, badCursor } from "./http.ts";

/**
 * One page of jobs, newest first, as `{"jobs", "next_cursor"}`: the frontend's `GET /exports`
 * and the operators' `GET /admin/jobs` differ only in their filters.
 */
export async function jobPage(
  c: AppContext,
  filter: Pick<repo.ListJobsQuery, "projectIds" | "statuses" | "userId">,
  limit: number,
  rawCursor: string | undefined,
): Promise<Response> {
  const cursor = readCursor(rawCursor, () => badCursor(c));
  if ("response" in cursor) return cursor.response;
  const rows = await repo.listJobs(c.env.DB, { ...filter, limit, after: cursor.after });
  const page = toPage(rows, limit, (row) => row);
  return c.json({ jobs: page.items.map(toJob), next_cursor: page.next_cursor });
}
