// A new job: the one INSERT on `export_jobs`.

import type { JobType } from "../../schemas.ts";
import { NOW } from "../time.ts";
import * as due from "./due.ts";
import { guardedRow, type JobRow } from "./row.ts";

export const INSERT_SQL = {
  insert: `INSERT INTO export_jobs (id, project_id, user_id, type, input_video_key, params,
                                    idempotency_key, request_hash, created_at, due_at, pending_since)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ${NOW}, ${due.firstTry}, ${NOW})
           ON CONFLICT DO NOTHING
           RETURNING *`,
} as const;

export interface NewJob {
  id: string;
  project_id: number;
  user_id?: number | undefined;
  type: JobType;
  input_video_key: string;
  params: Record<string, unknown>;
  idempotency?: { key: string; requestHash: string } | undefined;
}

/**
 * The seed's "create job", with `pending` and due now. Null when the project already has a job
 * under the same Idempotency-Key (the unique index decides, also for two racing requests). Safe
 * to retry: a second try of a committed insert conflicts on the id and returns null — and when the
 * first try's answer was lost, the row under this (fresh) id is read back: it is this insert's.
 */
export function insertJob(db: D1Database, job: NewJob): Promise<JobRow | null> {
  return guardedRow(
    db,
    { id: job.id, shows: () => true },
    INSERT_SQL.insert,
    job.id,
    job.project_id,
    job.user_id ?? null,
    job.type,
    job.input_video_key,
    JSON.stringify(job.params),
    job.idempotency?.key ?? null,
    job.idempotency?.requestHash ?? null,
  );
}
