// A new job: the one INSERT on `export_jobs`, and with a supersede key, the end of the older jobs
// under that key in the same transaction.

import { retryTransientOutcome } from "../../d1-retry.ts";
import { fairKeyOf } from "../../fair-queue.ts";
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
  // A batch's quota, first in its transaction: `?` is a JSON object {fair key: its new jobs}; a
  // key whose active jobs plus its new ones would pass the maximum makes `ok` 0, which the
  // table's CHECK refuses, rolling the whole batch back (migration 0016). One primary-key read
  // of active_jobs per key. (OR REPLACE: a CHECK failure still aborts; a batch id met again —
  // only a bench's repeats — replaces its row.)
  quotaCheck: `INSERT OR REPLACE INTO quota_checks (batch, ok)
               SELECT ?, NOT EXISTS (
                 SELECT 1 FROM json_each(?)
                 WHERE COALESCE((SELECT a.n FROM active_jobs a
                                 WHERE a.fair_key = json_each.key), 0)
                       + json_each.value > ?)`,
  quotaChecked: "DELETE FROM quota_checks WHERE batch = ?",
  // A batch tried again after an answer that was lost: what the first try inserted, if anything.
  byIds: "SELECT * FROM export_jobs WHERE id IN (SELECT value FROM json_each(?))",
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

/** The supersede statement of `job`'s insert (TRANSITION_SQL.supersede) under `key`. */
function supersedeOf(
  db: D1Database,
  job: NewJob,
  key: string,
  cancelRetryS: number,
): D1PreparedStatement {
  return db
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
    );
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
    key === undefined ? [insert] : [insert, supersedeOf(db, job, key, cancelRetryS)];
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

/** What a batch insert did: each job's row in order (null: its Idempotency-Key was taken). */
export interface BatchInserted {
  rows: (JobRow | null)[];
  superseded: JobRow[];
}

/**
 * POST /exports/batch: every job of `jobs` in one D1 transaction (one `batch`), each with its
 * supersede statement when it has a key; with `maxActive` > 0, the quota is checked first for
 * the whole batch (INSERT_SQL.quotaCheck): "quota_exceeded" when a fairness key would pass it,
 * and then nothing is written. Safe to retry: a try after one whose answer was lost reads back
 * what it committed (all of the batch or none of it) before anything else.
 */
export async function insertJobs(
  db: D1Database,
  jobs: readonly NewJob[],
  cancelRetryS: number,
  maxActive: number,
): Promise<BatchInserted | "quota_exceeded"> {
  const batchId = crypto.randomUUID();
  const perKey: Record<string, number> = {};
  for (const job of jobs) {
    const key = fairKeyOf({ user_id: job.user_id ?? null, project_id: job.project_id });
    perKey[key] = (perKey[key] ?? 0) + 1;
  }
  const statements: D1PreparedStatement[] = [];
  /** Where each job's insert and supersede statements are in the batch. */
  const at: { insert: number; supersede: number | null }[] = [];
  if (maxActive > 0) {
    statements.push(
      db.prepare(INSERT_SQL.quotaCheck).bind(batchId, JSON.stringify(perKey), maxActive),
    );
  }
  for (const job of jobs) {
    const insert = statements.push(db.prepare(INSERT_SQL.insert).bind(...insertBinds(job))) - 1;
    const key = job.supersede_key;
    const supersede =
      key === undefined ? null : statements.push(supersedeOf(db, job, key, cancelRetryS)) - 1;
    at.push({ insert, supersede });
  }
  if (maxActive > 0) statements.push(db.prepare(INSERT_SQL.quotaChecked).bind(batchId));
  const ids = JSON.stringify(jobs.map((job) => job.id));
  let tries = 0;
  try {
    const { value } = await retryTransientOutcome(async () => {
      tries += 1;
      if (tries > 1) {
        const committed = await allRows(db, INSERT_SQL.byIds, ids);
        if (committed.length > 0) return { readBack: committed };
      }
      return { results: await db.batch<JobRow>(statements) };
    });
    if (value.readBack !== undefined) {
      log("warn", "a batch insert whose answer was lost had committed", { jobs: jobs.length });
      const byId = new Map(value.readBack.map((row) => [row.id, row]));
      const superseded: JobRow[] = [];
      for (const job of jobs) {
        if (job.supersede_key === undefined || !byId.has(job.id)) continue;
        superseded.push(
          ...(await allRows(
            db,
            TRANSITION_SQL.supersededBy,
            job.project_id,
            job.supersede_key,
            job.id,
          )),
        );
      }
      return { rows: jobs.map((job) => byId.get(job.id) ?? null), superseded };
    }
    const results = value.results ?? [];
    return {
      rows: at.map(({ insert }) => results[insert]?.results[0] ?? null),
      superseded: at.flatMap(({ supersede }) =>
        supersede === null ? [] : (results[supersede]?.results ?? []),
      ),
    };
  } catch (error) {
    if (/CHECK constraint failed/i.test(String(error))) return "quota_exceeded";
    throw error;
  }
}
