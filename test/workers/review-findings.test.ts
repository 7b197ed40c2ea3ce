// Review findings 4, 5, 6 and 9: infrastructure failures never end jobs, unwanted runs do not keep
// running, the reconciler keeps up and isolates its steps, a run RunPod forgot is finished when its
// output is in R2, and the connection and delay limits hold. (1 and 2: query-plans.test.ts;
// 3: attempts.test.ts; 7: runpod-webhook.test.ts; 8: request-size.test.ts; 10: the README.)
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { infrastructureRetryDelayS } from "../../consumer/index.ts";
import { consumerDeps } from "../../consumer/process-jobs.ts";
import { reconcile } from "../../consumer/reconciler.ts";
import { MAX_QUEUE_DELAY_S, retryDelaySeconds } from "../../shared/job-state.ts";
import { consumerSettings } from "../../shared/settings.ts";
import * as jobs from "../../shared/sql/jobs/transitions.ts";
import {
  configureEndpoint,
  deliver,
  emulatorOrigin,
  emulatorRequests,
  insertPendingJob,
  postJson,
  processingJob,
  readJob,
  runCalls,
  uniqueEndpoint,
} from "./helpers.ts";

type TestEnv = typeof env;
const envFor = (endpoint: string, extra: Record<string, string> = {}): TestEnv => ({
  ...env,
  RUNPOD_ENDPOINT_ID: endpoint,
  ...extra,
});

async function runState(runId: string): Promise<string> {
  const res = await fetch(`${emulatorOrigin}/__emulator/jobs/${runId}`);
  return ((await res.json()) as { status: string }).status;
}

async function makeDue(id: string): Promise<void> {
  await env.DB.prepare("UPDATE export_jobs SET due_at = datetime('now', '-1 seconds') WHERE id = ?")
    .bind(id)
    .run();
}

describe("4. infrastructure failures end no job", () => {
  it("a consumer missing a setting retries the whole batch later, with a growing delay, touching no job", async () => {
    const job = await insertPendingJob();
    const testEnv = envFor(uniqueEndpoint("noconf"), { PUBLIC_URL: "" });
    const first = await deliver([job.id], { env: testEnv, attempts: 1 });
    expect(first).toMatchObject({ retryBatch: { retry: true, delaySeconds: 30 } });
    const fifth = await deliver([job.id], { env: testEnv, attempts: 5 });
    expect(fifth).toMatchObject({ retryBatch: { retry: true, delaySeconds: 480 } });
    expect(await readJob(job.id)).toMatchObject({ status: "pending", retry_count: 0, attempt: 0 });
    // Ten deliveries span hours, not seconds, before the dead-letter queue.
    const total = Array.from({ length: 10 }, (_, i) => infrastructureRetryDelayS(i + 1)).reduce(
      (a, b) => a + b,
    );
    expect(total).toBeGreaterThan(6 * 3600);
  });

  it("a bad RUNPOD_MAX_IN_FLIGHT (not auto, not a positive integer) stops the consumer with a message naming it", async () => {
    const job = await insertPendingJob();
    for (const bad of ["0", "-3", "2.5", "auto-ish", "ten"]) {
      const testEnv = envFor(uniqueEndpoint("badcap"), { RUNPOD_MAX_IN_FLIGHT: bad });
      expect(() => consumerDeps(testEnv)).toThrow(
        `setting RUNPOD_MAX_IN_FLIGHT must be "auto" or a positive integer, got ${JSON.stringify(bad)}`,
      );
      const delivery = await deliver([job.id], { env: testEnv, attempts: 1 });
      expect(delivery).toMatchObject({ retryBatch: { retry: true, delaySeconds: 30 } });
    }
    expect(await readJob(job.id)).toMatchObject({ status: "pending", retry_count: 0, attempt: 0 });
    for (const good of ["auto", " auto ", "1", "40", ""]) {
      const testEnv = envFor(uniqueEndpoint("goodcap"), { RUNPOD_MAX_IN_FLIGHT: good });
      expect(consumerDeps(testEnv).settings.gate.maxInFlight).toEqual(
        good.trim() === "" || good.trim() === "auto" ? "auto" : Number(good),
      );
    }
  });

  it("the dead letter of a job never dispatched leaves it for the reconciler", async () => {
    const job = await insertPendingJob();
    await deliver([{ id: `dl-${job.id}`, body: { job_id: job.id } }], {
      queue: "export-jobs-dlq",
      attempts: 11,
    });
    expect(await readJob(job.id)).toMatchObject({ status: "pending", error: null });
  });
});

describe("5. unwanted runs are cancelled", () => {
  it("a run whose attempt moved on while /run was answering is cancelled at RunPod", async () => {
    const endpoint = uniqueEndpoint("unwanted");
    // /run answers after 300 ms; meanwhile the job is cancelled by its user.
    await configureEndpoint(endpoint, { runDelayMs: 300, runMs: 60_000 });
    const job = await insertPendingJob();
    const delivered = deliver([job.id], { env: envFor(endpoint) });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect((await postJson(`/exports/${job.id}/cancel`, {})).status).toBe(200);
    await delivered;
    const [run] = runCalls(await emulatorRequests(endpoint));
    const accepted = (await emulatorRequests(endpoint)).filter((r) => r.path.includes("/cancel/"));
    expect(run?.responseStatus).toBe(200);
    expect(accepted).toHaveLength(1);
    const cancelledRun = accepted[0]?.path.split("/").at(-1) as string;
    expect(await runState(cancelledRun)).toBe("CANCELLED");
    // Recorded on the cancelled job (its GPU time counted, its cancel retried until confirmed),
    // which stays cancelled; the confirmed cancel leaves nothing due.
    expect(await readJob(job.id)).toMatchObject({
      status: "error",
      error: "cancelled",
      runpod_job_id: cancelledRun,
      due_at: null,
    });
  });

  it("a user's cancel whose RunPod /cancel failed is tried again by the reconciler", async () => {
    const endpoint = uniqueEndpoint("recancel");
    await configureEndpoint(endpoint, { runMs: 60_000 });
    const submitted = await fetch(`${env.RUNPOD_BASE_URL}/${endpoint}/run`, {
      method: "POST",
      headers: { authorization: `Bearer ${env.RUNPOD_API_KEY}` },
      body: JSON.stringify({ input: {} }),
    });
    const runId = ((await submitted.json()) as { id: string }).id;
    const job = await processingJob({ runId });
    await configureEndpoint(endpoint, { outage: true });
    const cancelled = await postJson(
      `/exports/${job.id}/cancel`,
      {},
      {
        vars: { RUNPOD_ENDPOINT_ID: endpoint },
      },
    );
    expect(cancelled.status).toBe(200);
    expect(await runState(runId)).not.toBe("CANCELLED");
    expect((await readJob(job.id))?.due_at).not.toBeNull(); // remembered: cancel again

    await configureEndpoint(endpoint, { outage: false });
    await makeDue(job.id);
    const report = await reconcile(consumerDeps(envFor(endpoint)));
    expect(report.outcomes.cancel_retried).toBeGreaterThanOrEqual(1);
    expect(await runState(runId)).toBe("CANCELLED");
    expect(await readJob(job.id)).toMatchObject({
      status: "error",
      error: "cancelled",
      due_at: null,
    });
  });
});

describe("6. the reconciler", () => {
  it("leases in a loop until the backlog is worked off, not one batch per minute", async () => {
    const endpoint = uniqueEndpoint("backlog");
    await configureEndpoint(endpoint, { runMs: 60_000 });
    const backlog = await Promise.all(
      Array.from({ length: 7 }, () => processingJob({ runId: null })),
    );
    for (const job of backlog) await makeDue(job.id);
    const report = await reconcile(consumerDeps(envFor(endpoint, { RETRY_BASE_DELAY_S: "0" })), {
      batch: 2,
    });
    expect(report.claimsExpired).toBeGreaterThanOrEqual(7);
    for (const job of backlog) {
      expect(await readJob(job.id)).toMatchObject({ status: "pending", retry_count: 1 });
    }
  });

  it("a failing step is logged and the other steps still run", async () => {
    const endpoint = uniqueEndpoint("isolate");
    const job = await processingJob({ runId: null });
    await makeDue(job.id);
    // A PENDING_MAX_AGE_S so large that its cutoff is no date: the expire step throws.
    const report = await reconcile(
      consumerDeps(envFor(endpoint, { PENDING_MAX_AGE_S: "1e16", RETRY_BASE_DELAY_S: "0" })),
    );
    expect(report.failedSteps).toEqual(["expire"]);
    expect(await readJob(job.id)).toMatchObject({ status: "pending", retry_count: 1 });
  });

  it("a run RunPod no longer knows completes the job when its output is in R2, fails it otherwise", async () => {
    const endpoint = uniqueEndpoint("forgot");
    const withOutput = await processingJob({ runId: "run-forgotten-1" });
    const without = await processingJob({ runId: "run-forgotten-2" });
    await env.VIDEOS.put(`exports/${withOutput.project_id}/${withOutput.id}.mp4`, "mp4");
    await makeDue(withOutput.id);
    await makeDue(without.id);
    await reconcile(consumerDeps(envFor(endpoint, { RETRY_BASE_DELAY_S: "0" })));
    expect(await readJob(withOutput.id)).toMatchObject({
      status: "complete",
      output_video_key: `exports/${withOutput.project_id}/${withOutput.id}.mp4`,
      runpod_job_id: "run-forgotten-1",
    });
    const failed = await readJob(without.id);
    expect(failed).toMatchObject({ status: "pending", retry_count: 1 });
    expect(failed?.error).toMatch(/not found \(expired\) and no output/);
  });

  it("expires jobs never dispatched within PENDING_MAX_AGE_S", async () => {
    const old = await insertPendingJob();
    const fresh = await insertPendingJob();
    await env.DB.prepare(
      "UPDATE export_jobs SET created_at = datetime('now', '-2 days'), pending_since = datetime('now', '-2 days') WHERE id = ?",
    )
      .bind(old.id)
      .run();
    const report = await reconcile(consumerDeps(envFor(uniqueEndpoint("expire"))));
    expect(report.expired).toBeGreaterThanOrEqual(1);
    const expired = await readJob(old.id);
    expect(expired?.status).toBe("error");
    expect(expired?.error).toMatch(/^expired: not dispatched within 86400s/);
    expect((await readJob(fresh.id))?.status).toBe("pending");
  });
});

describe("9. limits", () => {
  it("SUBMIT_CONCURRENCY is capped at a Worker's 6 connections; delays at the Queues maximum", () => {
    expect(consumerSettings({ ...env, SUBMIT_CONCURRENCY: "50" }).submitConcurrency).toBe(6);
    expect(consumerSettings({ ...env, SUBMIT_CONCURRENCY: "2" }).submitConcurrency).toBe(2);
    const huge = { baseDelayS: 100_000, maxDelayS: 1_000_000 };
    for (let failures = 1; failures <= 4; failures++) {
      expect(retryDelaySeconds(failures, huge)).toBeLessThanOrEqual(MAX_QUEUE_DELAY_S);
    }
    expect(infrastructureRetryDelayS(100)).toBeLessThanOrEqual(MAX_QUEUE_DELAY_S);
  });

  it("claim and record use the job's attempt, so a batch of 100 binds two parameters", async () => {
    const many = await Promise.all(Array.from({ length: 100 }, () => insertPendingJob()));
    const claimed = await jobs.claimJobs(
      env.DB,
      many.map((job) => job.id),
      120,
    );
    expect(claimed).toHaveLength(100);
    expect(new Set(claimed.map((job) => job.attempt))).toEqual(new Set([1]));
  });
});
