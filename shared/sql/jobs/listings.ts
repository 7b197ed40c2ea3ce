// Listings of jobs, newest first, keyset-paged on (created_at, id) with a row-value cursor: a
// project's, several projects', a user's, everyone's (operators), each also by status. Each
// statement names the index it must use where the planner would pick a worse one
// (test/workers/query-plans.test.ts checks them all); `+status` keeps a condition off an index.

import { retryTransient } from "../../d1-retry.ts";
import type { JobRow, JobStatus } from "./row.ts";

export const LISTING_SQL = {
  listByProjects: `SELECT * FROM export_jobs
                   WHERE project_id IN (SELECT value FROM json_each(?)) AND (created_at, id) < (?, ?)
                   ORDER BY created_at DESC, id DESC LIMIT ?`,
  // (project_id, status, created_at, id): each (project, status) range newest first from the
  // cursor, cut at LIMIT, so a page reads about a page of rows however many jobs are active; the
  // sort only merges those ranges. Left to itself the planner takes (status, created_at): every
  // active job of every project.
  listActiveByProjects: `SELECT * FROM export_jobs INDEXED BY idx_export_jobs_project_status_created
                         WHERE project_id IN (SELECT value FROM json_each(?))
                           AND status IN ('pending', 'processing') AND (created_at, id) < (?, ?)
                         ORDER BY created_at DESC, id DESC LIMIT ?`,
  // One active status: one range per project through the same index.
  listByProjectsAndActiveStatus: `SELECT * FROM export_jobs INDEXED BY idx_export_jobs_project_status_created
                                  WHERE project_id IN (SELECT value FROM json_each(?))
                                    AND status = ? AND (created_at, id) < (?, ?)
                                  ORDER BY created_at DESC, id DESC LIMIT ?`,
  // A finished status (most of a project's history) walks it newest first until the page is full.
  listByProjectsAndStatus: `SELECT * FROM export_jobs
                            WHERE project_id IN (SELECT value FROM json_each(?)) AND +status = ?
                              AND (created_at, id) < (?, ?)
                            ORDER BY created_at DESC, id DESC LIMIT ?`,
  listByUser: `SELECT * FROM export_jobs
               WHERE user_id = ? AND (created_at, id) < (?, ?)
               ORDER BY created_at DESC, id DESC LIMIT ?`,
  listActiveByUser: `SELECT * FROM export_jobs INDEXED BY idx_export_jobs_user_created
                     WHERE user_id = ? AND +status IN ('pending', 'processing')
                       AND (created_at, id) < (?, ?)
                     ORDER BY created_at DESC, id DESC LIMIT ?`,
  listAll: `SELECT * FROM export_jobs WHERE (created_at, id) < (?, ?)
            ORDER BY created_at DESC, id DESC LIMIT ?`,
  // Operators' status filter: (status, created_at) newest first, ties sorted by id as they come
  // (SQLite sorts only the right part of the ORDER BY), so a page reads about a page of rows
  // whether the status is rare or common. Walking (created_at, id) instead read the whole table
  // for a rare status (1,000,001 rows for `processing` among 1M jobs, measured by npm run bench).
  listAllByStatus: `SELECT * FROM export_jobs INDEXED BY idx_export_jobs_status_created
                    WHERE status = ? AND (created_at, id) < (?, ?)
                    ORDER BY created_at DESC, id DESC LIMIT ?`,
} as const;

/** The upper bound of a first page's row-value cursor: sorts after every stored timestamp. */
const FIRST_PAGE = { created_at: "9999-12-31", id: "" };

export interface ListCursor {
  created_at: string;
  id: string;
}

export interface ListJobsQuery {
  /** Null: every project (operators). */
  projectIds: number[] | null;
  /** Instead of projects: one user's jobs. */
  userId?: number | undefined;
  /** Null: every status; `active`: pending and processing. */
  statuses: "active" | JobStatus | null;
  limit: number;
  after: ListCursor | null;
}

/**
 * The seed's "active jobs for project" and "recent jobs" queries, generalised to several projects,
 * newest first, keyset-paged on (created_at, id). Returns up to `limit + 1` rows so the caller
 * knows whether there is a next page.
 */
export async function listJobs(db: D1Database, query: ListJobsQuery): Promise<JobRow[]> {
  const after = query.after ?? FIRST_PAGE;
  const page = [after.created_at, after.id, query.limit + 1] as const;
  const projects = JSON.stringify(query.projectIds);
  const statement =
    query.userId !== undefined
      ? db
          .prepare(
            query.statuses === "active" ? LISTING_SQL.listActiveByUser : LISTING_SQL.listByUser,
          )
          .bind(query.userId, ...page)
      : query.projectIds === null
        ? query.statuses === null || query.statuses === "active"
          ? db.prepare(LISTING_SQL.listAll).bind(...page)
          : db.prepare(LISTING_SQL.listAllByStatus).bind(query.statuses, ...page)
        : query.statuses === "active"
          ? db.prepare(LISTING_SQL.listActiveByProjects).bind(projects, ...page)
          : query.statuses === null
            ? db.prepare(LISTING_SQL.listByProjects).bind(projects, ...page)
            : db
                .prepare(
                  query.statuses === "pending" || query.statuses === "processing"
                    ? LISTING_SQL.listByProjectsAndActiveStatus
                    : LISTING_SQL.listByProjectsAndStatus,
                )
                .bind(projects, query.statuses, ...page);
  const { results } = await retryTransient(() => statement.all<JobRow>());
  return results;
}
