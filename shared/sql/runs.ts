// The runs' records and the per-day usage (migration 0010): GPU seconds, counted.
//
// The statements that record and end a run on `export_jobs` keep `export_runs` and `usage_daily`
// through their triggers, in the same statement. What is here is what no job statement carries:
// news of a run that came after its job moved on (late news), and GET /usage's read.

import { retryTransient } from "../d1-retry.ts";
import { NOW } from "./time.ts";

export const RUN_SQL = {
  // Late news: the run's record gets its figures (created when the pipeline never learned of the
  // run: a duplicate whose /run answer was lost), and the execution time it adds reaches
  // usage_daily through `late_ms` (its triggers). A repeat adds nothing: only a larger
  // executionTime changes the record.
  late: `INSERT INTO export_runs
           (runpod_job_id, job_id, attempt, project_id, user_id, submitted_at, ended_at, outcome,
            delay_ms, execution_ms, late_ms)
         VALUES (?, ?, ?, ?, ?, ${NOW}, ${NOW}, ?, ?, ?, ?)
         ON CONFLICT (runpod_job_id) DO UPDATE SET
           late_ms = late_ms + (excluded.execution_ms - COALESCE(execution_ms, 0)),
           execution_ms = excluded.execution_ms,
           delay_ms = COALESCE(delay_ms, excluded.delay_ms),
           ended_at = COALESCE(ended_at, excluded.ended_at),
           outcome = COALESCE(outcome, excluded.outcome)
         WHERE COALESCE(execution_ms, 0) < excluded.execution_ms`,
  // GET /usage: one range of the (kind, day, key) primary key; summed per key by the caller
  // (SQL's GROUP BY and ORDER BY would read every row again through their temporary b-trees).
  usage: `SELECT key, exports, complete, error, gpu_ms FROM usage_daily
          WHERE kind = ? AND day >= ? AND day <= ?`,
  // A job's runs, oldest first.
  byJob: `SELECT * FROM export_runs WHERE job_id = ? ORDER BY attempt, submitted_at`,
} as const;

export interface LateRun {
  runpodJobId: string;
  jobId: string;
  attempt: number;
  projectId: number;
  userId: number | null;
  outcome: string;
  delayMs: number | null;
  executionMs: number;
}

/** Late news of a run: its record and the day's usage learn its execution time. */
export async function recordLateRun(db: D1Database, run: LateRun): Promise<void> {
  await retryTransient(() =>
    db
      .prepare(RUN_SQL.late)
      .bind(
        run.runpodJobId,
        run.jobId,
        run.attempt,
        run.projectId,
        run.userId,
        run.outcome,
        run.delayMs,
        Math.max(0, Math.round(run.executionMs)),
        Math.max(0, Math.round(run.executionMs)),
      )
      .run(),
  );
}

export interface UsageRow {
  key: number;
  exports: number;
  complete: number;
  error: number;
  gpu_ms: number;
}

/** Per key over the days `from`…`to` (UTC, YYYY-MM-DD, both included): most GPU time first. */
export async function readUsage(
  db: D1Database,
  groupBy: "user" | "project",
  from: string,
  to: string,
): Promise<{ rows: UsageRow[]; rowsRead: number }> {
  const result = await retryTransient(() =>
    db.prepare(RUN_SQL.usage).bind(groupBy, from, to).all<UsageRow>(),
  );
  const byKey = new Map<number, UsageRow>();
  for (const day of result.results) {
    const sum = byKey.get(day.key);
    if (!sum) byKey.set(day.key, { ...day });
    else {
      sum.exports += day.exports;
      sum.complete += day.complete;
      sum.error += day.error;
      sum.gpu_ms += day.gpu_ms;
    }
  }
  const rows = [...byKey.values()].sort((a, b) => b.gpu_ms - a.gpu_ms || a.key - b.key);
  return { rows, rowsRead: result.meta.rows_read };
}

export interface RunRecord {
  runpod_job_id: string;
  job_id: string;
  attempt: number;
  endpoint_id: string | null;
  project_id: number;
  user_id: number | null;
  submitted_at: string;
  ended_at: string | null;
  outcome: string | null;
  delay_ms: number | null;
  execution_ms: number | null;
  late_ms: number;
}

export async function runsOfJob(db: D1Database, jobId: string): Promise<RunRecord[]> {
  const { results } = await retryTransient(() =>
    db.prepare(RUN_SQL.byJob).bind(jobId).all<RunRecord>(),
  );
  return results;
}
