// The reconciler (consumer cron, every minute): the safety net under at-least-once delivery.
// RunPod tries a webhook only three times and keeps results 30 minutes; queue sends can fail after
// an insert; a consumer can die between claim and record; RunPod's /cancel can fail.
//
// Each step leases due jobs in batches through (status, due_at) and goes on while a batch comes
// back full and the pass's time budget lasts, so a backlog is worked off at the pace it grows;
// a step that fails is logged and the next step runs all the same. Every pick is a lease that
// moves due_at, so two passes at once never take the same job — except two that need none: the
// held-jobs audit (a read; at worst a job's message is sent twice, which its claim absorbs) and
// the archive's (shared/archive.ts: an idempotent put, then a delete guarded by version).

import { ARCHIVE_BATCH, archiveFinished } from "../shared/archive.ts";
import { forEachBounded } from "../shared/concurrency.ts";
import { groupBy } from "../shared/group-by.ts";
import {
  applyLostRun,
  applyRunStatus,
  cancelRunOf,
  claimedAt,
  expirePendingJobs,
  leaseCancelRetries,
  leaseDueProcessingJobs,
  leaseLostPendingJobs,
  type RunOutcome,
  requeue,
} from "../shared/job-state.ts";
import { log } from "../shared/log.ts";
import { RunpodError } from "../shared/runpod-client.ts";
import { heldJobs } from "../shared/sql/jobs/leases.ts";
import { processingAmong } from "../shared/sql/jobs/reads.ts";
import type { JobRow } from "../shared/sql/jobs/row.ts";
import type { ConsumerDeps } from "./process-jobs.ts";

/** Jobs leased per statement. */
export const RECONCILE_BATCH = 100;
/**
 * Steps 1–5 start no new batch after this long (a cron invocation may run 15 minutes); step 6
 * goes on until ARCHIVE_UNTIL_MS.
 */
export const RECONCILE_BUDGET_MS = 25_000;
/**
 * Step 6 (the archive) starts no batch after this many budgets into the pass: 50 s by default,
 * 10 s before the next cron. Steps 1–5 stop starting batches at one budget, so the archive has
 * about one budget (25 s) of every minute at least, and about 49 s when steps 1–5 are quick.
 */
export const ARCHIVE_UNTIL_BUDGETS = 2;
/** When step 6 starts its last batch, by default: ARCHIVE_UNTIL_BUDGETS budgets into the pass. */
export const ARCHIVE_UNTIL_MS = ARCHIVE_UNTIL_BUDGETS * RECONCILE_BUDGET_MS;
/**
 * Pages of held jobs (RECONCILE_BATCH each) the audit reads per pass at most: 10,000 jobs a
 * minute. After a sweep a pass reads only the jobs held since the last one, at most one hold per
 * job arriving while a backlog waits: 6,000 a minute at 100 exports/s, so the audit keeps up with
 * 1.67× margin; a sweep of a 100,000-job backlog (a new or reset dispatcher) takes 10 passes.
 */
export const HELD_PAGES_PER_PASS = 100;

type Count = RunOutcome | "expired" | "poll_failed" | "cancel_retried" | "claim_stretched";

export interface ReconcileReport {
  requeued: number;
  /** Held jobs (waiting for a dispatch slot) the dispatcher did not know, re-enqueued. */
  unheld: number;
  /** Held jobs the audit read from D1 and checked with the dispatcher in this pass. */
  heldAudited: number;
  expired: number;
  claimsExpired: number;
  polled: number;
  outcomes: Partial<Record<Count, number>>;
  failedSteps: string[];
  slotsHealed: number;
  /** Jobs archived to R2 and deleted from D1 by this pass. */
  archived: number;
}

export async function reconcile(
  deps: ConsumerDeps,
  options: { budgetMs?: number; batch?: number; healGraceMs?: number; heldPages?: number } = {},
): Promise<ReconcileReport> {
  const { settings } = deps;
  const batch = options.batch ?? RECONCILE_BATCH;
  const archiveBatch = options.batch ?? ARCHIVE_BATCH;
  const budgetMs = options.budgetMs ?? RECONCILE_BUDGET_MS;
  const started = Date.now();
  const deadline = started + budgetMs;
  const report: ReconcileReport = {
    requeued: 0,
    unheld: 0,
    heldAudited: 0,
    expired: 0,
    claimsExpired: 0,
    polled: 0,
    outcomes: {},
    failedSteps: [],
    slotsHealed: 0,
    archived: 0,
  };
  const count = (key: Count) => {
    report.outcomes[key] = (report.outcomes[key] ?? 0) + 1;
  };
  /**
   * Runs `lease` → `work` while batches come back full and time is left, and stops at a job it
   * has leased already in this pass (a grace or poll interval of 0 makes a leased job due again).
   */
  const step = async <T extends { id: string }>(
    name: string,
    lease: () => Promise<T[]>,
    work: (rows: T[]) => unknown,
    size = batch,
  ) => {
    const seen = new Set<string>();
    try {
      for (;;) {
        const rows = (await lease()).filter((row) => !seen.has(row.id));
        await work(rows);
        for (const row of rows) seen.add(row.id);
        if (rows.length < size || Date.now() >= deadline) return;
      }
    } catch (error) {
      report.failedSteps.push(name);
      log("error", "reconciler step failed", { step: name, error: String(error) });
    }
  };

  // 1. Pending jobs wanted for too long: expired.
  await step(
    "expire",
    () => expirePendingJobs(deps, settings.pendingMaxAgeS, batch),
    (rows) => {
      report.expired += rows.length;
    },
  );

  // 2. Pending jobs whose message was lost.
  await step(
    "requeue",
    () => leaseLostPendingJobs(deps, settings.pendingGraceS, batch),
    async (rows) => {
      await requeue(
        deps.queue,
        rows.map((row) => row.id),
        0,
      );
      report.requeued += rows.length;
    },
  );

  // 2b. Jobs held for a dispatch slot: every one must be known to the dispatcher (waiting or in
  //     flight). One it does not know is re-enqueued, and its consumer batch offers it again. A
  //     held job becomes unknown when the dispatcher's storage did not see its offer: a new
  //     object (another endpoint id, a reset) or one not audited for a while (the endpoint id
  //     pointed elsewhere meanwhile) — then its audit mark is gone or stale and the audit sweeps
  //     every held job from the start — or when its hold is newer than the last pass. So once a
  //     sweep reached the end, a pass reads only the held jobs after the mark (the rows of jobs
  //     created since), in rowid order through (status, due_at): its cost follows what was held
  //     since, not the backlog. A job held again later (a retry) was offered to this same
  //     dispatcher first (the consumer offers, then holds); one the dispatcher lets go while it
  //     waits is sent again by the dispatcher itself (Dispatcher.free). At most
  //     HELD_PAGES_PER_PASS pages a pass; the mark moves past a page only once its check is
  //     done. A read, no lease: two passes at once at worst send a job's message twice, which
  //     its claim absorbs.
  const heldPages = options.heldPages ?? HELD_PAGES_PER_PASS;
  //     With several endpoints (RUNPOD_ENDPOINTS), each held job is checked with the dispatcher
  //     D1 names as its holder, and the pass resumes at the lowest of their marks (a dispatcher
  //     that was reset sweeps everything again).
  const mark = await Promise.all(deps.endpoints.map((e) => deps.dispatcherOf(e).auditCursor()))
    .then((marks) => Math.min(...marks))
    .catch((error: unknown) => {
      // Not known where to resume: this pass audits nothing (a sweep from the start would lower
      // the mark), the next one tries again.
      report.failedSteps.push("held");
      log("error", "reconciler step failed", { step: "held", error: String(error) });
      return null;
    });
  if (mark !== null) {
    let afterSeq = mark;
    let readSeq = mark;
    let pages = 0;
    await step(
      "held",
      async () => {
        if (pages >= heldPages) return [];
        const page = await heldJobs(deps.db, readSeq, batch);
        pages += 1;
        readSeq = page.at(-1)?.seq ?? readSeq;
        return page;
      },
      async (page) => {
        if (page.length === 0) return;
        report.heldAudited += page.length;
        // A follower is held by its leader, not the dispatcher: while the leader is on its way
        // it waits, never re-enqueued as lost; once the leader ended (or is gone), it is sent
        // to a batch, which reuses the leader's output or releases it as an ordinary job.
        const byDispatcher = groupBy(page, (job) =>
          job.leader === null ? job.endpoint : undefined,
        );
        const known = new Set<string>();
        for (const [endpoint, jobs] of byDispatcher) {
          const ids = jobs.map((job) => job.id);
          for (const id of await deps.dispatcherOf(endpoint).known(ids)) known.add(id);
        }
        const unknown = page
          .filter((job) =>
            job.leader === null
              ? !known.has(job.id)
              : job.leader !== "pending" && job.leader !== "processing",
          )
          .map((job) => job.id);
        await requeue(deps.queue, unknown, 0);
        report.unheld += unknown.length;
        afterSeq = page.at(-1)?.seq ?? afterSeq;
      },
    );
    // Saved also when nothing was read: the mark's time says each dispatcher is kept up.
    await Promise.all(
      deps.endpoints.map((e) => deps.dispatcherOf(e).setAuditCursor(afterSeq)),
    ).catch((error: unknown) => {
      log("warn", "saving the held-jobs audit mark failed", { error: String(error) });
    });
  }

  // 3. Processing jobs past their claim deadline or poll time. A claim deadline stretches with
  //    the time runs queue at RunPod now (the dispatcher's fleet model): a submission whose /run
  //    answer was lost may be a run still waiting for a worker, not a lost one.
  const claimStretchMs = new Map<string | null, number>();
  const stretch = async (endpoint: string | null) => {
    let ms = claimStretchMs.get(endpoint);
    if (ms === undefined) {
      ms = await deps
        .dispatcherOf(endpoint)
        .claimStretchMs()
        .catch((error: unknown) => {
          log("warn", "claim stretch unknown: the dispatcher did not answer", {
            endpoint,
            error: String(error),
          });
          return 0;
        });
      claimStretchMs.set(endpoint, ms);
    }
    return ms;
  };
  await step(
    "poll",
    () => leaseDueProcessingJobs(deps, settings.pollAfterS, batch),
    (due) =>
      forEachBounded(
        due,
        settings.submitConcurrency,
        async (job) => {
          const outcome = await reconcileJob(deps, job, stretch);
          if (outcome === "claim_expired") report.claimsExpired += 1;
          else if (outcome === "claim_stretched") count(outcome);
          else {
            report.polled += 1;
            count(outcome);
          }
        },
        (job, error) => {
          // RunPod or D1 failed for this job; its lease expires and a later pass tries again.
          count("poll_failed");
          log("warn", "reconcile failed for a job", {
            job_id: job.id,
            attempt: job.attempt,
            error: String(error),
          });
        },
      ),
  );

  // 4. Cancelled jobs whose RunPod /cancel failed.
  await step(
    "cancel",
    () => leaseCancelRetries(deps, 60, batch),
    (rows) =>
      forEachBounded(
        rows,
        settings.submitConcurrency,
        async (row) => {
          if (row.runpod_job_id) {
            await cancelRunOf(deps, row.id, row.runpod_job_id, row.runpod_endpoint_id);
          }
          count("cancel_retried");
        },
        (row, error) =>
          log("warn", "cancel retry failed", { job_id: row.id, error: String(error) }),
      ),
  );

  // 5. Each dispatcher's runs in flight against D1: a slot whose notification was lost is freed.
  for (const endpoint of deps.endpoints) {
    try {
      const dispatcher = deps.dispatcherOf(endpoint);
      const slots = await dispatcher.inFlight();
      const processing = await processingAmong(
        deps.db,
        slots,
        endpoint,
        deps.settings.runpod.endpointId,
      );
      const healed = await dispatcher.heal(processing, settings.gate, options.healGraceMs);
      report.slotsHealed += healed.length;
      // A healed job that is still pending lost its message after admission: sent again now
      // (one that finished meanwhile is not offered again: its batch finds it not pending).
      await requeue(deps.queue, healed, 0);
    } catch (error) {
      if (!report.failedSteps.includes("slots")) report.failedSteps.push("slots");
      log("error", "reconciler step failed", { step: "slots", endpoint, error: String(error) });
    }
  }

  // 6. Retention: jobs finished more than ARCHIVE_AFTER_S ago, to R2 and out of D1 (batches go
  //    on while they come back full and time is left: shared/archive.ts). Until ARCHIVE_UNTIL_MS
  //    into the pass, not only what steps 1–5 left of their budget: jobs finish at the pace
  //    exports come in, and a busy step before must not starve the archive. Measured by
  //    bench/archive-rate.ts (bench/README.md, figure 9).
  if (settings.archiveAfterS > 0) {
    try {
      await archiveFinished(deps.db, deps.videos, {
        archiveAfterS: settings.archiveAfterS,
        batch: archiveBatch,
        deadline: started + budgetMs * ARCHIVE_UNTIL_BUDGETS,
        onArchived: (archived) => {
          report.archived += archived;
        },
      });
    } catch (error) {
      report.failedSteps.push("archive");
      log("error", "reconciler step failed", { step: "archive", error: String(error) });
    }
  }

  log("info", "reconciled", { ...report });
  return report;
}

async function reconcileJob(
  deps: ConsumerDeps,
  job: JobRow,
  claimStretchMs: (endpoint: string | null) => Promise<number>,
): Promise<RunOutcome | "claim_expired" | "claim_stretched"> {
  if (!job.runpod_job_id) {
    // Claimed but no run recorded within CLAIM_TIMEOUT_S, stretched by RunPod's queue delay now
    // at its endpoint: a lost run, like a /status 404. Within the stretch, the lease
    // (POLL_AFTER_S) brings it back.
    const stretchMs = await claimStretchMs(job.runpod_endpoint_id);
    const deadline = claimedAt(job) + deps.settings.claimTimeoutS * 1000 + stretchMs;
    if (stretchMs > 0 && Date.now() < deadline) return "claim_stretched";
    await applyLostRun(deps, job, deps.settings.claimTimeoutS);
    return "claim_expired";
  }
  try {
    const status = await deps.runpodOf(job.runpod_endpoint_id).getStatus(job.runpod_job_id);
    return await applyRunStatus(deps, job, job.attempt, status);
  } catch (error) {
    if (!(error instanceof RunpodError && error.kind === "not_found")) throw error;
    return applyLostRun(deps, job, deps.settings.claimTimeoutS);
  }
}
