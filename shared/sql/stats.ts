// GET /stats in one round trip that reads a few rows: status counts come from `job_counts`
// (kept by migration 0004's triggers in the same transaction as every change of export_jobs), the
// archived count from `archive_counts` (raised in the archive's own transaction, migration 0007).

import { retryTransient } from "../d1-retry.ts";
import { ARCHIVED_PAIRS } from "./jobs/archive.ts";
import type { JobStatus } from "./jobs/row.ts";

export interface Stats {
  jobs: Record<JobStatus, number>;
  oldest_pending_created_at: string | null;
  oldest_pending_age_s: number | null;
  processing_without_run: number;
  dead_letters: { total: number; not_replayed: number };
}

/** GET /stats' counts since retention (migration 0007); older producers answered Stats alone. */
export interface StatsWithArchive extends Stats {
  /** Jobs archived to R2 and deleted from D1 so far (shared/archive.ts). */
  archived: number;
}

export const STATS_SQL = {
  counts: "SELECT status, n FROM job_counts",
  oldestPending: `SELECT created_at,
                         CAST(ROUND((julianday('now') - julianday(created_at)) * 86400) AS INTEGER) AS age_s
                  FROM export_jobs WHERE status = 'pending' ORDER BY created_at LIMIT 1`,
  // Processing jobs are bounded by the runs in flight; (status, due_at) holds them.
  processingWithoutRun:
    "SELECT COUNT(*) AS n FROM export_jobs WHERE status = 'processing' AND runpod_job_id IS NULL",
  deadLetters: `SELECT COUNT(*) AS total, COALESCE(SUM(replayed_at IS NULL), 0) AS not_replayed
                FROM dead_letters`,
  archived: "SELECT archived FROM archive_counts WHERE id = 1",
  // GET /metrics' counters (migration 0015): a couple of rows.
  totals: "SELECT name, value FROM metric_totals",
  // In the archive's transaction, before its deletes: raised by the rows they are about to delete.
  addArchived: `UPDATE archive_counts
                SET archived = archived + (SELECT COUNT(*) FROM export_jobs WHERE ${ARCHIVED_PAIRS})
                WHERE id = 1`,
} as const;

/** GET /metrics' running totals (migration 0015). */
export interface MetricTotals {
  /** GPU execution time of every run counted so far (ms). */
  gpu_ms: number;
  /** Outbound webhook deliveries that ended failed. */
  notify_failures: number;
}

export async function readStats(db: D1Database): Promise<StatsWithArchive> {
  return (await readStatsAnd(db, false)).stats;
}

/** GET /stats' counts and GET /metrics' totals in one round trip (a few rows). */
export async function readStatsAndTotals(
  db: D1Database,
): Promise<{ stats: StatsWithArchive; totals: MetricTotals }> {
  return readStatsAnd(db, true);
}

async function readStatsAnd(
  db: D1Database,
  withTotals: boolean,
): Promise<{ stats: StatsWithArchive; totals: MetricTotals }> {
  const [byStatus, oldest, withoutRun, letters, archived, totalRows] = await retryTransient(() =>
    db.batch([
      db.prepare(STATS_SQL.counts),
      db.prepare(STATS_SQL.oldestPending),
      db.prepare(STATS_SQL.processingWithoutRun),
      db.prepare(STATS_SQL.deadLetters),
      db.prepare(STATS_SQL.archived),
      ...(withTotals ? [db.prepare(STATS_SQL.totals)] : []),
    ]),
  );
  const jobs: Record<JobStatus, number> = { pending: 0, processing: 0, complete: 0, error: 0 };
  for (const row of (byStatus?.results ?? []) as { status: JobStatus; n: number }[]) {
    jobs[row.status] = row.n;
  }
  const first = (oldest?.results as { created_at: string; age_s: number }[] | undefined)?.[0];
  const counts = (letters?.results as { total: number; not_replayed: number }[] | undefined)?.[0];
  const totals: MetricTotals = { gpu_ms: 0, notify_failures: 0 };
  for (const row of (totalRows?.results ?? []) as { name: string; value: number }[]) {
    if (row.name === "gpu_ms" || row.name === "notify_failures") totals[row.name] = row.value;
  }
  return {
    stats: {
      jobs,
      oldest_pending_created_at: first?.created_at ?? null,
      oldest_pending_age_s: first?.age_s ?? null,
      processing_without_run: (withoutRun?.results as { n: number }[] | undefined)?.[0]?.n ?? 0,
      dead_letters: { total: counts?.total ?? 0, not_replayed: counts?.not_replayed ?? 0 },
      archived: (archived?.results as { archived: number }[] | undefined)?.[0]?.archived ?? 0,
    },
    totals,
  };
}
