// The reconciler (consumer cron, every minute): the safety net under at-least-once delivery.
// RunPod tries a webhook only three times and keeps results 30 minutes; queue sends can fail after
// an insert; a consumer can die between claim and record. Each pass is bounded and index-backed
// (status, due_at), and safe to run twice at once: every pick is a lease that moves due_at.

import { forEachBounded } from "../shared/concurrency.ts";
import type { JobMessage } from "../shared/env.ts";
import type { JobRow } from "../shared/job-repository.ts";
import * as repo from "../shared/job-repository.ts";
import { applyRunStatus, failRun, type RunOutcome, requeue } from "../shared/job-state.ts";
import { log } from "../shared/log.ts";
import { RunpodError } from "../shared/runpod-client.ts";
import type { ConsumerDeps } from "./process-jobs.ts";

/** Jobs looked at per kind and pass; the cron comes back every minute. */
export const RECONCILE_BATCH = 100;

export interface ReconcileReport {
  requeued: number;
  claimsExpired: number;
  polled: number;
  outcomes: Partial<Record<RunOutcome | "expired" | "poll_failed", number>>;
}

export async function reconcile(
  deps: ConsumerDeps,
  queue: Queue<JobMessage>,
): Promise<ReconcileReport> {
  const { db, settings } = deps;
  const report: ReconcileReport = { requeued: 0, claimsExpired: 0, polled: 0, outcomes: {} };
  const count = (key: keyof ReconcileReport["outcomes"]) => {
    report.outcomes[key] = (report.outcomes[key] ?? 0) + 1;
  };

  // 1. Pending jobs whose message was lost.
  const lost = await repo.leaseLostPendingJobs(db, settings.pendingGraceS, RECONCILE_BATCH);
  if (lost.length > 0) {
    await queue.sendBatch(lost.map((id) => ({ body: { job_id: id } })));
    report.requeued = lost.length;
  }

  // 2. Processing jobs past their claim deadline or poll time.
  const due = await repo.leaseDueProcessingJobs(db, settings.pollAfterS, RECONCILE_BATCH);
  const transitions = { db, queue, retry: settings.retry, pollAfterS: settings.pollAfterS };
  await forEachBounded(
    due,
    settings.submitConcurrency,
    async (job: JobRow) => {
      const attempt = job.retry_count;
      if (!job.runpod_job_id) {
        // Claimed but no run recorded within CLAIM_TIMEOUT_S: the consumer died in between.
        const message = `no RunPod run recorded within ${settings.claimTimeoutS}s of the claim`;
        const failure = await failRun(db, settings.retry, job, attempt, null, message);
        if (failure) report.claimsExpired += 1;
        if (failure?.status === "pending") await requeue(queue, job.id, failure.delayS);
        return;
      }
      report.polled += 1;
      try {
        const status = await deps.runpod.getStatus(job.runpod_job_id);
        count(await applyRunStatus(transitions, job, attempt, status));
      } catch (error) {
        if (!(error instanceof RunpodError && error.kind === "not_found")) throw error;
        // RunPod no longer knows the run (TTL or 30-minute retention passed): a failed run.
        const message = `RunPod run ${job.runpod_job_id} not found (expired)`;
        const failure = await failRun(db, settings.retry, job, attempt, job.runpod_job_id, message);
        if (failure?.status === "pending") await requeue(queue, job.id, failure.delayS);
        count("expired");
      }
    },
    (job, error) => {
      // RunPod or D1 failed for this job; its lease expires and the next pass tries again.
      count("poll_failed");
      log("warn", "reconcile failed for a job", { job_id: job.id, error: String(error) });
    },
  );
  log("info", "reconciled", { ...report });
  return report;
}
