// One job by id or by Idempotency-Key, and the dispatcher's checks of a batch of jobs against D1.
// Plain reads, through the primary key or a unique index. Where an outer condition would tempt
// SQLite's planner away from the primary key, it is written `+status` (no index).

import { retryTransient } from "../../d1-retry.ts";
import { firstRow, type JobRow } from "./row.ts";

export const READ_SQL = {
  byIdempotencyKey: "SELECT * FROM export_jobs WHERE project_id = ? AND idempotency_key = ?",
  byId: "SELECT * FROM export_jobs WHERE id = ?",
  // The dispatcher's slots checked against D1: which of these jobs are still processing.
  processingAmong: `SELECT id FROM export_jobs
                    WHERE id IN (SELECT value FROM json_each(?)) AND +status = 'processing'`,
  // A consumer batch's jobs: what the dispatcher needs of those still waiting (their fairness key
  // and age), and the status of the others (a finished job's message may carry a slot to free).
  batchJobs: `SELECT id, project_id, user_id, created_at, status FROM export_jobs
              WHERE id IN (SELECT value FROM json_each(?))`,
} as const;

export function getJob(db: D1Database, id: string): Promise<JobRow | null> {
  return firstRow(db, READ_SQL.byId, id);
}

export function findJobByIdempotencyKey(
  db: D1Database,
  projectId: number,
  key: string,
): Promise<JobRow | null> {
  return firstRow(db, READ_SQL.byIdempotencyKey, projectId, key);
}

export async function processingAmong(db: D1Database, ids: readonly string[]): Promise<string[]> {
  if (ids.length === 0) return [];
  const { results } = await retryTransient(() =>
    db.prepare(READ_SQL.processingAmong).bind(JSON.stringify(ids)).all<{ id: string }>(),
  );
  return results.map((row) => row.id);
}

export type BatchJob = Pick<JobRow, "id" | "project_id" | "user_id" | "created_at" | "status">;

export async function batchJobs(db: D1Database, ids: readonly string[]): Promise<BatchJob[]> {
  if (ids.length === 0) return [];
  const { results } = await retryTransient(() =>
    db.prepare(READ_SQL.batchJobs).bind(JSON.stringify(ids)).all<BatchJob>(),
  );
  return results;
}
