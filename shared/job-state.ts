// The job state machine. Every handler — the consumer, the webhook, the progress route, the
// reconciler and cancel — changes a job only through the functions here, which call the guarded
// statements of shared/job-repository.ts.
//
//   pending --claim--> processing --COMPLETED--> complete (progress 100, output_video_key)
//      ^                   |  submit failed / FAILED / TIMED_OUT / run lost
//      |                   v
//      +---- seed CASE: retry_count < 3 ? pending : error   (retry_count + 1, error = message)
//   cancel (pending|processing) --> error, error = 'cancelled'
//
// The attempt number of a run is the job's retry_count when it was claimed; webhook and progress
// URLs carry it, so news about an older attempt matches no row and changes nothing.

import type { JobMessage } from "./env.ts";
import type { JobRow } from "./job-repository.ts";
import * as repo from "./job-repository.ts";
import type { RunpodStatusObject } from "./schemas.ts";
import { r2Key } from "./schemas.ts";
import type { RetrySettings } from "./settings.ts";

/** Where the GPU worker writes the result unless it reports another key. */
export function plannedOutputKey(job: Pick<JobRow, "id" | "project_id">): string {
  return `exports/${job.project_id}/${job.id}.mp4`;
}

/**
 * Capped exponential delay with "equal jitter": the n-th failure waits between half and all of
 * min(max, base·2^(n-1)) seconds, so delays grow from one failure to the next and are spread out.
 */
export function retryDelaySeconds(
  failures: number,
  retry: RetrySettings,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(retry.maxDelayS, retry.baseDelayS * 2 ** Math.max(0, failures - 1));
  return Math.ceil(ceiling / 2 + random() * (ceiling / 2));
}

export interface Failure {
  status: "pending" | "error";
  retryCount: number;
  /** Seconds until a re-pended job may be tried again (0 when it ended in error). */
  delayS: number;
}

/**
 * failRun: the seed's CASE retry for `attempt`. Null when the attempt is no longer current
 * (already failed, completed, cancelled or re-claimed) — then nothing changed.
 */
export async function failRun(
  db: D1Database,
  retry: RetrySettings,
  job: Pick<JobRow, "id">,
  attempt: number,
  runpodJobId: string | null,
  error: string,
): Promise<Failure | null> {
  const delayS = retryDelaySeconds(attempt + 1, retry);
  const row = await repo.failAttempt(db, job.id, attempt, runpodJobId, error, delayS);
  if (!row) return null;
  const status = row.status === "pending" ? "pending" : "error";
  return { status, retryCount: row.retry_count, delayS: status === "pending" ? delayS : 0 };
}

/** Puts a re-pended job back on the queue after its retry delay. */
export async function requeue(
  queue: Queue<JobMessage>,
  jobId: string,
  delayS: number,
): Promise<void> {
  // Queues accept delays up to 12 hours.
  await queue.send({ job_id: jobId }, { delaySeconds: Math.min(delayS, 43_200) });
}

export type RunOutcome =
  | "completed"
  | "retrying"
  | "failed"
  | "cancelled"
  | "progress"
  | "unchanged";

export interface RunStatusDeps {
  db: D1Database;
  queue: Queue<JobMessage>;
  retry: RetrySettings;
  pollAfterS: number;
}

function progressOf(output: unknown): number | null {
  if (typeof output !== "object" || output === null) return null;
  const value = (output as { progress?: unknown }).progress;
  return typeof value === "number" && value >= 0 && value <= 100 ? Math.floor(value) : null;
}

function errorText(status: RunpodStatusObject): string {
  const detail = typeof status.error === "string" ? status.error : JSON.stringify(status.error);
  return detail ? `RunPod ${status.status}: ${detail}` : `RunPod ${status.status}`;
}

/**
 * applyRunStatus: what RunPod says about a run — from its webhook or from the reconciler's poll —
 * applied to attempt `attempt` of `job`. Safe to repeat: a second delivery matches no row.
 */
export async function applyRunStatus(
  deps: RunStatusDeps,
  job: JobRow,
  attempt: number,
  run: RunpodStatusObject,
): Promise<RunOutcome> {
  switch (run.status) {
    case "COMPLETED": {
      const reported = (run.output as { output_video_key?: unknown } | undefined)?.output_video_key;
      const outputKey = r2Key.safeParse(reported).success
        ? (reported as string)
        : plannedOutputKey(job);
      const done = await repo.completeJob(deps.db, job.id, attempt, run.id, outputKey);
      return done ? "completed" : "unchanged";
    }
    case "FAILED":
    case "TIMED_OUT": {
      const failure = await failRun(deps.db, deps.retry, job, attempt, run.id, errorText(run));
      if (!failure) return "unchanged";
      if (failure.status === "error") return "failed";
      await requeue(deps.queue, job.id, failure.delayS);
      return "retrying";
    }
    case "CANCELLED": {
      const ended = await repo.endRunCancelled(deps.db, job.id, attempt, run.id);
      return ended ? "cancelled" : "unchanged";
    }
    case "IN_QUEUE":
    case "IN_PROGRESS": {
      const progress = progressOf(run.output);
      if (progress === null) return "unchanged";
      const raised = await repo.recordProgress(deps.db, job.id, attempt, progress, deps.pollAfterS);
      return raised ? "progress" : "unchanged";
    }
  }
}
