// The consumer's domain logic, apart from the queue() wiring: claim a batch, submit each claimed
// job to RunPod with bounded concurrency, record the run or apply the seed's CASE retry.
//
// Safe to run twice: the claim is `status = 'pending'`-guarded, so a second delivery of a message
// (or the same message in two concurrent batches) claims nothing and is acked without a RunPod
// call; recordRun and failRun are guarded by the attempt, so a late step cannot undo a newer one.

import { forEachBounded } from "../shared/concurrency.ts";
import type { ConsumerEnv } from "../shared/env.ts";
import type { JobRow } from "../shared/job-repository.ts";
import * as repo from "../shared/job-repository.ts";
import { failRun } from "../shared/job-state.ts";
import { log } from "../shared/log.ts";
import { createRunpodClient, type RunpodClient } from "../shared/runpod-client.ts";
import { jobMessage } from "../shared/schemas.ts";
import { type ConsumerSettings, consumerSettings } from "../shared/settings.ts";
import { buildRunRequest } from "./run-request.ts";

export interface ConsumerDeps {
  db: D1Database;
  runpod: RunpodClient;
  settings: ConsumerSettings;
}

export function consumerDeps(env: ConsumerEnv): ConsumerDeps {
  const settings = consumerSettings(env);
  const missing = [
    ["RUNPOD_ENDPOINT_ID", settings.runpod.endpointId],
    ["RUNPOD_API_KEY", settings.runpod.apiKey],
    ["PUBLIC_URL", settings.publicUrl],
    ["WEBHOOK_SECRET", settings.webhookSecret],
  ].filter(([, value]) => !value);
  if (missing.length > 0) {
    // Thrown before any claim: the batch is retried and no job spends a retry on a setup error.
    throw new Error(`consumer is not configured: ${missing.map(([name]) => name).join(", ")}`);
  }
  return { db: env.DB, runpod: createRunpodClient(settings.runpod), settings };
}

/**
 * Processes one batch of `export-jobs`. Returns the messages that did not parse, not yet acked:
 * the caller records them as dead letters, then acks them.
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

  const claimed = await repo.claimJobs(deps.db, [...byJob.keys()], deps.settings.claimTimeoutS);
  const claimedIds = new Set(claimed.map((job) => job.id));

  // Duplicates: a job that was not pending, or a second message for the same job in this batch.
  for (const [jobId, list] of byJob) {
    const [first, ...rest] = list;
    for (const message of rest) message.ack();
    if (!claimedIds.has(jobId)) {
      log("info", "duplicate delivery acknowledged", { job_id: jobId });
      first?.ack();
    }
  }

  await forEachBounded(
    claimed,
    deps.settings.submitConcurrency,
    (job) => submitJob(deps, job, byJob.get(job.id)?.[0] as Message<unknown>),
    (job, error) => {
      // D1 itself failed mid-way: let the queue redeliver. The job stays `processing` without a
      // run, which the reconciler's claim timeout turns back into a retry.
      log("error", "processing failed", { job_id: job.id, error: String(error) });
      byJob.get(job.id)?.[0]?.retry();
    },
  );
  return poison;
}

/** Submits one claimed job and acks or retries its message. */
async function submitJob(
  deps: ConsumerDeps,
  job: JobRow,
  message: Message<unknown>,
): Promise<void> {
  const attempt = job.retry_count;
  let runpodJobId: string;
  try {
    const request = await buildRunRequest(job, deps.settings);
    runpodJobId = (await deps.runpod.submitRun(request)).id;
  } catch (error) {
    const text = error instanceof Error ? error.message : String(error);
    const failure = await failRun(deps.db, deps.settings.retry, job, attempt, null, text);
    log("warn", "submission failed", { job_id: job.id, attempt, error: text, ...failure });
    if (failure?.status === "pending") message.retry({ delaySeconds: failure.delayS });
    else message.ack();
    return;
  }

  const recorded = await repo.recordRun(
    deps.db,
    job.id,
    attempt,
    runpodJobId,
    deps.settings.pollAfterS,
  );
  if (!recorded) {
    // The job moved on while RunPod was answering: a fast webhook finished it (nothing to do), or
    // it was cancelled — then the run we just started is not wanted.
    const now = await repo.getJob(deps.db, job.id);
    if (now?.status === "error" && now.error === "cancelled" && now.retry_count === attempt) {
      await deps.runpod.cancelRun(runpodJobId).catch((error: unknown) => {
        log("warn", "cancel of an unwanted run failed", { job_id: job.id, error: String(error) });
      });
    }
  }
  message.ack();
}
