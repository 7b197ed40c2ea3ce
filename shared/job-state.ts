// The job state machine. Every handler — the consumer, the webhook, the progress route, the
// reconciler, cancel, replay and operator retry — changes a job only through the functions here,
// which call the guarded statements of shared/sql/jobs/ (transitions.ts, leases.ts).
//
//   pending --claim (attempt + 1)--> processing --COMPLETED--> complete (progress 100, output key)
//    ^  ^                              |   |  submit failed / FAILED / TIMED_OUT / run lost
//    |  |                              |   v
//    |  |                              |  seed CASE: retry_count < 3 ? pending : error
//    |  +------------ release ---------+  (429, dispatch paused, bad RunPod key, a claim timeout
//    |                                     that would spend the last retry: not the job's fault;
//    |                                     retry_count unchanged)
//    +-- replay of a dead letter / operator retry (error, not cancelled): retry_count = 0
//   cancel (pending|processing) --> error 'cancelled'    (RunPod /cancel when a run exists)
//   superseded (pending|processing) --> error 'superseded by <id>'   (as cancel; in the insert of
//                                       the newer job under the same supersede key)
//   pending --reused: an identical complete job's output copied--> complete (reused_from, no run)
//   pending PENDING_MAX_AGE_S after it was wanted --> error 'expired: …'   (never a follower)
//
// Single flight: a job created while an identical one is on its way follows it (`follows`): the
// consumer holds it (due_at cleared) instead of offering it to the dispatcher. The leader's end
// wakes it (migration 0011's trigger makes it due, wakeFollowers sends its message): it then
// reuses the leader's output, or, when the leader ended without one, is an ordinary job.
//
// Attempts never repeat: every claim raises `attempt`, webhook and progress URLs carry it, and
// news about any other attempt matches no row and changes nothing (progress of another attempt
// answers 409 stale_attempt, so its run stops; its GPU time still reaches the run's record).
//
// Every statement that changed a row — a transition, and the bookkeeping too (a reconciler lease,
// a hold, a cancel retry: they move due_at and raise version) — hands it to publishJobs (live
// status), the one place that publishes, so a live view always ends at D1's version; each
// transition also writes the job's timeline event in the same statement (migration 0005's trigger
// on `last_event`).

import type { RunFigures } from "./capacity.ts";
import type { JobMessage } from "./env.ts";
import { groupBy } from "./group-by.ts";
import { LivePublicationError, type LivePublisher } from "./live-publisher.ts";
import { log } from "./log.ts";
import { notificationIdOf } from "./notify.ts";
import { copyObject } from "./r2-copy.ts";
import type { RunpodClient } from "./runpod-client.ts";
import type { RunpodStatusObject } from "./schemas.ts";
import { r2Key } from "./schemas.ts";
import type { RetrySettings } from "./settings.ts";
import * as deadLetters from "./sql/dead-letters.ts";
import { insertJob, insertJobs, type NewJob } from "./sql/jobs/insert.ts";
import * as leases from "./sql/jobs/leases.ts";
import { getJob } from "./sql/jobs/reads.ts";
import { type JobRow, toJob } from "./sql/jobs/row.ts";
import * as transitions from "./sql/jobs/transitions.ts";
import { recordLateRun } from "./sql/runs.ts";

/** Queues accept delays up to 12 hours. */
export const MAX_QUEUE_DELAY_S = 43_200;

/**
 * What every transition needs: the database, the queue to re-enqueue on, the retry policy, the
 * bucket that must hold a completed job's output, and where changes are published.
 */
export interface JobDeps {
  db: D1Database;
  queue: Queue<JobMessage>;
  retry: RetrySettings;
  pollAfterS: number;
  videos: R2Bucket;
  live: LivePublisher;
  /**
   * The dispatchers' runs in flight (shared/dispatcher.ts), one per RunPod endpoint (null:
   * RUNPOD_ENDPOINT_ID's): a job's slot frees, at the dispatcher of its endpoint
   * (`runpod_endpoint_id`), when its run ends.
   */
  slots: (endpointId: string | null) => Slots;
  /**
   * Lets publication finish after the answer (an HTTP handler's `waitUntil`), so a request does
   * not wait for live clients; without it, publication is awaited.
   */
  defer?: (work: Promise<unknown>) => void;
  /**
   * With NOTIFY_URL: asks the consumer to deliver these notifications now (the outbox rows the
   * ending statements wrote); the cron's sweep delivers them all the same if this fails.
   */
  notify?: (notificationIds: string[]) => Promise<void>;
}

/** RunPod's client for an endpoint (null: RUNPOD_ENDPOINT_ID). */
export interface RunpodDeps {
  runpodOf(endpointId: string | null): RunpodClient;
}

export interface Slots {
  /** `runs`: figures of the runs that ended, for the dispatcher's fleet model. */
  free(jobIds: string[], runs?: RunFigures[]): Promise<void>;
}

/** How long until a slot whose free failed is freed again through the queue. */
export const FREE_RETRY_S = 5;

/**
 * freeSlots: a run ended (completed, failed, cancelled, released, lost) or a waiting job left
 * (cancelled, expired); the dispatcher admits the next fairest job. Freeing is idempotent, so
 * every path frees its slot exactly once. When the dispatcher does not answer (a deploy resets
 * it), freeing is made durable through the queue: a finished job's message comes back after
 * FREE_RETRY_S and the consumer that receives it frees the slot (consumer/process-jobs.ts). A
 * job back to pending needs no such message: its own message comes after its delay and the
 * dispatcher hands its slot back to it. The reconciler's heal stays the last net.
 */
async function freeSlots(
  deps: JobDeps,
  rows: readonly (JobRow | null)[],
  runs: RunFigures[] = [],
): Promise<void> {
  const changed = rows.filter((row): row is JobRow => row !== null);
  await freeDurably(deps, changed, runs);
  await wakeFollowers(deps, changed);
}

/**
 * A leader that ended (complete or error) sends its waiting followers' messages now; the
 * statement that ended it made them due (migration 0011), so a send that fails is made up by the
 * reconciler's lost-message lease. Only a leader that has followers costs a read.
 */
async function wakeFollowers(deps: JobDeps, rows: readonly JobRow[]): Promise<void> {
  const leaders = rows
    .filter((row) => row.followers > 0 && (row.status === "complete" || row.status === "error"))
    .map((row) => row.id);
  if (leaders.length === 0) return;
  try {
    await requeue(deps.queue, await leases.followersOf(deps.db, leaders), 0);
  } catch (error) {
    log("warn", "waking followers failed; the reconciler will", {
      leaders,
      error: String(error),
    });
  }
}

/**
 * Frees the slots of `jobs` (idempotent); when the dispatcher does not answer, the finished ones
 * go back on the queue after FREE_RETRY_S, and the consumer that receives a finished job's
 * message calls this again (consumer/process-jobs.ts).
 */
export async function freeDurably(
  deps: Pick<JobDeps, "slots" | "queue">,
  jobs: readonly Pick<JobRow, "id" | "status" | "runpod_endpoint_id">[],
  runs: RunFigures[] = [],
): Promise<void> {
  if (jobs.length === 0) return;
  // Each at the dispatcher of its endpoint (one, nearly always).
  for (const [endpoint, group] of groupBy(jobs, (job) => job.runpod_endpoint_id)) {
    const ids = group.map((job) => job.id);
    try {
      await deps.slots(endpoint).free(ids, runs);
    } catch (error) {
      log("warn", "freeing dispatch slots failed; tried again through the queue", {
        jobs: ids,
        endpoint,
        error: String(error),
      });
      await requeue(
        deps.queue,
        group
          .filter((job) => job.status === "complete" || job.status === "error")
          .map((job) => job.id),
        FREE_RETRY_S,
      );
    }
  }
}

/**
 * publishJobs: the one function through which every change reaches live clients. D1 already has
 * the change; a publication that fails is logged and changes nothing.
 */
export async function publishJobs(deps: JobDeps, rows: readonly (JobRow | null)[]): Promise<void> {
  const changed = rows.filter((row): row is JobRow => row !== null);
  if (changed.length === 0) return;
  const publishing = publishNow(deps, changed);
  if (deps.defer) deps.defer(publishing);
  else await publishing;
}

async function publishNow(deps: JobDeps, changed: readonly JobRow[]): Promise<void> {
  const ended = changed.filter(
    (row) => (row.status === "complete" || row.status === "error") && row.last_event !== null,
  );
  if (deps.notify && ended.length > 0) {
    try {
      await deps.notify(ended.map((row) => notificationIdOf(row.id, row.version)));
    } catch (error) {
      log("warn", "notifications not handed to the queue; the cron sweeps them", {
        job_ids: ended.map((row) => row.id),
        error: String(error),
      });
    }
  }
  try {
    // One call for the statement's rows (the publisher makes one per live shard they touch).
    // Awaited inside the try: a publisher that throws instead of rejecting failed all the same.
    await deps.live.publish(changed.map(toJob));
  } catch (error) {
    log("warn", "live publication failed", {
      job_ids: error instanceof LivePublicationError ? error.jobIds : changed.map((row) => row.id),
      error: String(error),
    });
  }
}

/** Publishes `row` if there is one, and hands it back. */
async function published<T extends JobRow | null>(deps: JobDeps, row: T): Promise<T> {
  await publishJobs(deps, [row]);
  return row;
}

/**
 * createJob: the seed's "create job" (pending), or null for an Idempotency-Key already used. With
 * a supersede key, the older jobs it ended are published, their slots freed, their followers
 * woken and their runs cancelled at RunPod (after the answer when `defer` allows; the statement
 * left each a cancel retry, so a /cancel that fails or never runs is the reconciler's).
 */
export async function createJob(
  deps: JobDeps & Partial<RunpodDeps>,
  job: NewJob,
): Promise<JobRow | null> {
  const { row, superseded } = await insertJob(deps.db, job, CANCEL_RETRY_S);
  await publishJobs(deps, [row, ...superseded]);
  await endSuperseded(deps, job.id, superseded);
  return row;
}

/**
 * createJobs: POST /exports/batch's jobs in one transaction (createJob for each, the quota checked
 * for all of them at once): each row in order, null where its Idempotency-Key was already used;
 * "quota_exceeded" when the batch would pass MAX_ACTIVE_PER_USER for a key, and nothing written.
 */
export async function createJobs(
  deps: JobDeps & Partial<RunpodDeps>,
  jobs: readonly NewJob[],
  maxActive: number,
): Promise<(JobRow | null)[] | "quota_exceeded"> {
  const inserted = await insertJobs(deps.db, jobs, CANCEL_RETRY_S, maxActive);
  if (inserted === "quota_exceeded") return inserted;
  await publishJobs(deps, [...inserted.rows, ...inserted.superseded]);
  await endSuperseded(deps, `batch of ${jobs.length}`, inserted.superseded);
  return inserted.rows;
}

/**
 * What follows a supersede: the ended jobs' slots freed, their runs cancelled at RunPod (after
 * the answer when `defer` allows; the statement left each a cancel retry, so a /cancel that
 * fails or never runs is the reconciler's).
 */
async function endSuperseded(
  deps: JobDeps & Partial<RunpodDeps>,
  by: string,
  superseded: JobRow[],
): Promise<void> {
  if (superseded.length === 0) return;
  log("info", "jobs superseded", { job_id: by, superseded: superseded.map((old) => old.id) });
  await freeSlots(deps, superseded);
  const { runpodOf } = deps;
  if (!runpodOf) return;
  const cancelling = Promise.all(
    superseded.flatMap((old) =>
      old.runpod_job_id
        ? [cancelRunOf({ ...deps, runpodOf }, old.id, old.runpod_job_id, old.runpod_endpoint_id)]
        : [],
    ),
  );
  if (deps.defer) deps.defer(cancelling);
  else await cancelling;
}

/** The custom metadata key naming, on a reused job's output, the job it was copied from. */
export const REUSED_FROM_METADATA = "reused-from";

/**
 * reuseOutput: a pending job identical to the complete job `source` gets a copy of its output
 * at its own key (streamed), then completes (`reused_from`, event `reused`), without a run.
 * "missing": the source's output is gone (the job is an ordinary one then); null: the job was no
 * longer pending (its copy is left for the run that took it, which overwrites it).
 */
export async function reuseOutput(
  deps: JobDeps,
  job: Pick<JobRow, "id" | "project_id">,
  source: { id: string; outputVideoKey: string },
): Promise<JobRow | null | "missing"> {
  const key = plannedOutputKey(job);
  const copied = await copyObject(deps.videos, source.outputVideoKey, key, {
    // Not the source's run name (OUTPUT_RUN_METADATA): no run of this job wrote it.
    customMetadata: ({ [OUTPUT_RUN_METADATA]: _run, ...rest }) => ({
      ...rest,
      [REUSED_FROM_METADATA]: source.id,
    }),
  });
  if (!copied) return "missing";
  const row = await published(deps, await transitions.reuseOutput(deps.db, job.id, key, source.id));
  await freeSlots(deps, [row]);
  return row;
}

/**
 * Followers whose leader ended without an output to reuse: each follows another identical job on
 * its way, or none — then it is an ordinary job. One at a time, so that of several released
 * together the first leads and the others follow it (single flight, again). The rows, changed.
 */
export async function refollowJobs(deps: JobDeps, ids: readonly string[]): Promise<JobRow[]> {
  const rows: JobRow[] = [];
  for (const id of ids) {
    const row = await leases.refollow(deps.db, id);
    if (row) rows.push(row);
  }
  await publishJobs(deps, rows);
  return rows;
}

/** Where the GPU worker writes the result. */
export function plannedOutputKey(job: Pick<JobRow, "id" | "project_id">): string {
  return `exports/${job.project_id}/${job.id}.mp4`;
}

/** A key RunPod reports is honoured only inside the job's own project's exports. */
export function outputKeyOf(job: Pick<JobRow, "id" | "project_id">, reported: unknown): string {
  const parsed = r2Key.safeParse(reported);
  return parsed.success && parsed.data.startsWith(`exports/${job.project_id}/`)
    ? parsed.data
    : plannedOutputKey(job);
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
  return Math.min(MAX_QUEUE_DELAY_S, Math.ceil(ceiling / 2 + random() * (ceiling / 2)));
}

/**
 * Puts a job's message back on the queue after `delayS`: a fresh message, so waiting never
 * counts toward the queue's max_retries. A failed send leaves the job to the reconciler, which
 * re-enqueues pending jobs that look lost.
 */
export async function requeue(
  queue: Queue<JobMessage>,
  jobIds: readonly string[],
  delayS: number,
): Promise<void> {
  const delaySeconds = Math.max(0, Math.min(Math.ceil(delayS), MAX_QUEUE_DELAY_S));
  try {
    for (let i = 0; i < jobIds.length; i += 100) {
      const chunk = jobIds.slice(i, i + 100);
      await queue.sendBatch(
        chunk.map((id) => ({ body: { job_id: id } })),
        { delaySeconds },
      );
    }
  } catch (error) {
    log("warn", "re-enqueue failed; the reconciler will", { jobs: jobIds, error: String(error) });
  }
}

/**
 * claimJobs: pending → processing, a fresh attempt for each job that was still pending, to be
 * submitted to `endpointId` (null: RUNPOD_ENDPOINT_ID).
 */
export async function claimJobs(
  deps: JobDeps,
  ids: readonly string[],
  claimTimeoutS: number,
  endpointId: string | null = null,
): Promise<JobRow[]> {
  const claimed = await transitions.claimJobs(deps.db, ids, claimTimeoutS, endpointId);
  await publishJobs(deps, claimed);
  return claimed;
}

/**
 * recordRun: remember RunPod's id for the attempt that was claimed. When the attempt moved on
 * meanwhile (cancelled, claim timed out, replayed) the new run is not wanted and is cancelled,
 * unless a fast webhook already made it the job's run.
 */
export async function recordRun(
  deps: JobDeps & RunpodDeps,
  job: JobRow,
  runpodJobId: string,
): Promise<JobRow | null> {
  const row = await transitions.recordRun(
    deps.db,
    job.id,
    job.attempt,
    runpodJobId,
    deps.pollAfterS,
  );
  if (row) return published(deps, row);
  // Cancelled or superseded between claim and record: the run becomes the job's, with a cancel
  // retry due, so a /cancel that fails below is tried again by the reconciler.
  const adopted = await leases.adoptUnwantedRun(
    deps.db,
    job.id,
    job.attempt,
    runpodJobId,
    CANCEL_RETRY_S,
  );
  if (adopted) {
    await publishJobs(deps, [adopted]);
    await cancelRunOf(deps, job.id, runpodJobId, job.runpod_endpoint_id);
    return null;
  }
  const now = await getJob(deps.db, job.id);
  if (now?.runpod_job_id !== runpodJobId) {
    await deps
      .runpodOf(job.runpod_endpoint_id)
      .cancelRun(runpodJobId)
      .catch((error: unknown) => {
        log("warn", "cancel of an unwanted run failed", {
          job_id: job.id,
          attempt: job.attempt,
          runpod_job_id: runpodJobId,
          error: String(error),
        });
      });
    log("info", "unwanted run cancelled", {
      job_id: job.id,
      attempt: job.attempt,
      runpod_job_id: runpodJobId,
    });
  }
  return null;
}

/**
 * releaseJob: a claimed job that was not submitted, through no fault of its own (RunPod's rate
 * limit, dispatch paused, a bad RunPod key), goes back to pending with the same retry_count and is
 * re-enqueued after `delayS`.
 */
export async function releaseJob(deps: JobDeps, job: JobRow, delayS: number): Promise<boolean> {
  const row = await published(
    deps,
    await transitions.releaseJob(deps.db, job.id, job.attempt, delayS),
  );
  await freeSlots(deps, [row]);
  if (row) await requeue(deps.queue, [job.id], delayS);
  return row !== null;
}

export interface Failure {
  status: "pending" | "error";
  retryCount: number;
  /** Seconds until a re-pended job is tried again (0 when it ended in error). */
  delayS: number;
}

/**
 * failRun: the seed's CASE retry for `attempt` (with its run, when one was recorded or reported).
 * A re-pended job is re-enqueued after its delay. Null when the attempt is no longer current —
 * then nothing changed.
 */
export async function failRun(
  deps: JobDeps,
  job: JobRow,
  attempt: number,
  runpodJobId: string | null,
  error: string,
  event?: "submit_failed" | "failed",
  runs: RunFigures[] = [],
): Promise<Failure | null> {
  const delayS = retryDelaySeconds(job.retry_count + 1, deps.retry);
  const row = await published(
    deps,
    await transitions.failAttempt(
      deps.db,
      job,
      attempt,
      runpodJobId,
      error,
      delayS,
      event,
      spendOf(runs),
    ),
  );
  await freeSlots(deps, [row], runs);
  if (!row) return null;
  if (row.status === "pending") {
    await requeue(deps.queue, [job.id], delayS);
    return { status: "pending", retryCount: row.retry_count, delayS };
  }
  return { status: "error", retryCount: row.retry_count, delayS: 0 };
}

/** What the runs' news told of their GPU and queue time (0 for what it did not tell). */
function spendOf(runs: readonly RunFigures[]): transitions.RunSpend {
  return {
    executionMs: runs.reduce((n, run) => n + (run.executionMs ?? 0), 0),
    delayMs: runs.reduce((n, run) => n + (run.delayMs ?? 0), 0),
  };
}

export type RunOutcome =
  | "completed"
  | "retrying"
  | "failed"
  | "cancelled"
  | "progress"
  | "unchanged";

function progressOf(output: unknown): number | null {
  if (typeof output !== "object" || output === null) return null;
  const value = (output as { progress?: unknown }).progress;
  return typeof value === "number" && value >= 0 && value <= 100 ? Math.floor(value) : null;
}

function errorText(status: RunpodStatusObject): string {
  const detail = typeof status.error === "string" ? status.error : JSON.stringify(status.error);
  return detail ? `RunPod ${status.status}: ${detail}` : `RunPod ${status.status}`;
}

function failedOutcome(failure: Failure | null): RunOutcome {
  if (!failure) return "unchanged";
  return failure.status === "error" ? "failed" : "retrying";
}

/**
 * applyRunStatus: what RunPod says about a run — from its webhook or from the reconciler's poll —
 * applied to attempt `attempt` of `job`. Safe to repeat: a second delivery matches no row. News of
 * the current attempt's run before recordRun (a fast webhook, or a run whose `/run` answer timed
 * out) adopts that run instead of leaving it orphaned.
 */
export async function applyRunStatus(
  deps: JobDeps,
  job: JobRow,
  attempt: number,
  run: RunpodStatusObject,
): Promise<RunOutcome> {
  // What the run tells the dispatcher's fleet model (its time queued and on the GPU).
  const figures: RunFigures[] = [
    { type: job.type, delayMs: run.delayTime ?? null, executionMs: run.executionTime ?? null },
  ];
  const outcome = await applyRunNews(deps, job, attempt, run, figures);
  // News of a run that ended after its job moved on (cancelled, superseded, a duplicate run, a
  // stale attempt): the job does not change, but the GPU time it cost is counted (its record,
  // the day's usage).
  if (outcome === "unchanged" && TERMINAL_RUN.has(run.status) && (run.executionTime ?? 0) > 0) {
    await recordLateRun(deps.db, {
      runpodJobId: run.id,
      jobId: job.id,
      attempt,
      projectId: job.project_id,
      userId: job.user_id,
      outcome: run.status.toLowerCase(),
      delayMs: run.delayTime ?? null,
      executionMs: run.executionTime ?? 0,
    }).catch((error: unknown) => {
      log("warn", "late run figures not recorded", {
        job_id: job.id,
        attempt,
        runpod_job_id: run.id,
        error: String(error),
      });
    });
  }
  return outcome;
}

const TERMINAL_RUN = new Set(["COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"]);

async function applyRunNews(
  deps: JobDeps,
  job: JobRow,
  attempt: number,
  run: RunpodStatusObject,
  figures: RunFigures[],
): Promise<RunOutcome> {
  switch (run.status) {
    case "COMPLETED": {
      const reported = (run.output as { output_video_key?: unknown } | undefined)?.output_video_key;
      return completeRun(deps, job, attempt, run.id, outputKeyOf(job, reported), figures);
    }
    case "FAILED":
    case "TIMED_OUT":
      return failedOutcome(
        await failRun(deps, job, attempt, run.id, errorText(run), undefined, figures),
      );
    case "CANCELLED": {
      const ended = await published(
        deps,
        await transitions.endRunCancelled(deps.db, job, attempt, run.id, spendOf(figures)),
      );
      await freeSlots(deps, [ended]);
      return ended ? "cancelled" : "unchanged";
    }
    case "IN_QUEUE":
    case "IN_PROGRESS": {
      const progress = progressOf(run.output);
      if (progress === null) return "unchanged";
      const raised = await recordProgress(deps, job.id, attempt, progress, run.id);
      return raised ? "progress" : "unchanged";
    }
  }
}

/**
 * completeRun: a run reported COMPLETED counts only when its output is in R2; otherwise the
 * attempt failed with `output missing: <key>`.
 */
async function completeRun(
  deps: JobDeps,
  job: JobRow,
  attempt: number,
  runpodJobId: string | null,
  outputKey: string,
  runs: RunFigures[],
): Promise<RunOutcome> {
  if (!(await deps.videos.head(outputKey))) {
    return failedOutcome(
      await failRun(
        deps,
        job,
        attempt,
        runpodJobId,
        `output missing: ${outputKey}`,
        undefined,
        runs,
      ),
    );
  }
  return markComplete(deps, job, attempt, runpodJobId, outputKey, runs);
}

/** The transition to complete, for an output already found in R2. */
async function markComplete(
  deps: JobDeps,
  job: JobRow,
  attempt: number,
  runpodJobId: string | null,
  outputKey: string,
  runs: RunFigures[] = [],
): Promise<RunOutcome> {
  const done = await published(
    deps,
    await transitions.completeJob(deps.db, job, attempt, runpodJobId, outputKey, spendOf(runs)),
  );
  await freeSlots(deps, [done], runs);
  return done ? "completed" : "unchanged";
}

/** When the current attempt was claimed (`started_at`, UTC), in ms; 0 when unknown. */
export function claimedAt(job: Pick<JobRow, "started_at">): number {
  if (!job.started_at) return 0;
  const at = Date.parse(`${job.started_at.replace(" ", "T")}Z`);
  return Number.isFinite(at) ? at : 0;
}

/** The output object's custom metadata key naming the RunPod run that wrote it. */
export const OUTPUT_RUN_METADATA = "runpod-job-id";

/**
 * applyLostRun: the current attempt's run is lost — RunPod no longer knows it (a /status 404: its
 * 30-minute retention passed), or no run was recorded within the claim timeout (the consumer died
 * between claim and record, or RunPod's /run answer never came and no news of the run did
 * either). Either way the run may have finished and only its news been lost: the job is complete
 * when the planned output is in R2, and the attempt failed (the seed's CASE) when it is not.
 */
export async function applyLostRun(
  deps: JobDeps,
  job: JobRow,
  claimTimeoutS: number,
): Promise<RunOutcome> {
  const runId = job.runpod_job_id;
  const key = plannedOutputKey(job);
  const output = await deps.videos.head(key);
  // Every attempt writes the same key: only an object written since this attempt's claim is its
  // output (an older one is an earlier attempt's, from before a failure or an operator's retry).
  if (output && output.uploaded.getTime() >= claimedAt(job)) {
    // The handler names its run in the object's metadata (docs/gpu-worker.md), so an attempt
    // that recorded none still names the run that produced its output.
    const producedBy = output.customMetadata?.[OUTPUT_RUN_METADATA] ?? null;
    return markComplete(deps, job, job.attempt, runId ?? producedBy, key);
  }
  if (!runId && job.retry_count >= 3) {
    // A claim timeout takes the seed's CASE (the contract's reconciler), but never the last
    // retry: no run recorded means the submission was lost (a consumer that died, a /run answer
    // that timed out on a run RunPod never created), not that the job failed. Such a job is
    // released instead, its retry_count unchanged; only a genuine failure ends it.
    const delayS = retryDelaySeconds(job.retry_count + 1, deps.retry);
    return (await releaseJob(deps, job, delayS)) ? "retrying" : "unchanged";
  }
  const message = runId
    ? `RunPod run ${runId} not found (expired) and no output at ${key}`
    : `no RunPod run recorded within ${claimTimeoutS}s of the claim and no output at ${key}`;
  return failedOutcome(await failRun(deps, job, job.attempt, runId, message, "failed"));
}

/**
 * A progress report is written to D1 at most once per 25 points or per this many seconds (and
 * always when it adopts a run); the reports in between are published live only. Before, each
 * report wrote the row and its (status, due_at) entry: a handler reporting every 5 s over a 60 s
 * render doubled D1's writes per job. Well under POLL_AFTER_S, so a run that reports keeps
 * deferring the reconciler's poll.
 */
export const PROGRESS_WRITE_S = 60;

/**
 * Whether a report of `progress` for `row` (current attempt, processing, lower progress) is
 * written: it crosses a multiple of 25, the attempt has no run recorded yet (the report may adopt
 * it, and it moves the claim deadline), or the last news is PROGRESS_WRITE_S old. The last news
 * is known without a column: it set the poll time to news + POLL_AFTER_S (due.ts).
 */
export function writesProgress(
  row: Pick<JobRow, "progress" | "runpod_job_id" | "due_at">,
  progress: number,
  pollAfterS: number,
  now = Date.now(),
): boolean {
  if (Math.floor(progress / 25) > Math.floor(row.progress / 25)) return true;
  if (row.runpod_job_id === null || row.due_at === null) return true;
  const pollAt = Date.parse(`${row.due_at.replace(" ", "T")}Z`);
  if (!Number.isFinite(pollAt)) return true;
  return pollAt - pollAfterS * 1000 <= now - PROGRESS_WRITE_S * 1000;
}

/**
 * recordProgress: a progress report of attempt `attempt`. The job is read first (a primary-key
 * read): a report of another attempt, of a job no longer processing, or no higher than what is
 * known changes nothing. One that `writesProgress` is the guarded UPDATE (published as a change);
 * the others are published live only, at the row's version (`progress` messages).
 *
 * A report that names its run (`runpodJobId`) while the attempt has none recorded adopts it, as a
 * webhook would: the run whose `/run` answer timed out is then polled, cancelled and named like
 * any other. The adoption is a second statement only in that case.
 */
export async function recordProgress(
  deps: JobDeps,
  jobId: string,
  attempt: number,
  progress: number,
  runpodJobId?: string,
): Promise<JobRow | null> {
  const outcome = await reportProgress(deps, jobId, attempt, progress, runpodJobId);
  return outcome.kind === "recorded" ? outcome.row : null;
}

/**
 * What became of a progress report: written to D1 (`recorded`), published live only (`live`),
 * nothing (`unchanged`: not higher, the job finished, or no such job), or `stale`: the report is
 * of an attempt that is not the job's current one, so its run renders for nothing and is told to
 * stop (409 `stale_attempt`, docs/gpu-worker.md).
 */
export type ProgressOutcome =
  | { kind: "recorded"; row: JobRow }
  | { kind: "live" }
  | { kind: "unchanged" }
  | { kind: "stale" };

/** recordProgress, telling what became of the report (the progress route answers from it). */
export async function reportProgress(
  deps: JobDeps,
  jobId: string,
  attempt: number,
  progress: number,
  runpodJobId?: string,
): Promise<ProgressOutcome> {
  const row = await getJob(deps.db, jobId);
  if (!row) return { kind: "unchanged" };
  if (row.attempt !== attempt) return { kind: "stale" };
  if (row.status !== "processing" || row.progress >= progress) return { kind: "unchanged" };
  if (!writesProgress(row, progress, deps.pollAfterS)) {
    await publishProgress(deps, row, progress);
    return { kind: "live" };
  }
  const raised = await published(
    deps,
    await transitions.recordProgress(deps.db, jobId, attempt, progress, deps.pollAfterS),
  );
  if (!raised) return { kind: "unchanged" };
  if (!runpodJobId || raised.runpod_job_id !== null) return { kind: "recorded", row: raised };
  const adopted = await transitions.recordRun(
    deps.db,
    jobId,
    attempt,
    runpodJobId,
    deps.pollAfterS,
  );
  return { kind: "recorded", row: (await published(deps, adopted)) ?? raised };
}

/** Live only: progress D1 did not record, at the version D1 has. A failure is logged. */
async function publishProgress(deps: JobDeps, row: JobRow, progress: number): Promise<void> {
  // async: a publisher that throws instead of rejecting is a failed publication all the same.
  const publishing = (async () =>
    deps.live.progress({
      job_id: row.id,
      project_id: row.project_id,
      attempt: row.attempt,
      version: row.version,
      progress,
    }))().catch((error: unknown) => {
    log("warn", "live publication failed", {
      job_id: row.id,
      attempt: row.attempt,
      error: String(error),
    });
  });
  if (deps.defer) deps.defer(publishing);
  else await publishing;
}

/** How long until the reconciler tries RunPod's /cancel again after it failed. */
export const CANCEL_RETRY_S = 60;

/**
 * cancelJob: pending or processing → error 'cancelled', then RunPod's /cancel when a run exists.
 * A /cancel that fails is remembered and tried again by the reconciler. Null: the job had
 * finished (or does not exist).
 */
export async function cancelJob(
  deps: JobDeps & RunpodDeps,
  id: string,
  projects: readonly number[] | null = null,
): Promise<JobRow | null> {
  const cancelled = await published(deps, await transitions.cancelJob(deps.db, id, projects));
  await freeSlots(deps, [cancelled]);
  if (cancelled?.runpod_job_id) {
    await cancelRunOf(deps, cancelled.id, cancelled.runpod_job_id, cancelled.runpod_endpoint_id);
  }
  return cancelled;
}

/**
 * RunPod's /cancel for a cancelled job's run, at the endpoint it was submitted to; a 404 (RunPod
 * forgot it) is as good as done.
 */
export async function cancelRunOf(
  deps: JobDeps & RunpodDeps,
  jobId: string,
  runpodJobId: string,
  endpointId: string | null,
): Promise<boolean> {
  try {
    await deps.runpodOf(endpointId).cancelRun(runpodJobId);
  } catch (error) {
    if (!(error instanceof Error && "kind" in error && error.kind === "not_found")) {
      log("warn", "RunPod cancel failed; the reconciler tries again", {
        job_id: jobId,
        runpod_job_id: runpodJobId,
        error: String(error),
      });
      await publishJobs(deps, [
        await leases.markCancelUnconfirmed(deps.db, jobId, runpodJobId, CANCEL_RETRY_S),
      ]);
      return false;
    }
  }
  await publishJobs(deps, [await leases.markCancelConfirmed(deps.db, jobId)]);
  return true;
}

/** Operators' retry: error jobs (never cancelled ones) back to pending, re-enqueued now. */
export async function retryJobs(
  deps: JobDeps,
  selection: { ids: readonly string[] } | transitions.RetryFilter,
): Promise<JobRow[]> {
  const rows =
    "ids" in selection
      ? await transitions.retryJobsByIds(deps.db, selection.ids)
      : await transitions.retryJobsByFilter(deps.db, selection);
  await publishJobs(deps, rows);
  await requeue(
    deps.queue,
    rows.map((row) => row.id),
    0,
  );
  return rows;
}

/**
 * Replay of a dead letter: its job (waiting, or ended by a failure; never a cancelled one) back to
 * pending with its retry budget restored, re-enqueued now; the letter is marked replayed.
 */
export async function replayDeadLetter(
  deps: JobDeps,
  id: string,
): Promise<{ deadLetter: deadLetters.DeadLetterRow; job: JobRow } | null> {
  const replayed = await deadLetters.replayDeadLetter(deps.db, id);
  await publishJobs(deps, [replayed?.job ?? null]);
  if (replayed) await requeue(deps.queue, [replayed.job.id], 0);
  return replayed;
}

// ---------------------------------------------------------------------------------------------
// Bookkeeping: no transition, only due_at (when the reconciler looks next) and version change.
// ---------------------------------------------------------------------------------------------

/**
 * holdJobs: jobs the dispatcher keeps waiting for a slot. Their due_at is cleared, so the
 * reconciler does not take them for lost messages (and does not re-enqueue them every grace
 * period); it audits them against the dispatcher instead (consumer/reconciler.ts, the held-jobs audit).
 */
export function holdJobs(
  deps: JobDeps,
  ids: readonly string[],
  endpointId: string | null = null,
): Promise<JobRow[]> {
  return allPublished(deps, leases.holdJobs(deps.db, ids, endpointId));
}

/** A new job that another endpoint than its type's first holds (failover at creation). */
export async function recordHolder(
  deps: JobDeps,
  id: string,
  endpointId: string,
): Promise<JobRow | null> {
  return published(deps, await leases.recordHolder(deps.db, id, endpointId));
}

/** Publishes every row a statement changed, and hands them back. */
async function allPublished(deps: JobDeps, changing: Promise<JobRow[]>): Promise<JobRow[]> {
  const rows = await changing;
  await publishJobs(deps, rows);
  return rows;
}

/** Pending jobs due for longer than `graceS` (their message looks lost), leased for a re-enqueue. */
export function leaseLostPendingJobs(
  deps: JobDeps,
  graceS: number,
  limit: number,
): Promise<JobRow[]> {
  return allPublished(deps, leases.leaseLostPendingJobs(deps.db, graceS, limit));
}

/** Processing jobs past their claim deadline or poll time, leased for `leaseS`. */
export function leaseDueProcessingJobs(
  deps: JobDeps,
  leaseS: number,
  limit: number,
): Promise<JobRow[]> {
  return allPublished(deps, leases.leaseDueProcessingJobs(deps.db, leaseS, limit));
}

/** Cancelled jobs whose RunPod /cancel is due to be tried again, leased for `leaseS`. */
export function leaseCancelRetries(
  deps: JobDeps,
  leaseS: number,
  limit: number,
): Promise<JobRow[]> {
  return allPublished(deps, leases.leaseUnconfirmedCancels(deps.db, leaseS, limit));
}

export const EXPIRED_PREFIX = "expired";

/** Pending jobs wanted for longer than `maxAgeS`: error 'expired: …'. */
export async function expirePendingJobs(
  deps: JobDeps,
  maxAgeS: number,
  limit: number,
): Promise<JobRow[]> {
  const cutoff = new Date(Date.now() - maxAgeS * 1000).toISOString().replace("T", " ");
  const error = `${EXPIRED_PREFIX}: not dispatched within ${maxAgeS}s`;
  const expired = await transitions.expirePendingJobs(
    deps.db,
    cutoff.replace("Z", ""),
    error,
    limit,
  );
  await publishJobs(deps, expired);
  await freeSlots(deps, expired);
  return expired;
}
