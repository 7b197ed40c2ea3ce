import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import consumer from "../../consumer/index.ts";
import { signAttempt } from "../../shared/signing.ts";
import {
  configureEndpoint,
  emulatorRequests,
  insertPendingJob,
  readJob,
  runCalls,
  uniqueEndpoint,
} from "./helpers.ts";

function envFor(endpoint: string, extra: Record<string, string> = {}) {
  return { ...env, RUNPOD_ENDPOINT_ID: endpoint, ...extra };
}

let messageCounter = 0;
function message(body: unknown, attempts = 1) {
  messageCounter += 1;
  return { id: `msg-${messageCounter}`, timestamp: new Date(), attempts, body };
}

/**
 * Runs the consumer's queue() handler on a batch and returns the ack/retry result.
 * @cloudflare/vitest-plugin 1.5.0's getQueueResult() drops the `delaySeconds` of retry(), so each
 * real message is wrapped in a forwarding spy that notes the options it was retried with.
 */
async function deliver(messages: ReturnType<typeof message>[], testEnv: ReturnType<typeof envFor>) {
  const batch = createMessageBatch("export-jobs", messages);
  const delays = new Map<string, number | undefined>();
  const spied = batch.messages.map((real) => ({
    get id() {
      return real.id;
    },
    get body() {
      return real.body;
    },
    get attempts() {
      return real.attempts;
    },
    get timestamp() {
      return real.timestamp;
    },
    ack: () => real.ack(),
    retry: (options?: QueueRetryOptions) => {
      delays.set(real.id, options?.delaySeconds);
      real.retry(options);
    },
  }));
  const ctx = createExecutionContext();
  await consumer.queue(
    { ...batch, queue: batch.queue, messages: spied } as MessageBatch<unknown>,
    testEnv,
  );
  const result = await getQueueResult(batch, ctx);
  return {
    ...result,
    retryMessages: result.retryMessages.map((r) => ({ ...r, delaySeconds: delays.get(r.msgId) })),
  };
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

describe("consumer: submit", () => {
  it("sends RunPod exactly the contract's /run body and records runpod_job_id", async () => {
    const endpoint = uniqueEndpoint("body");
    await configureEndpoint(endpoint, { runMs: 60_000 });
    const job = await insertPendingJob();
    const msg = message({ job_id: job.id });

    const result = await deliver([msg], envFor(endpoint));
    expect(result.explicitAcks).toEqual([msg.id]);
    expect(result.retryMessages).toEqual([]);

    const calls = runCalls(await emulatorRequests(endpoint));
    expect(calls).toHaveLength(1);
    const sig = await signAttempt(env.WEBHOOK_SECRET as string, job.id, 0);
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
        progress_url: `https://exports.test/runpod/progress/${job.id}?attempt=0&sig=${sig}`,
      },
      webhook: `https://exports.test/runpod/webhook/${job.id}?attempt=0&sig=${sig}`,
      policy: { executionTimeout: 1_800_000, ttl: 86_400_000 },
    });

    const row = await readJob(job.id);
    expect(row?.status).toBe("processing");
    expect(row?.started_at).not.toBeNull();
    const accepted = (await emulatorRequests(endpoint)).find((r) => r.path.endsWith("/run"));
    expect(accepted?.responseStatus).toBe(200);
    expect(row?.runpod_job_id).toMatch(/.+/);
    const status = await fetch(
      `${new URL(env.RUNPOD_BASE_URL).origin}/__emulator/jobs/${row?.runpod_job_id}`,
    );
    expect(status.status).toBe(200);
  });

  it("claims once under duplicate delivery: two deliveries, one RunPod call", async () => {
    const endpoint = uniqueEndpoint("dup");
    await configureEndpoint(endpoint, { runMs: 60_000 });
    const job = await insertPendingJob();
    const first = await deliver([message({ job_id: job.id })], envFor(endpoint));
    const redelivered = message({ job_id: job.id }, 2);
    const second = await deliver([redelivered], envFor(endpoint));

    expect(first.retryMessages).toEqual([]);
    expect(second.explicitAcks).toEqual([redelivered.id]);
    expect(runCalls(await emulatorRequests(endpoint))).toHaveLength(1);
    const row = await readJob(job.id);
    expect(row?.status).toBe("processing");
    expect(row?.retry_count).toBe(0);
  });

  it("claims once when the same message is in two concurrent batches, and twice in one batch", async () => {
    const endpoint = uniqueEndpoint("race");
    await configureEndpoint(endpoint, { runMs: 60_000, runDelayMs: 100 });
    const job = await insertPendingJob();
    const twin = await insertPendingJob();
    const testEnv = envFor(endpoint);
    const [a, b] = await Promise.all([
      deliver([message({ job_id: job.id }), message({ job_id: twin.id })], testEnv),
      deliver([message({ job_id: job.id }), message({ job_id: twin.id })], testEnv),
    ]);
    expect(a.explicitAcks).toHaveLength(2);
    expect(b.explicitAcks).toHaveLength(2);
    const calls = runCalls(await emulatorRequests(endpoint));
    const submitted = calls.map(
      (c) => (c.body as { input: { export_job_id: string } }).input.export_job_id,
    );
    expect(submitted.sort()).toEqual([job.id, twin.id].sort());

    const third = await insertPendingJob();
    const inOneBatch = await deliver(
      [message({ job_id: third.id }), message({ job_id: third.id })],
      testEnv,
    );
    expect(inOneBatch.explicitAcks).toHaveLength(2);
    expect(runCalls(await emulatorRequests(endpoint))).toHaveLength(3);
  });

  it("applies the seed's CASE: three re-pends with growing delay, then error with retry_count 4", async () => {
    const endpoint = uniqueEndpoint("case");
    await configureEndpoint(endpoint, { runScript: [500, 429, 500, 500] });
    const job = await insertPendingJob();
    const testEnv = envFor(endpoint);

    const delays: number[] = [];
    for (let attempt = 0; attempt < 3; attempt++) {
      const msg = message({ job_id: job.id }, attempt + 1);
      const result = await deliver([msg], testEnv);
      expect(result.explicitAcks).toEqual([]);
      expect(result.retryMessages).toHaveLength(1);
      expect(result.retryMessages[0]?.msgId).toBe(msg.id);
      delays.push(result.retryMessages[0]?.delaySeconds ?? 0);
      // The row records the same delay, for the reconciler: due_at ≈ now + delay.
      expect(Math.round(await secondsUntilDue(job.id))).toBeGreaterThanOrEqual(
        (delays.at(-1) ?? 0) - 2,
      );
      expect(Math.round(await secondsUntilDue(job.id))).toBeLessThanOrEqual(delays.at(-1) ?? 0);
      const row = await readJob(job.id);
      expect(row?.status).toBe("pending");
      expect(row?.retry_count).toBe(attempt + 1);
      expect(row?.error).toMatch(/HTTP (500|429)/);
      expect(row?.due_at).not.toBeNull();
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

    const last = message({ job_id: job.id }, 4);
    const final = await deliver([last], testEnv);
    expect(final.explicitAcks).toEqual([last.id]);
    expect(final.retryMessages).toEqual([]);
    const row = await readJob(job.id);
    expect(row).toMatchObject({ status: "error", retry_count: 4, runpod_job_id: null });
    expect(row?.error).toMatch(/HTTP 500/);
    expect(runCalls(await emulatorRequests(endpoint))).toHaveLength(4);

    // A fifth delivery of a finished job changes nothing and calls nobody.
    await deliver([message({ job_id: job.id }, 5)], testEnv);
    expect(runCalls(await emulatorRequests(endpoint))).toHaveLength(4);
    expect((await readJob(job.id))?.retry_count).toBe(4);
  });

  it("treats a RunPod answer slower than RUNPOD_TIMEOUT_MS as a failed submission", async () => {
    const endpoint = uniqueEndpoint("slow");
    await configureEndpoint(endpoint, { runDelayMs: 1500, runMs: 60_000 });
    const job = await insertPendingJob();
    const msg = message({ job_id: job.id });
    const result = await deliver([msg], envFor(endpoint, { RUNPOD_TIMEOUT_MS: "200" }));
    expect(result.retryMessages.map((r) => r.msgId)).toEqual([msg.id]);
    const row = await readJob(job.id);
    expect(row).toMatchObject({ status: "pending", retry_count: 1, runpod_job_id: null });
    expect(row?.error).toMatch(/timed out/);
  });

  it("processes a batch concurrently: one failing message does not fail the others", async () => {
    const endpoint = uniqueEndpoint("mixed");
    await configureEndpoint(endpoint, { runScript: [200, 500, 200], runMs: 60_000 });
    const jobs = await Promise.all([insertPendingJob(), insertPendingJob(), insertPendingJob()]);
    const messages = jobs.map((job) => message({ job_id: job.id }));
    const result = await deliver(messages, envFor(endpoint));
    expect(result.explicitAcks).toHaveLength(2);
    expect(result.retryMessages).toHaveLength(1);
    const rows = await Promise.all(jobs.map((job) => readJob(job.id)));
    const statuses = rows.map((row) => row?.status).sort();
    expect(statuses).toEqual(["pending", "processing", "processing"]);
    for (const row of rows) {
      if (row?.status === "processing") expect(row.runpod_job_id).toMatch(/.+/);
    }
  });

  it("acknowledges a message that does not parse instead of retrying it forever", async () => {
    const endpoint = uniqueEndpoint("poison");
    const bad = [message("not json at all"), message({ job_id: "nope" }), message({ other: 1 })];
    const result = await deliver(bad, envFor(endpoint));
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
    const msg = message({ job_id: job.id });
    const result = await deliver([msg], envFor(endpoint));
    expect(result.explicitAcks).toEqual([msg.id]);
    expect(runCalls(await emulatorRequests(endpoint))).toHaveLength(0);
    expect((await readJob(job.id))?.status).toBe("error");
  });
});
