// Every statement on `export_job_events`: a job's timeline. The rows are written by migration
// 0005's triggers, in the same statement as the change each records, and by recordDeadLetters.
import { retryTransient } from "../d1-retry.ts";

export interface JobEvent {
  at: string;
  attempt: number;
  type: string;
  runpod_job_id?: string;
  detail?: string;
}

interface EventRow {
  at: string;
  attempt: number;
  type: string;
  runpod_job_id: string | null;
  detail: string | null;
}

export const EVENT_SQL = {
  byJob: `SELECT at, attempt, type, runpod_job_id, detail FROM export_job_events
          WHERE job_id = ? ORDER BY version, at`,
} as const;

/** A job's events, oldest first (the primary key's order). */
export async function listEvents(db: D1Database, jobId: string): Promise<JobEvent[]> {
  const { results } = await retryTransient(() =>
    db.prepare(EVENT_SQL.byJob).bind(jobId).all<EventRow>(),
  );
  return results.map(({ runpod_job_id, detail, ...event }) => ({
    ...event,
    ...(runpod_job_id ? { runpod_job_id } : {}),
    ...(detail ? { detail } : {}),
  }));
}
