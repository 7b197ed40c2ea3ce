// One job by id or by Idempotency-Key, and the dispatcher's checks of a batch of jobs against D1.
// Plain reads, through the primary key or a unique index. Where an outer condition would tempt
// SQLite's planner away from the primary key, it is written `+status` (no index).

import { retryTransient } from "../../d1-retry.ts";
import { firstRow, type JobRow } from "./row.ts";

export const READ_SQL = {
  byIdempotencyKey: "SELECT * FROM export_jobs WHERE project_id = ? AND idempotency_key = ?",
  // A batch's keyed items at once: `?` is a JSON array of [project_id, key] pairs; one lookup of
  // the unique (project_id, idempotency_key) index per pair.
  byIdempotencyKeys: `SELECT j.* FROM json_each(?)
                      CROSS JOIN export_jobs j INDEXED BY idx_export_jobs_idempotency
                      ON j.project_id = json_extract(json_each.value, '$[0]')
                        AND j.idempotency_key = json_extract(json_each.value, '$[1]')`,
  byId: "SELECT * FROM export_jobs WHERE id = ?",
  // A scoped client token's read: the job only if it is of one of the token's projects (a JSON
  // array), in the statement that reads it.
  byIdInProjects: `SELECT * FROM export_jobs
                   WHERE id = ? AND project_id IN (SELECT value FROM json_each(?))`,
  // The dispatcher's slots checked against D1: which of these jobs are still processing.
  processingAmong: `SELECT id FROM export_jobs
                    WHERE id IN (SELECT value FROM json_each(?)) AND +status = 'processing'
                      AND COALESCE(runpod_endpoint_id, ?) = ?`,
  // A consumer batch's jobs: what the dispatcher needs of those still waiting (their fairness key
  // and age), and the status of the others (a finished job's message may carry a slot to free).
  // For a pending job that may reuse, the newest identical complete job of its project and its
  // output key (`source`, a JSON pair: one range of idx_export_jobs_identical); for a follower,
  // its leader's status (a primary-key read).
  batchJobs: `SELECT j.id, j.project_id, j.user_id, j.created_at, j.status, j.follows, j.priority,
                     j.type, j.runpod_endpoint_id, j.attempt, j.due_at,
                     CASE WHEN j.status = 'pending' AND j.reuse = 1 THEN
                       (SELECT json_array(s.id, s.output_video_key) FROM export_jobs s
                        WHERE s.project_id = j.project_id AND s.params_hash = j.params_hash
                          AND s.input_etag = j.input_etag AND s.status = 'complete'
                        ORDER BY s.completed_at DESC LIMIT 1)
                     END AS source,
                     CASE WHEN j.status = 'pending' AND j.follows IS NOT NULL THEN
                       (SELECT l.status FROM export_jobs l WHERE l.id = j.follows)
                     END AS leader
              FROM export_jobs j
              WHERE j.id IN (SELECT value FROM json_each(?))`,
} as const;

/** The projects a caller may read: null, every project (API and admin tokens). */
export type Projects = readonly number[] | null;

/** The job `id`, or null when there is none (or it is not of one of `projects`). */
export function getJob(
  db: D1Database,
  id: string,
  projects: Projects = null,
): Promise<JobRow | null> {
  return projects === null
    ? firstRow(db, READ_SQL.byId, id)
    : firstRow(db, READ_SQL.byIdInProjects, id, JSON.stringify(projects));
}

/** The jobs of these (project, Idempotency-Key) pairs that exist. */
export async function findJobsByIdempotencyKeys(
  db: D1Database,
  pairs: readonly (readonly [number, string])[],
): Promise<JobRow[]> {
  if (pairs.length === 0) return [];
  const { results } = await retryTransient(() =>
    db.prepare(READ_SQL.byIdempotencyKeys).bind(JSON.stringify(pairs)).all<JobRow>(),
  );
  return results;
}

export function findJobByIdempotencyKey(
  db: D1Database,
  projectId: number,
  key: string,
): Promise<JobRow | null> {
  return firstRow(db, READ_SQL.byIdempotencyKey, projectId, key);
}

/**
 * Which of these jobs are processing on `endpointId` (a row naming no endpoint is
 * `defaultEndpointId`'s): a dispatcher's slots checked against D1.
 */
export async function processingAmong(
  db: D1Database,
  ids: readonly string[],
  endpointId: string,
  defaultEndpointId: string,
): Promise<string[]> {
  if (ids.length === 0) return [];
  const { results } = await retryTransient(() =>
    db
      .prepare(READ_SQL.processingAmong)
      .bind(JSON.stringify(ids), defaultEndpointId, endpointId)
      .all<{ id: string }>(),
  );
  return results.map((row) => row.id);
}

export type BatchJob = Pick<
  JobRow,
  | "id"
  | "project_id"
  | "user_id"
  | "created_at"
  | "status"
  | "follows"
  | "priority"
  | "type"
  | "runpod_endpoint_id"
  | "attempt"
  | "due_at"
> & {
  /** JSON `[id, output_video_key]` of an identical complete job, for a pending job that may reuse. */
  source: string | null;
  /** A pending follower's leader's status; null when it has none or the leader is gone. */
  leader: JobRow["status"] | null;
};

export async function batchJobs(db: D1Database, ids: readonly string[]): Promise<BatchJob[]> {
  if (ids.length === 0) return [];
  const { results } = await retryTransient(() =>
    db.prepare(READ_SQL.batchJobs).bind(JSON.stringify(ids)).all<BatchJob>(),
  );
  return results;
}
