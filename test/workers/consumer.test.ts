import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { consumerSettings } from "../../shared/settings.ts";
import { signAttempt } from "../../shared/signing.ts";
import {
  ADMIN_TOKEN,
  callbackPath,
  configureEndpoint,
  deliver,
  emulatorOrigin,
  emulatorRequests,
  insertPendingJob,
  postJson,
  producerFetch,
  putOutput,
  readJob,
  runCalls,
  sentMessagesFor,
  spyQueue,
  uniqueEndpoint,
  waitFor,
} from "./helpers.ts";

/**
 * The test bindings for one endpoint (so each test has its own dispatch gate), with EXPORT_QUEUE
 * wrapped in a forwarding spy that notes every send and its delay: delayed messages do not reach
 * the queue spy during a test, but what the consumer asked for is still visible.
 */
function envFor(endpoint: string, extra: Record<string, string> = {}) {
  const { queue, sent } = spyQueue();
  return { ...env, RUNPOD_ENDPOINT_ID: endpoint, ...extra, EXPORT_QUEUE: queue, sent };
}
type TestEnv = ReturnType<typeof envFor>;

/** The delays of the consumer's sends that carried `jobId`, in order. */
function sendsFor(testEnv: TestEnv, jobId: string): (number | undefined)[] {
  return testEnv.sent.filter((s) => s.jobIds.includes(jobId)).map((s) => s.delaySeconds);
}

let messageCounter = 0;
function message(body: unknown, attempts = 1) {
  messageCounter += 1;
  return { id: `msg-${messageCounter}`, timestamp: new Date(), attempts, body };
}

/** Seconds from now until the job's due_at (when a re-pended job may be tried again). */
async function secondsUntilDue(id: string): Promise<number> {
  const row = await env.DB.prepare(
    "SELECT (julianday(due_at) - julianday('now')) * 86400 AS s FROM export_jobs WHERE id = ?",
  )
    .bind(id)
    .first<{ s: number }>();
  return row?.s ?? Number.NaN;
}

interface EmulatorJob {
  id: string;
  status: string;
}

async function emulatorJobs(endpoint: string): Promise<EmulatorJob[]> {
  const res = await fetch(`${emulatorOrigin}/__emulator/jobs?endpoint=${endpoint}`);
  return ((await res.json()) as { jobs: EmulatorJob[] }).jobs;
}

/** The run RunPod created for the endpoint's only submission, once it exists. */
const createdRun = (endpoint: string) =>
  waitFor(async () => (await emulatorJobs(endpoint))[0], "the run to be created");

const cancelCalls = async (endpoint: string, runId: string) =>
  (await emulatorRequests(endpoint)).filter(
    (r) => r.method === "POST" && r.path.endsWith(`/cancel/${runId}`),
  );

describe("consumer: submit", () => {
  it("sends RunPod exactly the contract's /run body for attempt 1 and records runpod_job_id", async () => {
    const endpoint = uniqueEndpoint("body");
    await configureEndpoint(endpoint, { runMs: 60_000 });
    const job = await insertPendingJob();
    expect(job.attempt).toBe(0);
    const msg = message({ job_id: job.id });
    const testEnv = envFor(endpoint);

    const result = await deliver([msg], { env: testEnv });
    expect(result.explicitAcks).toEqual([msg.id]);
    expect(result.retryMessages).toEqual([]);
    expect(testEnv.sent).toEqual([]);

    const calls = runCalls(await emulatorRequests(endpoint));
    expect(calls).toHaveLength(1);
    const secret = env.WEBHOOK_SECRET as string;
    const webhookSig = await signAttempt(secret, "webhook", job.id, 1);
    const progressSig = await signAttempt(secret, "progress", job.id, 1);
    expect(webhookSig).not.toBe(progressSig);
    expect(calls[0]?.authorization).toBe(`Bearer ${env.RUNPOD_API_KEY}`);
    expect(calls[0]?.path).toBe(`/v2/${endpoint}/run`);
    expect(calls[0]?.body).toEqual({
      input: {
        export_job_id: job.id,
        project_id: job.project_id,
        type: "overlay",
        input_video_key: job.input_video_key,
        output_video_key: `exports/${job.project_id}/${job.id}.mp4`,
        params: JSON.parse(job.params),
        progress_url: `https://exports.test/runpod/progress/${job.id}?attempt=1&sig=${progressSig}`,
      },
      webhook: `https://exports.test/runpod/webhook/${job.id}?attempt=1&sig=${webhookSig}`,
      policy: { executionTimeout: 1_800_000, ttl: 86_400_000 },
    });

    const row = await readJob(job.id);
    expect(row).toMatchObject({ status: "processing", attempt: 1, retry_count: 0 });
    // Two changes of the row: the claim and the recorded run.
    expect(row?.version).toBe(job.version + 2);
    expect(row?.started_at).not.toBeNull();
    const accepted = (await emulatorRequests(endpoint)).find((r) => r.path.endsWith("/run"));
    expect(accepted?.responseStatus).toBe(200);
    expect(row?.runpod_job_id).toMatch(/.+/);
    const status = await fetch(`${emulatorOrigin}/__emulator/jobs/${row?.runpod_job_id}`);
    expect(status.status).toBe(200);
  });

  it("claims once under duplicate delivery: two deliveries, one RunPod call, one attempt", async () => {
    const endpoint = uniqueEndpoint("dup");
    await configureEndpoint(endpoint, { runMs: 60_000 });
    const job = await insertPendingJob();
    const testEnv = envFor(endpoint);
    const first = await deliver([message({ job_id: job.id })], { env: testEnv });
    const afterFirst = await readJob(job.id);
    const redelivered = message({ job_id: job.id }, 2);
    const second = await deliver([redelivered], { env: testEnv });

    expect(first.retryMessages).toEqual([]);
    expect(second.explicitAcks).toEqual([redelivered.id]);
    expect(second.retryMessages).toEqual([]);
    expect(runCalls(await emulatorRequests(endpoint))).toHaveLength(1);
    const row = await readJob(job.id);
    expect(row).toMatchObject({ status: "processing", retry_count: 0, attempt: 1 });
    expect(row).toEqual(afterFirst);
    expect(testEnv.sent).toEqual([]);
  });

  it("claims once when the same message is in two concurrent batches, and twice in one batch", async () => {
    const endpoint = uniqueEndpoint("race");
    await configureEndpoint(endpoint, { runMs: 60_000, runDelayMs: 100 });
    const job = await insertPendingJob();
    const twin = await insertPendingJob();
    const testEnv = envFor(endpoint);
    const [a, b] = await Promise.all([
      deliver([message({ job_id: job.id }), message({ job_id: twin.id })], { env: testEnv }),
      deliver([message({ job_id: job.id }), message({ job_id: twin.id })], { env: testEnv }),
    ]);
    expect(a.explicitAcks).toHaveLength(2);
    expect(b.explicitAcks).toHaveLength(2);
    const calls = runCalls(await emulatorRequests(endpoint));
    const submitted = calls.map(
      (c) => (c.body as { input: { export_job_id: string } }).input.export_job_id,
    );
    expect(submitted.sort()).toEqual([job.id, twin.id].sort());
    expect((await readJob(job.id))?.attempt).toBe(1);
    expect((await readJob(twin.id))?.attempt).toBe(1);

    const third = await insertPendingJob();
    const inOneBatch = await deliver(
      [message({ job_id: third.id }), message({ job_id: third.id })],
      { env: testEnv },
    );
    expect(inOneBatch.explicitAcks).toHaveLength(2);
    expect(runCalls(await emulatorRequests(endpoint))).toHaveLength(3);
    expect((await readJob(third.id))?.attempt).toBe(1);
  });

  it("applies the seed's CASE: three re-pends as fresh delayed messages, then error with retry_count 4", async () => {
    const endpoint = uniqueEndpoint("case");
    await configureEndpoint(endpoint, { runScript: [500, 500, 500, 500] });
    const job = await insertPendingJob();
    // Four 5xx in a row: the breaker is not what this test is about.
    const testEnv = envFor(endpoint, { BREAKER_THRESHOLD: "1000" });

    const delays: number[] = [];
    for (let failure = 1; failure <= 3; failure++) {
      const msg = message({ job_id: job.id });
      const result = await deliver([msg], { env: testEnv });
      // The message is acked, never retried: waiting must not count toward max_retries.
      expect(result.explicitAcks).toEqual([msg.id]);
      expect(result.retryMessages).toEqual([]);
      const sends = sendsFor(testEnv, job.id);
      expect(sends).toHaveLength(failure);
      const delay = sends.at(-1) as number;
      expect(delay).toEqual(expect.any(Number));
      delays.push(delay);
      // The row records the same delay, for the reconciler: due_at ≈ now + delay.
      const untilDue = await secondsUntilDue(job.id);
      expect(Math.round(untilDue)).toBeGreaterThanOrEqual(delay - 2);
      expect(Math.round(untilDue)).toBeLessThanOrEqual(delay);
      expect(untilDue).toBeGreaterThan(0);
      const row = await readJob(job.id);
      expect(row).toMatchObject({
        status: "pending",
        retry_count: failure,
        attempt: failure,
        runpod_job_id: null,
      });
      expect(row?.error).toMatch(/HTTP 500/);
    }
    // RETRY_BASE_DELAY_S = 30 with equal jitter: 15–30 s, 30–60 s, 60–120 s.
    expect(delays[0]).toBeGreaterThanOrEqual(15);
    expect(delays[0]).toBeLessThanOrEqual(30);
    expect(delays[1]).toBeGreaterThanOrEqual(30);
    expect(delays[1]).toBeLessThanOrEqual(60);
    expect(delays[2]).toBeGreaterThanOrEqual(60);
    expect(delays[2]).toBeLessThanOrEqual(120);
    expect(delays[1]).toBeGreaterThanOrEqual(delays[0] as number);
    expect(delays[2]).toBeGreaterThanOrEqual(delays[1] as number);

    const last = message({ job_id: job.id });
    const final = await deliver([last], { env: testEnv });
    expect(final.explicitAcks).toEqual([last.id]);
    expect(final.retryMessages).toEqual([]);
    const row = await readJob(job.id);
    expect(row).toMatchObject({ status: "error", retry_count: 4, attempt: 4, runpod_job_id: null });
    expect(row?.due_at).toBeNull();
    expect(row?.error).toMatch(/HTTP 500/);
    expect(sendsFor(testEnv, job.id)).toHaveLength(3); // the end sends nothing
    expect(runCalls(await emulatorRequests(endpoint))).toHaveLength(4);

    // A fifth delivery of a finished job changes nothing and calls nobody.
    await deliver([message({ job_id: job.id })], { env: testEnv });
    expect(runCalls(await emulatorRequests(endpoint))).toHaveLength(4);
    expect(await readJob(job.id)).toEqual(row);
  });

  it("releases a job RunPod rate-limits (429): pending, same retry_count, due after the cooldown", async () => {
    const endpoint = uniqueEndpoint("429");
    await configureEndpoint(endpoint, { runScript: [429], runMs: 60_000 });
    const job = await insertPendingJob();
    const testEnv = envFor(endpoint, { BREAKER_COOLDOWN_S: "45" });
    const msg = message({ job_id: job.id });

    const result = await deliver([msg], { env: testEnv });
    expect(result.explicitAcks).toEqual([msg.id]);
    expect(result.retryMessages).toEqual([]);
    const row = await readJob(job.id);
    expect(row).toMatchObject({
      status: "pending",
      retry_count: 0,
      attempt: 1,
      error: null,
      runpod_job_id: null,
    });
    // The emulator's scripted 429 sends no Retry-After: BREAKER_COOLDOWN_S is the delay.
    expect(sendsFor(testEnv, job.id)).toEqual([45]);
    const untilDue = await secondsUntilDue(job.id);
    expect(Math.round(untilDue)).toBeGreaterThanOrEqual(43);
    expect(Math.round(untilDue)).toBeLessThanOrEqual(45);

    // The released job's next message claims a fresh attempt, with its retries intact.
    const next = message({ job_id: job.id });
    const again = await deliver([next], { env: testEnv });
    expect(again.explicitAcks).toEqual([next.id]);
    expect(await readJob(job.id)).toMatchObject({
      status: "processing",
      retry_count: 0,
      attempt: 2,
      runpod_job_id: expect.stringMatching(/.+/),
    });
    expect(runCalls(await emulatorRequests(endpoint))).toHaveLength(2);
  });

  it("releases the job when RunPod refuses the API key (401) and pauses dispatch at once", async () => {
    const endpoint = uniqueEndpoint("auth");
    await configureEndpoint(endpoint, { runMs: 60_000 });
    const job = await insertPendingJob();
    const badKey = envFor(endpoint, { RUNPOD_API_KEY: "not-the-key", BREAKER_COOLDOWN_S: "40" });
    const msg = message({ job_id: job.id });

    const result = await deliver([msg], { env: badKey });
    expect(result.explicitAcks).toEqual([msg.id]);
    expect(result.retryMessages).toEqual([]);
    const calls = runCalls(await emulatorRequests(endpoint));
    expect(calls.map((c) => c.responseStatus)).toEqual([401]);
    expect(await readJob(job.id)).toMatchObject({
      status: "pending",
      retry_count: 0,
      attempt: 1,
      error: null,
    });
    expect(sendsFor(badKey, job.id)).toEqual([40]);

    // The gate of this endpoint is paused now: even with the right key, nothing is claimed.
    const other = await insertPendingJob();
    const goodKey = envFor(endpoint, { BREAKER_COOLDOWN_S: "40" });
    const held = message({ job_id: other.id });
    const heldResult = await deliver([held], { env: goodKey });
    expect(heldResult.explicitAcks).toEqual([held.id]);
    expect(heldResult.retryMessages).toEqual([]);
    expect(runCalls(await emulatorRequests(endpoint))).toHaveLength(1);
    // Not claimed: the row is only marked held by the dispatcher (due_at cleared, the
    // dispatcher named).
    expect(await readJob(other.id)).toEqual({
      ...other,
      due_at: null,
      version: other.version + 1,
      runpod_endpoint_id: endpoint,
    });
    // It waits in the dispatcher, which sends it again when the pause is over.
    expect(sendsFor(goodKey, other.id)).toEqual([]);
    const gate = env.DISPATCHER.get(env.DISPATCHER.idFromName(endpoint));
    expect(await gate.status()).toMatchObject({ state: "paused", waiting: 1 });
  });

  it("opens the breaker after BREAKER_THRESHOLD failed submissions: later jobs are held back, not claimed", async () => {
    const endpoint = uniqueEndpoint("breaker");
    await configureEndpoint(endpoint, { runScript: [500, 500], runMs: 60_000 });
    const testEnv = envFor(endpoint, { BREAKER_THRESHOLD: "2", BREAKER_COOLDOWN_S: "50" });
    const failing = [await insertPendingJob(), await insertPendingJob()];
    for (const job of failing) {
      await deliver([message({ job_id: job.id })], { env: testEnv });
      expect(await readJob(job.id)).toMatchObject({ status: "pending", retry_count: 1 });
    }
    expect(runCalls(await emulatorRequests(endpoint))).toHaveLength(2);

    const stats = await producerFetch("/stats", {
      token: ADMIN_TOKEN,
      vars: { RUNPOD_ENDPOINT_ID: endpoint },
    });
    const { dispatch } = (await stats.json()) as { dispatch: { state: string } | null };
    expect(dispatch?.state).toBe("paused");

    const held = await insertPendingJob();
    const msg = message({ job_id: held.id });
    const result = await deliver([msg], { env: testEnv });
    expect(result.explicitAcks).toEqual([msg.id]);
    expect(result.retryMessages).toEqual([]);
    expect(runCalls(await emulatorRequests(endpoint))).toHaveLength(2);
    // Not claimed: no attempt spent; the row is only marked held by the dispatcher (due_at
    // cleared, so the reconciler does not re-enqueue it), where it waits.
    expect(await readJob(held.id)).toEqual({
      ...held,
      due_at: null,
      version: held.version + 1,
      runpod_endpoint_id: endpoint,
    });
    expect(sendsFor(testEnv, held.id)).toEqual([]);
    const gate = env.DISPATCHER.get(env.DISPATCHER.idFromName(endpoint));
    expect(await gate.status()).toMatchObject({ state: "paused", waiting: 1, in_flight: 0 });
  });

  it("leaves the attempt open when RunPod's answer is slower than RUNPOD_TIMEOUT_MS; the run's webhook adopts it", async () => {
    const endpoint = uniqueEndpoint("slow");
    await configureEndpoint(endpoint, { runDelayMs: 1500, runMs: 60_000 });
    const job = await insertPendingJob();
    const msg = message({ job_id: job.id });
    const testEnv = envFor(endpoint, { RUNPOD_TIMEOUT_MS: "200" });
    const result = await deliver([msg], { env: testEnv });
    expect(result.explicitAcks).toEqual([msg.id]);
    expect(result.retryMessages).toEqual([]);
    expect(testEnv.sent).toEqual([]);
    // RunPod may have accepted the run: no retry is spent, the job waits for news of the run.
    expect(await readJob(job.id)).toMatchObject({
      status: "processing",
      attempt: 1,
      retry_count: 0,
      runpod_job_id: null,
      error: null,
    });

    // It did accept it; its webhook (for attempt 1) makes it the job's run.
    const run = await createdRun(endpoint);
    await putOutput(job);
    const res = await postJson(
      await callbackPath("webhook", job.id, 1),
      { id: run.id, status: "COMPLETED", output: {} },
      { token: null },
    );
    expect(await res.json()).toEqual({ applied: true, outcome: "completed" });
    expect(await readJob(job.id)).toMatchObject({
      status: "complete",
      runpod_job_id: run.id,
      output_video_key: `exports/${job.project_id}/${job.id}.mp4`,
    });
  });

  it("cancels the new run at RunPod when the attempt moved on before the run was recorded", async () => {
    const endpoint = uniqueEndpoint("unwanted");
    await configureEndpoint(endpoint, { runDelayMs: 800, runMs: 60_000 });
    const job = await insertPendingJob();
    const msg = message({ job_id: job.id });
    const delivery = deliver([msg], { env: envFor(endpoint) });

    // RunPod created the run but has not answered yet; meanwhile the user cancels the job.
    const run = await createdRun(endpoint);
    expect((await postJson(`/exports/${job.id}/cancel`, {})).status).toBe(200);
    const result = await delivery;
    expect(result.explicitAcks).toEqual([msg.id]);

    // The run is recorded on the cancelled job (its GPU time counted, its cancel retried until
    // RunPod confirms it), which stays cancelled.
    expect(await readJob(job.id)).toMatchObject({
      status: "error",
      error: "cancelled",
      runpod_job_id: run.id,
      due_at: null,
    });
    expect(await cancelCalls(endpoint, run.id)).toHaveLength(1);
    expect((await emulatorJobs(endpoint)).find((j) => j.id === run.id)?.status).toBe("CANCELLED");
  });

  it("keeps a run a fast webhook already adopted: the late record neither undoes nor cancels it", async () => {
    const endpoint = uniqueEndpoint("fast");
    await configureEndpoint(endpoint, { runDelayMs: 800, runMs: 60_000 });
    const job = await insertPendingJob();
    const msg = message({ job_id: job.id });
    const delivery = deliver([msg], { env: envFor(endpoint) });

    const run = await createdRun(endpoint);
    await putOutput(job);
    const res = await postJson(
      await callbackPath("webhook", job.id, 1),
      { id: run.id, status: "COMPLETED", output: {} },
      { token: null },
    );
    expect(await res.json()).toEqual({ applied: true, outcome: "completed" });
    const done = await readJob(job.id);
    expect(done).toMatchObject({ status: "complete", runpod_job_id: run.id, attempt: 1 });

    const result = await delivery;
    expect(result.explicitAcks).toEqual([msg.id]);
    expect(await readJob(job.id)).toEqual(done);
    expect(await cancelCalls(endpoint, run.id)).toEqual([]);
    expect((await emulatorJobs(endpoint)).find((j) => j.id === run.id)?.status).not.toBe(
      "CANCELLED",
    );
  });

  it("processes a batch concurrently: one failing message does not fail the others", async () => {
    const endpoint = uniqueEndpoint("mixed");
    await configureEndpoint(endpoint, { runScript: [200, 500, 200], runMs: 60_000 });
    const jobs = await Promise.all([insertPendingJob(), insertPendingJob(), insertPendingJob()]);
    const messages = jobs.map((job) => message({ job_id: job.id }));
    const testEnv = envFor(endpoint, { RETRY_BASE_DELAY_S: "0" });
    const result = await deliver(messages, { env: testEnv });
    expect(result.explicitAcks.sort()).toEqual(messages.map((m) => m.id).sort());
    expect(result.retryMessages).toEqual([]);
    const rows = await Promise.all(jobs.map((job) => readJob(job.id)));
    const statuses = rows.map((row) => row?.status).sort();
    expect(statuses).toEqual(["pending", "processing", "processing"]);
    for (const row of rows) {
      if (row?.status === "processing") {
        expect(row.runpod_job_id).toMatch(/.+/);
        expect(sendsFor(testEnv, row.id)).toEqual([]);
      }
    }
    // The failed one is re-pended with a fresh message (no delay with RETRY_BASE_DELAY_S = 0).
    const failed = rows.find((row) => row?.status === "pending");
    expect(failed).toMatchObject({ retry_count: 1, attempt: 1, runpod_job_id: null });
    const id = failed?.id as string;
    expect(sendsFor(testEnv, id)).toEqual([0]);
    const sent = await waitFor(async () => {
      const found = await sentMessagesFor(id);
      return found.length > 0 ? found : undefined;
    }, "the re-pended job's message");
    expect(sent).toEqual([{ job_id: id }]);
  });

  it("acknowledges a message that does not parse instead of retrying it forever", async () => {
    const endpoint = uniqueEndpoint("poison");
    const bad = [message("not json at all"), message({ job_id: "nope" }), message({ other: 1 })];
    const result = await deliver(bad, { env: envFor(endpoint) });
    expect(result.explicitAcks.sort()).toEqual(bad.map((m) => m.id).sort());
    expect(result.retryMessages).toEqual([]);
    expect(runCalls(await emulatorRequests(endpoint))).toHaveLength(0);
  });

  it("does not submit a job that was cancelled before its message arrived", async () => {
    const endpoint = uniqueEndpoint("cancelled");
    const job = await insertPendingJob();
    await env.DB.prepare(
      "UPDATE export_jobs SET status = 'error', error = 'cancelled' WHERE id = ?",
    )
      .bind(job.id)
      .run();
    const before = await readJob(job.id);
    const msg = message({ job_id: job.id });
    const result = await deliver([msg], { env: envFor(endpoint) });
    expect(result.explicitAcks).toEqual([msg.id]);
    expect(runCalls(await emulatorRequests(endpoint))).toHaveLength(0);
    expect(await readJob(job.id)).toEqual(before);
    expect(before).toMatchObject({ status: "error", attempt: 0 });
  });
});

describe("consumer: cannot run at all", () => {
  for (const missing of ["RUNPOD_API_KEY", "PUBLIC_URL"]) {
    it(`retries the whole batch with a growing delay when ${missing} is missing, touching no job`, async () => {
      const endpoint = uniqueEndpoint("unconfigured");
      await configureEndpoint(endpoint, { runMs: 60_000 });
      const job = await insertPendingJob();
      const testEnv = envFor(endpoint, { [missing]: "" });

      // The delay grows with the deliveries so far: 30·2^(attempts-1) s, at most 2 h.
      for (const [attempts, delay] of [
        [[1], 30],
        [[2, 3], 120],
        [[1, 20], 7200],
      ] as const) {
        const batch = attempts.map((n) => message({ job_id: job.id }, n));
        const result = await deliver(batch, { env: testEnv });
        expect(result.retryBatch).toEqual({ retry: true, delaySeconds: delay });
        expect(result.explicitAcks).toEqual([]);
        expect(result.retryMessages).toEqual([]);
      }
      expect(await readJob(job.id)).toEqual(job);
      expect(runCalls(await emulatorRequests(endpoint))).toHaveLength(0);
      expect(testEnv.sent).toEqual([]);
    });
  }
});

describe("consumer settings", () => {
  it("caps SUBMIT_CONCURRENCY at 6 (a Worker's open connections) and keeps it at least 1", () => {
    const settingsWith = (value: string) =>
      consumerSettings({ ...env, SUBMIT_CONCURRENCY: value }).submitConcurrency;
    expect(settingsWith("4")).toBe(4);
    expect(settingsWith("6")).toBe(6);
    expect(settingsWith("7")).toBe(6);
    expect(settingsWith("50")).toBe(6);
    expect(settingsWith("0")).toBe(1);
    expect(settingsWith("")).toBe(6);
  });
});
