// An `export_jobs` row, the job the API answers with, and how the statements of this folder hand
// rows back. The statements themselves, one module per concern:
//
//   insert.ts       a new job
//   reads.ts        one job by id or Idempotency-Key; the dispatcher's checks of a batch
//   listings.ts     the paged listings (GET /exports, the dashboard, live status)
//   transitions.ts  the guarded state changes that shared/job-state.ts makes
//   leases.ts       bookkeeping: the reconciler's leases, the dispatcher's holds, cancel retries
//   archive.ts      retention: what is archivable, and the archived batch's guard
//   due.ts          what `due_at` means, and the only way the statements set or test it
//   catalog.ts      every statement by name, for the query-plan test and the bench
//
// Reads and the guarded statements are retried on transient D1 errors (shared/d1-retry.ts):
// running one of them twice is safe.

import { retryTransient } from "../../d1-retry.ts";
import type { QueueInfo } from "../../queue-estimate.ts";
import type { JobType } from "../../schemas.ts";

export type JobStatus = "pending" | "processing" | "complete" | "error";

/** An `export_jobs` row as D1 stores it. */
export interface JobRow {
  id: string;
  project_id: number;
  type: JobType;
  status: JobStatus;
  progress: number;
  input_video_key: string;
  output_video_key: string | null;
  params: string;
  error: string | null;
  retry_count: number;
  runpod_job_id: string | null;
  created_at: string;
  started_at: string | null;
  completed_at: string | null;
  /** When the job next needs attention; what that is depends on the status (due.ts). */
  due_at: string | null;
  idempotency_key: string | null;
  /** SHA-256 of the canonical request body; internal, never returned by the API. */
  request_hash: string | null;
  attempt: number;
  version: number;
  pending_since: string | null;
  last_event: string | null;
  user_id: number | null;
  /** When the job reached complete or error (migration 0007); internal, never returned. */
  finished_at: string | null;
}

/**
 * A job as the API returns it: the row with `params` parsed back to an object. `archived` is there
 * (true) only when the job is answered from its archive in R2 (shared/archive.ts).
 */
export type Job = Omit<
  JobRow,
  "params" | "request_hash" | "pending_since" | "last_event" | "finished_at"
> & {
  params: Record<string, unknown>;
  archived?: true;
  /**
   * Not part of the row (it never raises `version`): a pending job's queue position and ETA, in
   * the API's answers (null once the job runs or ended); live `job` messages leave it out.
   */
  queue?: QueueInfo | null;
};

export function toJob(row: JobRow): Job {
  const {
    request_hash: _hash,
    pending_since: _since,
    last_event: _event,
    finished_at: _finished,
    ...rest
  } = row;
  return { ...rest, params: JSON.parse(row.params) as Record<string, unknown> };
}

/** The `error` of a job a user cancelled (or whose run RunPod reported CANCELLED). */
export const CANCELLED = "cancelled";

/** Runs `sql` (retried on transient errors) and hands back its first row, or null. */
export const firstRow = (db: D1Database, sql: string, ...binds: unknown[]) =>
  retryTransient(() =>
    db
      .prepare(sql)
      .bind(...binds)
      .first<JobRow>(),
  );

/** Runs `sql` (retried on transient errors) and hands back every row. */
export const allRows = async (db: D1Database, sql: string, ...binds: unknown[]) =>
  (
    await retryTransient(() =>
      db
        .prepare(sql)
        .bind(...binds)
        .all<JobRow>(),
    )
  ).results;
