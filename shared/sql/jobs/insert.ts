// A new job: the one INSERT on `export_jobs`, and with a supersede key, the end of the older jobs
// under that key in the same transaction.

import { retryTransientOutcome } from "../../d1-retry.ts";
import { log } from "../../log.ts";
import type { Lane } from "../../queue-estimate.ts";
import type { JobType } from "../../schemas.ts";
import { NOW, seconds } from "../time.ts";
import * as due from "./due.ts";
import { allRows, firstRow, type JobRow } from "./row.ts";
import { TRANSITION_SQL } from "./transitions.ts";

const IDENTITY = (field: string) => `json_extract(j.identity, '$.${field}')`;
/** A lane's rank (0 first): a job never waits for a pending leader in a lower lane. */
const LANE_RANK = (lane: string) =>
  `(CASE ${lane} WHEN 'interactive' THEN 0 WHEN 'standard' THEN 1 ELSE 2 END)`;

export const INSERT_SQL = {
  // `j.identity`: one JSON parameter {input_etag, params_hash, reuse, supersede_key, priority} (D1 binds
  // few parameters per statement). A job that may reuse follows the newest identical complete job
  // of its project (its consumer batch copies that output), else an identical job still on its
  // way (pending or processing, itself no follower: single flight), if there is one. Either way
  // it is never offered to the dispatcher, so no slot can send it to RunPod first.
  // The quota: with `max_active` > 0 (MAX_ACTIVE_PER_USER), nothing is inserted while the job's
  // fairness key has that many active jobs (its `active_jobs` row, kept by migration 0014's
  // triggers: one primary-key read, in the insert's own transaction). The CASTs: D1 binds a
  // number as REAL, and 'user:' || 7.0 is not the key the triggers write from the INTEGER column.
  insert: `INSERT INTO export_jobs (id, project_id, user_id, type, input_video_key, params,
                                    idempotency_key, request_hash, input_etag, params_hash, reuse,
                                    supersede_key, follows, priority, runpod_endpoint_id,
                                    created_at, due_at, pending_since)
           SELECT j.id, j.project_id, j.user_id, j.type, j.input_video_key, j.params,
                  j.idempotency_key, j.request_hash, ${IDENTITY("input_etag")},
                  ${IDENTITY("params_hash")}, ${IDENTITY("reuse")}, ${IDENTITY("supersede_key")},
                  CASE WHEN ${IDENTITY("reuse")} THEN COALESCE(
                    (SELECT e.id FROM export_jobs e
                     WHERE e.project_id = j.project_id AND e.params_hash = ${IDENTITY("params_hash")}
                       AND e.input_etag = ${IDENTITY("input_etag")} AND e.status = 'complete'
                     ORDER BY e.completed_at DESC LIMIT 1),
                    (SELECT e.id FROM export_jobs e
                     WHERE e.project_id = j.project_id AND e.params_hash = ${IDENTITY("params_hash")}
                       AND e.input_etag = ${IDENTITY("input_etag")}
                       AND e.status IN ('pending', 'processing') AND e.follows IS NULL
                       AND (e.status = 'processing'
                            OR ${LANE_RANK("e.priority")} <= ${LANE_RANK(IDENTITY("priority"))})
                     LIMIT 1))
                  END,
                  ${IDENTITY("priority")}, ${IDENTITY("endpoint")},
                  ${NOW}, ${due.firstTry}, ${NOW}
           FROM (SELECT ? AS id, ? AS project_id, ? AS user_id, ? AS type, ? AS input_video_key,
                        ? AS params, ? AS idempotency_key, ? AS request_hash, ? AS identity) AS j
           WHERE ${IDENTITY("max_active")} = 0
              OR COALESCE((SELECT a.n FROM active_jobs a
                           WHERE a.fair_key = CASE WHEN j.user_id IS NULL
                                                   THEN 'project:' || CAST(j.project_id AS INTEGER)
                                                   ELSE 'user:' || CAST(j.user_id AS INTEGER) END), 0)
                 < ${IDENTITY("max_active")}
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
  /**
   * The input object's R2 ETag, and shared/identity.ts's paramsHash of the job (without them, the
   * job is identical to no other).
   */
  input_etag?: string | undefined;
  params_hash?: string | undefined;
  /** False: `"reuse": false` (default true). */
  reuse?: boolean | undefined;
  supersede_key?: string | undefined;
  /** Its lane: `standard` when not said. */
  priority?: Lane | undefined;
  /** The endpoint whose dispatcher is to hold it (its type's first); null: RUNPOD_ENDPOINT_ID. */
  endpoint_id?: string | null | undefined;
  /** MAX_ACTIVE_PER_USER: not inserted while its fairness key has this many active jobs; 0: no limit. */
  max_active?: number | undefined;
}

/**
 * What an insert did: the new job (null for an Idempotency-Key already used, or a fairness key at
 * its quota), and the jobs it superseded.
 */
export interface Inserted {
  row: JobRow | null;
  superseded: JobRow[];
}

/** INSERT_SQL.insert's parameters for `job`, in order. */
export function insertBinds(job: NewJob): unknown[] {
  return [
    job.id,
    job.project_id,
    job.user_id ?? null,
    job.type,
    job.input_video_key,
    JSON.stringify(job.params),
    job.idempotency?.key ?? null,
    job.idempotency?.requestHash ?? null,
    JSON.stringify({
      input_etag: job.input_etag ?? null,
      params_hash: job.params_hash ?? null,
      reuse: job.reuse === false ? 0 : 1,
      supersede_key: job.supersede_key ?? null,
      priority: job.priority ?? "standard",
      endpoint: job.endpoint_id ?? null,
      max_active: job.max_active ?? 0,
    }),
  ];
}

/**
 * The seed's "create job", with `pending` and due now; with a supersede key, the older jobs under
 * it end in the same transaction (TRANSITION_SQL.supersede). `row` is null when the project
 * already has a job under the same Idempotency-Key (the unique index decides, also for two racing
 * requests); then nothing is superseded. Safe to retry: a second try of a committed insert
 * conflicts on the id and supersedes nothing more — and when the first try's answer was lost, the
 * row under this (fresh) id and the jobs it superseded are read back: they are this insert's.
 * `cancelRetryS`: when a superseded job's run is to be cancelled again if RunPod's /cancel fails.
 */
export async function insertJob(
  db: D1Database,
  job: NewJob,
  cancelRetryS: number,
): Promise<Inserted> {
  const insert = db.prepare(INSERT_SQL.insert).bind(...insertBinds(job));
  const key = job.supersede_key;
  const statements =
    key === undefined
      ? [insert]
      : [
          insert,
          db
            .prepare(TRANSITION_SQL.supersede)
            .bind(
              job.id,
              seconds(cancelRetryS),
              job.project_id,
              key,
              job.id,
              job.params_hash ?? null,
              job.input_etag ?? null,
              job.id,
            ),
        ];
  // One statement without a key; with one, a batch: D1 runs it as one transaction.
  const { value, ambiguous } = await retryTransientOutcome(() =>
    statements.length === 1
      ? insert.all<JobRow>().then((one) => [one])
      : db.batch<JobRow>(statements),
  );
  const row = value[0]?.results[0] ?? null;
  const superseded = value[1]?.results ?? [];
  if (row || !ambiguous) return { row, superseded };
  // A try whose answer was lost may have committed: the row under this id is this insert's.
  const now = await firstRow(db, "SELECT * FROM export_jobs WHERE id = ?", job.id);
  if (!now) return { row: null, superseded: [] };
  log("warn", "a write whose answer was lost had committed", { job_id: job.id });
  return {
    row: now,
    superseded:
      key === undefined
        ? []
        : await allRows(db, TRANSITION_SQL.supersededBy, job.project_id, key, job.id),
  };
}
