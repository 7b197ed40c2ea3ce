import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import * as repo from "../../shared/job-repository.ts";
import { signAttempt } from "../../shared/signing.ts";
import {
  callbackPath,
  postJson,
  processingJob,
  readJob,
  sentMessagesFor,
  waitFor,
} from "./helpers.ts";

/** RunPod posts its status object; re-pends use no delay here so the re-enqueue is observable. */
async function webhook(jobId: string, attempt: number, body: unknown) {
  return postJson(await callbackPath("webhook", jobId, attempt), body, {
    token: null,
    vars: { RETRY_BASE_DELAY_S: "0" },
  });
}

describe("POST /runpod/webhook/{id}", () => {
  it("COMPLETED → complete with progress 100, the reported output key and completed_at", async () => {
    const job = await processingJob({ runId: "run-ok" });
    const res = await webhook(job.id, 0, {
      id: "run-ok",
      status: "COMPLETED",
      output: { output_video_key: "exports/custom/out.mp4" },
      delayTime: 12,
      executionTime: 3400,
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ applied: true, outcome: "completed" });
    const row = await readJob(job.id);
    expect(row).toMatchObject({
      status: "complete",
      progress: 100,
      output_video_key: "exports/custom/out.mp4",
      runpod_job_id: "run-ok",
      due_at: null,
    });
    expect(row?.completed_at).not.toBeNull();
  });

  it("keeps the planned output key when the reported one is missing or not a valid key", async () => {
    for (const output of [undefined, { output_video_key: "/etc/passwd" }, "done"]) {
      const job = await processingJob({ runId: "run-x" });
      await webhook(job.id, 0, { id: "run-x", status: "COMPLETED", output });
      const row = await readJob(job.id);
      expect(row?.status).toBe("complete");
      expect(row?.output_video_key).toBe(`exports/${job.project_id}/${job.id}.mp4`);
    }
  });

  it("FAILED and TIMED_OUT → the seed's CASE retry with RunPod's error, re-enqueued", async () => {
    for (const status of ["FAILED", "TIMED_OUT"]) {
      const job = await processingJob({ runId: "run-bad" });
      const res = await webhook(job.id, 0, { id: "run-bad", status, error: "CUDA out of memory" });
      expect(await res.json()).toEqual({ applied: true, outcome: "retrying" });
      const row = await readJob(job.id);
      expect(row).toMatchObject({ status: "pending", retry_count: 1 });
      expect(row?.error).toBe(`RunPod ${status}: CUDA out of memory`);
      const sent = await waitFor(async () => {
        const messages = await sentMessagesFor(job.id);
        return messages.length > 0 ? messages : undefined;
      }, "re-enqueued message");
      expect(sent).toEqual([{ job_id: job.id }]);
    }
  });

  it("the fourth failure leaves error with retry_count 4 and sends nothing", async () => {
    const job = await processingJob({ retryCount: 3, runId: "run-last" });
    const res = await webhook(job.id, 3, { id: "run-last", status: "FAILED", error: "boom" });
    expect(await res.json()).toEqual({ applied: true, outcome: "failed" });
    expect(await readJob(job.id)).toMatchObject({ status: "error", retry_count: 4 });
  });

  it("CANCELLED → error 'cancelled'", async () => {
    const job = await processingJob({ runId: "run-c" });
    await webhook(job.id, 0, { id: "run-c", status: "CANCELLED" });
    expect(await readJob(job.id)).toMatchObject({ status: "error", error: "cancelled" });
  });

  it("ignores with 200: a repeat, an older attempt, another run's id, a finished job", async () => {
    const job = await processingJob({ runId: "run-1" });
    const failed = { id: "run-1", status: "FAILED", error: "first" };
    expect(await (await webhook(job.id, 0, failed)).json()).toMatchObject({ applied: true });
    const afterFirst = await readJob(job.id);
    const repeat = await webhook(job.id, 0, failed);
    expect(repeat.status).toBe(200);
    expect(await repeat.json()).toEqual({ applied: false, outcome: "unchanged" });
    expect(await readJob(job.id)).toEqual(afterFirst);

    // Attempt 1 is claimed and running; news about attempt 0 is stale.
    await repo.claimJobs(env.DB, [job.id], 120);
    await repo.recordRun(env.DB, job.id, 1, "run-2", 300);
    const before = await readJob(job.id);
    const stale = await webhook(job.id, 0, { id: "run-1", status: "COMPLETED" });
    expect(stale.status).toBe(200);
    expect(await readJob(job.id)).toEqual(before);

    // The right attempt but not the recorded run.
    const other = await webhook(job.id, 1, { id: "run-someone-else", status: "COMPLETED" });
    expect(await other.json()).toEqual({ applied: false, outcome: "unchanged" });
    expect(await readJob(job.id)).toEqual(before);

    // Finished jobs never change again.
    await webhook(job.id, 1, { id: "run-2", status: "COMPLETED" });
    const done = await readJob(job.id);
    for (const late of ["FAILED", "CANCELLED", "COMPLETED"]) {
      const res = await webhook(job.id, 1, { id: "run-2", status: late, error: "late" });
      expect(res.status).toBe(200);
    }
    expect(await readJob(job.id)).toEqual(done);
  });

  it("applies a webhook that arrives before the run was recorded; the late record does not undo it", async () => {
    const job = await processingJob({ runId: null });
    await webhook(job.id, 0, { id: "run-fast", status: "COMPLETED", output: {} });
    const done = await readJob(job.id);
    expect(done).toMatchObject({ status: "complete", runpod_job_id: "run-fast", progress: 100 });
    expect(await repo.recordRun(env.DB, job.id, 0, "run-fast", 300)).toBeNull();
    expect(await readJob(job.id)).toEqual(done);

    const failing = await processingJob({ runId: null });
    await webhook(failing.id, 0, { id: "run-fast-fail", status: "FAILED", error: "x" });
    expect(await repo.recordRun(env.DB, failing.id, 0, "run-fast-fail", 300)).toBeNull();
    expect(await readJob(failing.id)).toMatchObject({ status: "pending", retry_count: 1 });
  });

  it("answers 401 bad_signature to forged calls and 400 to bodies that are not RunPod's, changing nothing", async () => {
    const job = await processingJob({ runId: "run-f" });
    const body = { id: "run-f", status: "COMPLETED" };
    const otherJobSig = await signAttempt(env.WEBHOOK_SECRET as string, crypto.randomUUID(), 0);
    const wrongSecretSig = await signAttempt("not-the-secret", job.id, 0);
    for (const query of [
      "",
      "?attempt=0",
      `?attempt=0&sig=${"0".repeat(64)}`,
      `?attempt=0&sig=${otherJobSig}`,
      `?attempt=0&sig=${wrongSecretSig}`,
      `?attempt=1&sig=${(await callbackPath("webhook", job.id, 0)).split("sig=")[1]}`,
      "?attempt=-1&sig=zz",
    ]) {
      const res = await postJson(`/runpod/webhook/${job.id}${query}`, body, { token: null });
      expect(res.status, query).toBe(401);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("bad_signature");
    }
    for (const bad of [{ status: "COMPLETED" }, { id: "run-f", status: "DONE" }, "{"]) {
      const res = await postJson(await callbackPath("webhook", job.id, 0), bad, { token: null });
      expect(res.status).toBe(400);
    }
    const row = await readJob(job.id);
    expect(row).toMatchObject({ status: "processing", runpod_job_id: "run-f", retry_count: 0 });
  });
});

describe("POST /runpod/progress/{id}", () => {
  async function progress(jobId: string, attempt: number, value: unknown) {
    return postJson(
      await callbackPath("progress", jobId, attempt),
      { progress: value },
      { token: null },
    );
  }

  it("raises progress of the current attempt, never backwards, never after completion", async () => {
    const job = await processingJob({ runId: "run-p" });
    const res = await progress(job.id, 0, 40);
    expect(res.status).toBe(204);
    expect((await readJob(job.id))?.progress).toBe(40);
    await progress(job.id, 0, 25.5);
    expect((await readJob(job.id))?.progress).toBe(40);
    await progress(job.id, 0, 62.9);
    expect((await readJob(job.id))?.progress).toBe(62);
    expect((await progress(job.id, 1, 90)).status).toBe(204); // a signed but not current attempt
    expect((await readJob(job.id))?.progress).toBe(62);

    await postJson(
      await callbackPath("webhook", job.id, 0),
      { id: "run-p", status: "COMPLETED" },
      { token: null },
    );
    expect((await progress(job.id, 0, 70)).status).toBe(204);
    expect(await readJob(job.id)).toMatchObject({ status: "complete", progress: 100 });
  });

  it("ignores progress for an older attempt and rejects bad figures", async () => {
    const job = await processingJob({ retryCount: 1, runId: "run-q" });
    expect((await progress(job.id, 0, 50)).status).toBe(204);
    expect((await readJob(job.id))?.progress).toBe(0);
    for (const bad of [101, -1, "50", null]) {
      expect((await progress(job.id, 1, bad)).status).toBe(400);
    }
    expect((await readJob(job.id))?.progress).toBe(0);
  });
});
