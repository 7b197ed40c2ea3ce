// Every statement on `export_job_events`: a job's timeline. The rows are written by migration
// 0005's triggers, in the same statement as the change each records, and by recordDeadLetters.
import { retryTransient } from "../d1-retry.ts";
import { ARCHIVED_PAIRS } from "./jobs/archive.ts";
import { READ_SQL } from "./jobs/reads.ts";
import type { JobRow } from "./jobs/row.ts";

/** The timeline's event types, as migration 0005's triggers and recordDeadLetters write them. */
export const EVENT_TYPES = [
  "created",
  "claimed",
  "submitted",
  "submit_failed",
  "released",
  "progress",
  "completed",
  "failed",
  "cancelled",
  "dead_lettered",
  "replayed",
  "retried",
  "expired",
  "superseded",
  "reused",
  "notified",
  "notify_failed",
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

export interface JobEvent {
  at: string;
  attempt: number;
  type: EventType;
  runpod_job_id?: string;
  detail?: string;
}

/** A row of byJob; byJobs adds `job_id`. */
export interface EventRow {
  at: string;
  attempt: number;
  type: EventType;
  runpod_job_id: string | null;
  detail: string | null;
}

export const EVENT_SQL = {
  byJob: `SELECT at, attempt, type, runpod_job_id, detail FROM export_job_events
          WHERE job_id = ? ORDER BY version, at`,
  // Retention: the events of a batch of jobs, each job's in byJob's order, within a range of
  // versions. Every event but a dead letter's has a version of its own, so a range of N versions
  // holds about N rows: shared/archive.ts sizes the ranges so that no statement touches more than
  // 1,000 rows, however long a timeline is.
  byJobs: `SELECT job_id, at, attempt, type, runpod_job_id, detail FROM export_job_events
           WHERE job_id IN (SELECT value FROM json_each(?)) AND version >= ? AND version < ?
           ORDER BY job_id, version, at`,
  // The same ranges, deleted in the archive's transaction for jobs still as they were archived.
  deleteArchived: `DELETE FROM export_job_events
                   WHERE job_id IN (SELECT id FROM export_jobs WHERE ${ARCHIVED_PAIRS})
                     AND version >= ? AND version < ?`,
} as const;

/** An event as the API answers it: without the columns that are null. */
export function toEvent({ runpod_job_id, detail, ...event }: EventRow): JobEvent {
  return {
    ...event,
    ...(runpod_job_id ? { runpod_job_id } : {}),
    ...(detail ? { detail } : {}),
  };
}

/** A job's events, oldest first (the primary key's order). */
export async function listEvents(db: D1Database, jobId: string): Promise<JobEvent[]> {
  const { results } = await retryTransient(() =>
    db.prepare(EVENT_SQL.byJob).bind(jobId).all<EventRow>(),
  );
  return results.map(toEvent);
}

/**
 * A job's events, or null when the job is not in D1 (never was, or archived) or, with `projects`,
 * is not of one of them (the statement that reads the job checks it). One transaction, so
 * a job archived meanwhile is either read whole or not at all, never as a row without its events.
 */
export async function listJobEvents(
  db: D1Database,
  jobId: string,
  projects: readonly number[] | null = null,
): Promise<JobEvent[] | null> {
  const job =
    projects === null
      ? db.prepare(READ_SQL.byId).bind(jobId)
      : db.prepare(READ_SQL.byIdInProjects).bind(jobId, JSON.stringify(projects));
  const [found, events] = await retryTransient(() =>
    db.batch([job, db.prepare(EVENT_SQL.byJob).bind(jobId)]),
  );
  if (((found?.results ?? []) as JobRow[]).length === 0) return null;
  return ((events?.results ?? []) as EventRow[]).map(toEvent);
}
