import * as repo from "../shared/sql/jobs/listings.ts";
import { type Job, toJob } from "../shared/sql/jobs/row.ts";
import { readCursor, toPage } from "./cursor.ts";

/**
 * One page of jobs, newest first, as `{"jobs", "next_cursor"}`, or null for a cursor this API did
 * not hand out: the frontend's `GET /exports` and the operators' `GET /admin/jobs` differ only in
 * their filters.
 */
export async function jobPage(
  db: D1Database,
  filter: Pick<repo.ListJobsQuery, "projectIds" | "statuses" | "userId">,
  limit: number,
  rawCursor: string | undefined,
): Promise<{ jobs: Job[]; next_cursor: string | null } | null> {
  const cursor = readCursor(rawCursor);
  if (!cursor) return null;
  const rows = await repo.listJobs(db, { ...filter, limit, after: cursor.after });
  const page = toPage(rows, limit, (row) => row);
  return { jobs: page.items.map(toJob), next_cursor: page.next_cursor };
}
