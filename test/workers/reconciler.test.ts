import { createScheduledController } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import consumer from "../../consumer/index.ts";
import { consumerDeps } from "../../consumer/process-jobs.ts";
import { reconcile } from "../../consumer/reconciler.ts";
import { JOB_SQL } from "../../shared/sql/jobs/catalog.ts";
import type { JobRow } from "../../shared/sql/jobs/row.ts";
import * as repo from "../../shared/sql/jobs/transitions.ts";
import {
  configureEndpoint,
  emulatorOrigin,
  emulatorRequests,
  insertPendingJob,
  messageArrives,
  processingJob,
  putOutput,
  readJob,
  sentMessagesFor,
  uniqueEndpoint,
  waitFor,
} from "./helpers.ts";

/** Thresholds of zero: everything that can be due is due now. Re-pends wait no delay. */
function reconcilerEnv(endpoint: string, extra: Record<string, string> = {}) {
  return {
    ...env,
    RUNPOD_ENDPOINT_ID: endpoint,
    CLAIM_TIMEOUT_S: "0",
    POLL_AFTER_S: "0",
    PENDING_GRACE_S: "0",
    RETRY_BASE_DELAY_S: "0",
    ...extra,
  };
}

function pass(testEnv: ReturnType<typeof reconcilerEnv>, options?: { batch?: number }) {
  return reconcile(consumerDeps(testEnv), options);
}

async function startRun(endpoint: string, config: Record<string, unknown>, outputKey: string) {
  await configureEndpoint(endpoint, config);
  const res = await fetch(`${env.RUNPOD_BASE_URL}/${endpoint}/run`, {
    method: "POST",
    headers: { authorization: `Bearer ${env.RUNPOD_API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ input: { output_video_key: outputKey } }),
  });
  return ((await res.json()) as { id: string }).id;
}

async function runStatus(runId: string): Promise<string> {
  const res = await fetch(`${emulatorOrigin}/__emulator/jobs/${runId}`);
  return ((await res.json()) as { status: string }).status;
}

/** A pending job of its own project, claimed (attempt 1) with `runId` recorded. */
async function claimedWithRun(job: JobRow, runId: string): Promise<JobRow> {
  const [claimed] = await repo.claimJobs(env.DB, [job.id], 120);
  if (!claimed) throw new Error("claim failed");
  const recorded = await repo.recordRun(env.DB, job.id, claimed.attempt, runId, 300);
  if (!recorded) throw new Error("record failed");
  return recorded;
}

/** Time passes: the job's claim deadline or poll time is now behind us. */
async function makeDue(id: string): Promise<void> {
  await env.DB.prepare("UPDATE export_jobs SET due_at = datetime('now', '-1 seconds') WHERE id = ?")
    .bind(id)
    .run();
}

describe("reconciler (consumer cron)", () => {
  it("re-enqueues a pending job whose message was lost, but not one waiting out a retry delay", async () => {
    const endpoint = uniqueEndpoint("lost");
    const lost = await insertPendingJob();
    const waiting = await insertPendingJob();
    await env.DB.prepare(
      "UPDATE export_jobs SET due_at = datetime('now', '+600 seconds'), retry_count = 1 WHERE id = ?",
    )
      .bind(waiting.id)
      .run();

    // The cron entry point, as Cloudflare calls it.
    await consumer.scheduled(createScheduledController(), reconcilerEnv(endpoint));
    await messageArrives(lost.id);
    expect(await sentMessagesFor(lost.id)).toEqual([{ job_id: lost.id }]);
    expect(await sentMessagesFor(waiting.id)).toEqual([]);
    expect((await readJob(waiting.id))?.status).toBe("pending");
    expect((await readJob(lost.id))?.status).toBe("pending");
  });

  it("goes on leasing while batches come back full, so a backlog larger than a batch is worked off in one pass", async () => {
    const endpoint = uniqueEndpoint("backlog");
    const lost = await Promise.all(Array.from({ length: 5 }, () => insertPendingJob()));
    // Lost long ago; a grace of 5 s keeps a job leased in this pass from being leased again.
    await env.DB.prepare(
      `UPDATE export_jobs SET due_at = datetime('now', '-60 seconds')
       WHERE id IN (SELECT value FROM json_each(?))`,
    )
      .bind(JSON.stringify(lost.map((job) => job.id)))
      .run();
    const report = await pass(reconcilerEnv(endpoint, { PENDING_GRACE_S: "5" }), { batch: 2 });
    expect(report.failedSteps).toEqual([]);
    expect(report.requeued).toBeGreaterThanOrEqual(5);
    for (const job of lost) await messageArrives(job.id);
    for (const job of lost) expect(await sentMessagesFor(job.id)).toEqual([{ job_id: job.id }]);
  });

  it("expires a pending job wanted for longer than PENDING_MAX_AGE_S", async () => {
    const endpoint = uniqueEndpoint("expire");
    const old = await insertPendingJob();
    const replayed = await insertPendingJob();
    const fresh = await insertPendingJob();
    const ago = (s: number) => `strftime('%Y-%m-%d %H:%M:%f', 'now', '-${s} seconds')`;
    await env.DB.prepare(
      `UPDATE export_jobs SET created_at = ${ago(120)}, pending_since = ${ago(120)} WHERE id = ?`,
    )
      .bind(old.id)
      .run();
    // Created long ago but wanted again only now (a replay or an operator's retry).
    await env.DB.prepare(
      `UPDATE export_jobs SET created_at = ${ago(120)}, pending_since = ${ago(5)} WHERE id = ?`,
    )
      .bind(replayed.id)
      .run();
    await env.DB.prepare(`UPDATE export_jobs SET pending_since = ${ago(5)} WHERE id = ?`)
      .bind(fresh.id)
      .run();

    const report = await pass(reconcilerEnv(endpoint, { PENDING_MAX_AGE_S: "60" }));
    expect(report.expired).toBeGreaterThanOrEqual(1);
    const row = await readJob(old.id);
    expect(row).toMatchObject({ status: "error", due_at: null });
    expect(row?.error).toMatch(/^expired/);
    expect(row?.version).toBe(old.version + 1);
    expect((await readJob(replayed.id))?.status).toBe("pending");
    expect((await readJob(fresh.id))?.status).toBe("pending");
    // An expired job is not re-enqueued.
    await messageArrives(fresh.id);
    expect(await sentMessagesFor(old.id)).toEqual([]);
  });

  it("retries a job claimed but never recorded (crash between claim and record)", async () => {
    const endpoint = uniqueEndpoint("crash");
    const job = await processingJob({ runId: null });
    expect(job.attempt).toBe(1);
    await makeDue(job.id);
    const report = await pass(reconcilerEnv(endpoint));
    expect(report.claimsExpired).toBeGreaterThanOrEqual(1);
    const row = await readJob(job.id);
    expect(row).toMatchObject({ status: "pending", retry_count: 1, attempt: 1 });
    expect(row?.error).toMatch(/no RunPod run recorded/);
    await messageArrives(job.id);
  });

  it("polls a run with no news and applies COMPLETED as the webhook would", async () => {
    const endpoint = uniqueEndpoint("poll");
    const job = await insertPendingJob();
    const key = `exports/${job.project_id}/custom.mp4`;
    await putOutput(job, key);
    const runId = await startRun(endpoint, { queueMs: 0, runMs: 1, dropWebhookRate: 1 }, key);
    await waitFor(async () => ((await runStatus(runId)) === "COMPLETED" ? true : undefined), "run");
    await claimedWithRun(job, runId);
    await makeDue(job.id);
    const report = await pass(reconcilerEnv(endpoint));
    expect(report.outcomes.completed).toBeGreaterThanOrEqual(1);
    expect(await readJob(job.id)).toMatchObject({
      status: "complete",
      progress: 100,
      output_video_key: key,
      runpod_job_id: runId,
      due_at: null,
    });
  });

  it("keeps the planned output key when the polled run reports one outside the job's project", async () => {
    const endpoint = uniqueEndpoint("pollkey");
    const job = await insertPendingJob();
    // Only the planned key holds an output; the reported one is not looked at.
    await putOutput(job);
    const runId = await startRun(
      endpoint,
      { queueMs: 0, runMs: 1, dropWebhookRate: 1 },
      `exports/${job.project_id + 1}/theirs.mp4`,
    );
    await waitFor(async () => ((await runStatus(runId)) === "COMPLETED" ? true : undefined), "run");
    await claimedWithRun(job, runId);
    await makeDue(job.id);
    await pass(reconcilerEnv(endpoint));
    expect(await readJob(job.id)).toMatchObject({
      status: "complete",
      output_video_key: `exports/${job.project_id}/${job.id}.mp4`,
    });
  });

  it("fails a run RunPod no longer knows (404) when its output is not in R2", async () => {
    const endpoint = uniqueEndpoint("expired");
    const job = await processingJob({ runId: "run-expired-long-ago" });
    await makeDue(job.id);
    await pass(reconcilerEnv(endpoint));
    const row = await readJob(job.id);
    expect(row).toMatchObject({ status: "pending", retry_count: 1, runpod_job_id: null });
    expect(row?.error).toMatch(/not found \(expired\) and no output/);
    expect(row?.error).toContain(`exports/${job.project_id}/${job.id}.mp4`);
    await messageArrives(job.id);
  });

  it("completes a run RunPod no longer knows (404) when its output is in R2", async () => {
    const endpoint = uniqueEndpoint("expired-done");
    const job = await processingJob({ runId: "run-finished-long-ago" });
    const key = `exports/${job.project_id}/${job.id}.mp4`;
    await env.VIDEOS.put(key, new Uint8Array([1, 2, 3]));
    await makeDue(job.id);
    const report = await pass(reconcilerEnv(endpoint));
    expect(report.outcomes.completed).toBeGreaterThanOrEqual(1);
    expect(await readJob(job.id)).toMatchObject({
      status: "complete",
      progress: 100,
      output_video_key: key,
      runpod_job_id: "run-finished-long-ago",
      retry_count: 0,
      error: null,
    });
  });

  it("records progress from an IN_PROGRESS poll and leaves the job processing", async () => {
    const endpoint = uniqueEndpoint("inprogress");
    const runId = await startRun(
      endpoint,
      { queueMs: 0, runMs: 6000, progressSteps: [30] },
      "exports/r/out.mp4",
    );
    await waitFor(async () => {
      const res = await fetch(`${env.RUNPOD_BASE_URL}/${endpoint}/status/${runId}`, {
        headers: { authorization: `Bearer ${env.RUNPOD_API_KEY}` },
      });
      const body = (await res.json()) as { output?: { progress?: number } };
      return body.output?.progress === 30 ? true : undefined;
    }, "progress 30");
    const job = await processingJob({ runId });
    await makeDue(job.id);
    await pass(reconcilerEnv(endpoint));
    expect(await readJob(job.id)).toMatchObject({ status: "processing", progress: 30 });
  });

  it("tries RunPod's /cancel again for a cancelled job whose cancel failed", async () => {
    const endpoint = uniqueEndpoint("recancel");
    const runId = await startRun(endpoint, { queueMs: 0, runMs: 60_000 }, "exports/r/out.mp4");
    const job = await processingJob({ runId });
    // The user's cancel landed in D1, RunPod's /cancel did not: due_at says "cancel it again".
    await env.DB.prepare(
      `UPDATE export_jobs SET status = 'error', error = 'cancelled',
              due_at = datetime('now', '-1 seconds') WHERE id = ?`,
    )
      .bind(job.id)
      .run();

    // RunPod still refuses (here: the key): the job stays marked for another try.
    const refused = await pass(reconcilerEnv(endpoint, { RUNPOD_API_KEY: "not-the-key" }));
    expect(refused.outcomes.cancel_retried).toBeGreaterThanOrEqual(1);
    expect((await readJob(job.id))?.due_at).not.toBeNull();
    expect(await runStatus(runId)).not.toBe("CANCELLED");

    await makeDue(job.id);
    const report = await pass(reconcilerEnv(endpoint));
    expect(report.outcomes.cancel_retried).toBeGreaterThanOrEqual(1);
    expect(await runStatus(runId)).toBe("CANCELLED");
    const cancels = (await emulatorRequests(endpoint)).filter((r) =>
      r.path.endsWith(`/cancel/${runId}`),
    );
    expect(cancels.map((r) => r.responseStatus)).toEqual([401, 200]);
    expect(await readJob(job.id)).toMatchObject({
      status: "error",
      error: "cancelled",
      due_at: null,
    });
  });

  it("isolates its steps: one that fails is reported and the others still run", async () => {
    const endpoint = uniqueEndpoint("isolated");
    const lost = await insertPendingJob();
    const deps = consumerDeps(reconcilerEnv(endpoint));
    const db = deps.db;
    const broken = new Proxy(db, {
      get(target, prop) {
        if (prop === "prepare") {
          return (sql: string) => {
            if (sql === JOB_SQL.expirePending) throw new Error("expire statement broke");
            return target.prepare(sql);
          };
        }
        const value = Reflect.get(target, prop);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const report = await reconcile({ ...deps, db: broken });
    expect(report.failedSteps).toEqual(["expire"]);
    expect(report.requeued).toBeGreaterThanOrEqual(1);
    await messageArrives(lost.id);
  });

  it("is safe to run twice at once: each due job is handled by one pass", async () => {
    const endpoint = uniqueEndpoint("twice");
    const crashed = await processingJob({ runId: null });
    const expired = await processingJob({ runId: "run-gone" });
    const testEnv = reconcilerEnv(endpoint, { POLL_AFTER_S: "600" });
    // Make both due now; the lease then pushes them 600 s ahead, so the second pass skips them.
    await env.DB.prepare(
      "UPDATE export_jobs SET due_at = datetime('now', '-1 seconds') WHERE id IN (?, ?)",
    )
      .bind(crashed.id, expired.id)
      .run();
    await Promise.all([pass(testEnv), pass(testEnv)]);
    expect(await readJob(crashed.id)).toMatchObject({ status: "pending", retry_count: 1 });
    expect(await readJob(expired.id)).toMatchObject({ status: "pending", retry_count: 1 });
  });
});
