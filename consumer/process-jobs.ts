// The consumer's domain logic, apart from the queue() wiring: ask the dispatch gate once for the
// batch, claim the jobs it lets through, submit each to RunPod with bounded concurrency at the
// gate's pace, then record the run, release the job or apply the seed's CASE retry — and tell the
// gate once what the batch met.
//
// Safe to run twice: the claim is `status = 'pending'`-guarded, so a second delivery of a message
// (or the same message in two concurrent batches) claims nothing and is acked without a RunPod
// call; every later step is guarded by the attempt, so a late step cannot undo a newer one.
// Waiting (a held-back job, a release, a retry delay) is a fresh delayed message, never
// `message.retry()`, which would count toward max_retries and end in the dead-letter queue.

import { forEachBounded } from "../shared/concurrency.ts";
import type { GateConfig, SubmitOutcome } from "../shared/dispatch-gate.ts";
import type { Admission, DispatchConfig } from "../shared/dispatcher.ts";
import type { ConsumerEnv } from "../shared/env.ts";
import type { OfferedJob } from "../shared/fair-queue.ts";
import {
  claimJobs,
  failRun,
  holdJobs,
  type JobDeps,
  recordRun,
  releaseJob,
} from "../shared/job-state.ts";
import { livePublisher } from "../shared/live-publisher.ts";
import { log } from "../shared/log.ts";
import { createRunpodClient, type RunpodClient, RunpodError } from "../shared/runpod-client.ts";
import { jobMessage } from "../shared/schemas.ts";
import { type ConsumerSettings, consumerSettings } from "../shared/settings.ts";
import type { JobRow } from "../shared/sql/jobs.ts";
import * as jobs from "../shared/sql/jobs.ts";
import { buildRunRequest } from "./run-request.ts";

/** The dispatcher as the consumer sees it (shared/dispatcher.ts behind a stub). */
export interface DispatcherApi {
  dispatch(offered: OfferedJob[], config: DispatchConfig): Promise<Admission>;
  report(outcomes: SubmitOutcome[], config: GateConfig): Promise<void>;
  free(jobIds: string[]): Promise<void>;
  heal(processing: string[], config: DispatchConfig, graceMs?: number): Promise<string[]>;
  inFlight(): Promise<string[]>;
  known(jobIds: string[]): Promise<string[]>;
}

export interface ConsumerDeps extends JobDeps {
  runpod: RunpodClient;
  settings: ConsumerSettings;
  dispatcher: DispatcherApi;
}

/** A consumer that cannot run: the batch is retried later, no job is touched. */
export class NotConfiguredError extends Error {}

/** `ctx`: the invocation's, when there is one; live publication then finishes after the work. */
export function consumerDeps(env: ConsumerEnv, ctx?: ExecutionContext): ConsumerDeps {
  const settings = consumerSettings(env);
  const missing = [
    ["RUNPOD_ENDPOINT_ID", settings.runpod.endpointId],
    ["RUNPOD_API_KEY", settings.runpod.apiKey],
    ["PUBLIC_URL", settings.publicUrl],
    ["WEBHOOK_SECRET", settings.webhookSecret],
  ].filter(([, value]) => !value);
  if (missing.length > 0) {
    throw new NotConfiguredError(
      `consumer is not configured: ${missing.map(([name]) => name).join(", ")}`,
    );
  }
  const dispatcher = env.DISPATCHER.get(env.DISPATCHER.idFromName(settings.runpod.endpointId));
  return {
    db: env.DB,
    queue: env.EXPORT_QUEUE,
    retry: settings.retry,
    pollAfterS: settings.pollAfterS,
    runpod: createRunpodClient(settings.runpod),
    settings,
    dispatcher,
    slots: dispatcher,
    videos: env.VIDEOS,
    live: livePublisher(env),
    defer: ctx ? (work) => ctx.waitUntil(work) : undefined,
  };
}

/**
 * Processes one batch of `export-jobs`. Returns the messages that did not parse, not yet acked:
 * the caller records them as dead letters, then acks them. Throws only when nothing could be
 * done (the gate or D1 unreachable before any claim): the caller retries the whole batch later.
 */
export async function processJobBatch(
  deps: ConsumerDeps,
  messages: readonly Message<unknown>[],
): Promise<Message<unknown>[]> {
  const poison: Message<unknown>[] = [];
  const byJob = new Map<string, Message<unknown>[]>();
  for (const message of messages) {
    const parsed = jobMessage.safeParse(message.body);
    if (!parsed.success) {
      poison.push(message);
      continue;
    }
    const list = byJob.get(parsed.data.job_id) ?? [];
    list.push(message);
    byJob.set(parsed.data.job_id, list);
  }
  if (byJob.size === 0) return poison;

  const gateConfig = deps.settings.gate;
  // Offer the jobs still pending to the dispatcher; it admits those whose turn it is (free slots,
  // fairness, the gate) and keeps the others waiting, sending them when their turn comes.
  const pending = await jobs.pendingJobs(deps.db, [...byJob.keys()]);
  // Only duplicates (no job still pending): nothing to ask the dispatcher.
  const admission: Admission =
    pending.length === 0
      ? { admitted: [], mode: "running", reason: null }
      : await deps.dispatcher.dispatch(
          pending.map((job) => ({
            id: job.id,
            key: job.user_id === null ? `project:${job.project_id}` : `user:${job.user_id}`,
            createdAt: job.created_at,
          })),
          gateConfig,
        );
  const delayOf = new Map(admission.admitted.map((entry) => [entry.id, entry.delayMs]));
  // Every message but the one of each admitted job is done with: a duplicate (not pending, or a
  // second message for the same job), or a job now waiting in the dispatcher.
  for (const [id, list] of byJob) {
    const [first, ...rest] = list;
    for (const message of rest) message.ack();
    if (!delayOf.has(id)) first?.ack();
  }
  if (delayOf.size < pending.length) {
    const waiting = pending.filter((job) => !delayOf.has(job.id)).map((job) => job.id);
    log("info", "jobs wait for dispatch", { waiting: waiting.length, mode: admission.mode });
    // The dispatcher holds them now; a hold that fails leaves them to the reconciler's
    // lost-message lease, which re-enqueues them and their next batch holds them again.
    await holdJobs(deps, waiting).catch((error: unknown) => {
      log("warn", "holding waiting jobs failed", { jobs: waiting, error: String(error) });
    });
  }
  if (delayOf.size === 0) return poison;

  const claimed = await claimJobs(deps, [...delayOf.keys()], deps.settings.claimTimeoutS);
  const claimedIds = new Set(claimed.map((job) => job.id));
  for (const id of delayOf.keys()) {
    // Admitted, but no longer pending (a duplicate of a job now running, or cancelled): nothing
    // to submit; a slot it may hold is healed by the reconciler against D1.
    if (!claimedIds.has(id)) byJob.get(id)?.[0]?.ack();
  }

  const outcomes: SubmitOutcome[] = [];
  // The gate hears of this batch only at its end; within it, a bad key or a run of failures
  // stops the batch's own submissions at once, and the rest are released unsent.
  let failuresInRow = 0;
  let stopped = false;
  const started = Date.now();
  await forEachBounded(
    claimed,
    deps.settings.submitConcurrency,
    async (job) => {
      const wait = (delayOf.get(job.id) ?? 0) - (Date.now() - started);
      if (wait > 0 && !stopped) await new Promise((resolve) => setTimeout(resolve, wait));
      if (stopped) {
        await releaseJob(deps, job, gateConfig.breakerCooldownS);
      } else {
        const outcome = await submitJob(deps, job);
        outcomes.push(outcome);
        failuresInRow = outcome.kind === "failed" ? failuresInRow + 1 : 0;
        stopped ||= outcome.kind === "auth_failed" || failuresInRow >= gateConfig.breakerThreshold;
      }
      byJob.get(job.id)?.[0]?.ack();
    },
    (job, error) => {
      // D1 itself failed mid-way: the job stays `processing` without a run, which the
      // reconciler's claim timeout turns back into a retry; this message is redelivered later.
      log("error", "processing failed", { job_id: job.id, error: String(error) });
      byJob.get(job.id)?.[0]?.retry({ delaySeconds: deps.settings.claimTimeoutS });
    },
  );
  await deps.dispatcher.report(outcomes, gateConfig).catch((error: unknown) => {
    log("warn", "dispatch gate report failed", { error: String(error) });
  });
  return poison;
}

/** Submits one claimed job; what happened, as the gate counts it. */
async function submitJob(deps: ConsumerDeps, job: JobRow): Promise<SubmitOutcome> {
  let runpodJobId: string;
  try {
    const request = await buildRunRequest(job, deps.settings);
    runpodJobId = (await deps.runpod.submitRun(request)).id;
  } catch (error) {
    return submissionFailed(deps, job, error);
  }
  await recordRun(deps, job, runpodJobId);
  return { kind: "ok" };
}

async function submissionFailed(
  deps: ConsumerDeps,
  job: JobRow,
  error: unknown,
): Promise<SubmitOutcome> {
  const text = error instanceof Error ? error.message : String(error);
  const fields = { job_id: job.id, attempt: job.attempt, error: text };
  if (error instanceof RunpodError && error.httpStatus === 429) {
    // Not the job's fault: back to pending with its retries intact.
    const delayS = Math.max(1, error.retryAfterS ?? deps.settings.gate.breakerCooldownS);
    await releaseJob(deps, job, delayS);
    log("warn", "rate limited; released", { ...fields, delay_s: delayS });
    return { kind: "rate_limited", retryAfterS: error.retryAfterS };
  }
  if (error instanceof RunpodError && error.unavailable) {
    // RunPod is down or unreachable (502/503/504, no answer at all): nobody's job failed. The
    // gate counts it as a failed submission (enough of them pause dispatch); the job is released.
    const delayS = Math.max(1, error.retryAfterS ?? deps.settings.gate.breakerCooldownS);
    await releaseJob(deps, job, delayS);
    log("warn", "RunPod unavailable; released", { ...fields, delay_s: delayS });
    return { kind: "failed", error: text };
  }
  if (error instanceof RunpodError && (error.httpStatus === 401 || error.httpStatus === 403)) {
    await releaseJob(deps, job, deps.settings.gate.breakerCooldownS);
    log("error", "RunPod refused the API key; released", fields);
    return { kind: "auth_failed", error: text };
  }
  if (error instanceof RunpodError && error.timedOut) {
    // RunPod may have accepted the run. The attempt stays open: the run's progress or webhook
    // adopts it; if none comes, the reconciler's claim timeout retries the job.
    log("warn", "submission timed out; waiting for the run to report", fields);
    return { kind: "failed", error: text };
  }
  // A submission RunPod answered with an error (500, 400, a bad answer): the seed's CASE.
  const failure = await failRun(deps, job, job.attempt, null, text);
  log("warn", "submission failed", { ...fields, ...failure });
  const isRunpodHealth = error instanceof RunpodError && error.kind === "retryable";
  return isRunpodHealth ? { kind: "failed", error: text } : { kind: "rejected" };
}
