import { createScheduledController } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import consumer from "../../consumer/index.ts";
import { consumerDeps } from "../../consumer/process-jobs.ts";
import { reconcile } from "../../consumer/reconciler.ts";
import {
  configureEndpoint,
  emulatorOrigin,
  insertPendingJob,
  processingJob,
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

function pass(testEnv: ReturnType<typeof reconcilerEnv>) {
  return reconcile(consumerDeps(testEnv), testEnv.EXPORT_QUEUE);
}

async function startRun(endpoint: string, config: Record<string, unknown>): Promise<string> {
  await configureEndpoint(endpoint, config);
  const res = await fetch(`${env.RUNPOD_BASE_URL}/${endpoint}/run`, {
    method: "POST",
    headers: { authorization: `Bearer ${env.RUNPOD_API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ input: { output_video_key: "exports/r/out.mp4" } }),
  });
  return ((await res.json()) as { id: string }).id;
}

async function runStatus(runId: string): Promise<string> {
  const res = await fetch(`${emulatorOrigin}/__emulator/jobs/${runId}`);
  return ((await res.json()) as { status: string }).status;
}

/** Time passes: the job's claim deadline or poll time is now behind us. */
async function makeDue(id: string): Promise<void> {
  await env.DB.prepare("UPDATE export_jobs SET due_at = datetime('now', '-1 seconds') WHERE id = ?")
    .bind(id)
    .run();
}

const messageArrives = (jobId: string) =>
  waitFor(async () => ((await sentMessagesFor(jobId)).length > 0 ? true : undefined), "message");

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
  });

  it("retries a job claimed but never recorded (crash between claim and record)", async () => {
    const endpoint = uniqueEndpoint("crash");
    const job = await processingJob({ runId: null });
    await makeDue(job.id);
    const report = await pass(reconcilerEnv(endpoint));
    expect(report.claimsExpired).toBeGreaterThanOrEqual(1);
    const row = await readJob(job.id);
    expect(row).toMatchObject({ status: "pending", retry_count: 1 });
    expect(row?.error).toMatch(/no RunPod run recorded/);
    await messageArrives(job.id);
  });

  it("polls a run with no news and applies COMPLETED as the webhook would", async () => {
    const endpoint = uniqueEndpoint("poll");
    const runId = await startRun(endpoint, { queueMs: 0, runMs: 1, dropWebhookRate: 1 });
    await waitFor(async () => ((await runStatus(runId)) === "COMPLETED" ? true : undefined), "run");
    const job = await processingJob({ runId });
    await makeDue(job.id);
    await pass(reconcilerEnv(endpoint));
    expect(await readJob(job.id)).toMatchObject({
      status: "complete",
      progress: 100,
      output_video_key: "exports/r/out.mp4",
    });
  });

  it("counts a run RunPod no longer knows (404) as a failed run", async () => {
    const endpoint = uniqueEndpoint("expired");
    const job = await processingJob({ runId: "run-expired-long-ago" });
    await makeDue(job.id);
    await pass(reconcilerEnv(endpoint));
    const row = await readJob(job.id);
    expect(row).toMatchObject({ status: "pending", retry_count: 1 });
    expect(row?.error).toMatch(/not found/);
  });

  it("records progress from an IN_PROGRESS poll and leaves the job processing", async () => {
    const endpoint = uniqueEndpoint("inprogress");
    const runId = await startRun(endpoint, { queueMs: 0, runMs: 6000, progressSteps: [30] });
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
