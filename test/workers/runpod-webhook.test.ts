import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { signAttempt } from "../../shared/signing.ts";
import * as repo from "../../shared/sql/jobs/transitions.ts";
import {
  callbackPath,
  plannedKey,
  postJson,
  processingJob,
  putOutput,
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
    expect(job.attempt).toBe(1);
    const reported = `exports/${job.project_id}/custom/out.mp4`;
    await putOutput(job, reported);
    const res = await webhook(job.id, 1, {
      id: "run-ok",
      status: "COMPLETED",
      output: { output_video_key: reported },
      delayTime: 12,
      executionTime: 3400,
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ applied: true, outcome: "completed" });
    const row = await readJob(job.id);
    expect(row).toMatchObject({
      status: "complete",
      progress: 100,
      output_video_key: reported,
      runpod_job_id: "run-ok",
      due_at: null,
      attempt: 1,
    });
    expect(row?.completed_at).not.toBeNull();
    expect(row?.version).toBe(job.version + 1);
  });

  it("keeps the planned output key when the reported one is missing, not a valid key or outside the job's project's exports", async () => {
    const outputs: ((projectId: number) => unknown)[] = [
      () => undefined,
      () => ({ output_video_key: "/etc/passwd" }),
      () => "done",
      (projectId) => ({ output_video_key: `exports/${projectId + 1}/x.mp4` }),
      (projectId) => ({ output_video_key: `exports/${projectId}0/x.mp4` }),
      () => ({ output_video_key: "uploads/x.mp4" }),
      (projectId) => ({ output_video_key: `uploads/${projectId}/x.mp4` }),
    ];
    for (const outputFor of outputs) {
      const job = await processingJob({ runId: "run-x" });
      await putOutput(job);
      const output = outputFor(job.project_id);
      const res = await webhook(job.id, 1, { id: "run-x", status: "COMPLETED", output });
      expect(await res.json(), JSON.stringify(output)).toEqual({
        applied: true,
        outcome: "completed",
      });
      const row = await readJob(job.id);
      expect(row?.status).toBe("complete");
      expect(row?.output_video_key, JSON.stringify(output)).toBe(
        `exports/${job.project_id}/${job.id}.mp4`,
      );
    }
  });

  it("FAILED and TIMED_OUT → the seed's CASE retry with RunPod's error, re-enqueued", async () => {
    for (const status of ["FAILED", "TIMED_OUT"]) {
      const job = await processingJob({ runId: "run-bad" });
      const res = await webhook(job.id, 1, { id: "run-bad", status, error: "CUDA out of memory" });
      expect(await res.json()).toEqual({ applied: true, outcome: "retrying" });
      const row = await readJob(job.id);
      // Re-pended: the run is forgotten, the attempt is kept (the next claim takes attempt 2).
      expect(row).toMatchObject({
        status: "pending",
        retry_count: 1,
        attempt: 1,
        runpod_job_id: null,
      });
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
    // The attempt counts claims, not failures: this job's current attempt is its first claim.
    expect(job).toMatchObject({ retry_count: 3, attempt: 1 });
    const res = await webhook(job.id, 1, { id: "run-last", status: "FAILED", error: "boom" });
    expect(await res.json()).toEqual({ applied: true, outcome: "failed" });
    expect(await readJob(job.id)).toMatchObject({
      status: "error",
      retry_count: 4,
      error: "RunPod FAILED: boom",
      runpod_job_id: "run-last",
      due_at: null,
    });
    // A re-pended sentinel's message, sent after it, arrives: the ended job's would have too.
    const sentinel = await processingJob({ runId: "run-sentinel" });
    await webhook(sentinel.id, 1, { id: "run-sentinel", status: "FAILED", error: "x" });
    await waitFor(
      async () => ((await sentMessagesFor(sentinel.id)).length > 0 ? true : undefined),
      "the sentinel's message",
    );
    expect(await sentMessagesFor(job.id)).toEqual([]);
  });

  it("CANCELLED → error 'cancelled'", async () => {
    const job = await processingJob({ runId: "run-c" });
    const res = await webhook(job.id, 1, { id: "run-c", status: "CANCELLED" });
    expect(await res.json()).toEqual({ applied: true, outcome: "cancelled" });
    expect(await readJob(job.id)).toMatchObject({ status: "error", error: "cancelled" });
  });

  it("COMPLETED without its output in R2 → the seed's CASE retry with `output missing: <key>`; the fourth ends error", async () => {
    const job = await processingJob({ runId: "run-empty" });
    const key = plannedKey(job);
    const res = await webhook(job.id, 1, { id: "run-empty", status: "COMPLETED", output: {} });
    expect(await res.json()).toEqual({ applied: true, outcome: "retrying" });
    const row = await readJob(job.id);
    expect(row).toMatchObject({
      status: "pending",
      retry_count: job.retry_count + 1,
      attempt: 1,
      runpod_job_id: null,
      output_video_key: null,
      completed_at: null,
      error: `output missing: ${key}`,
    });
    expect(row?.progress).not.toBe(100);
    // A reported key inside the project is the one that must exist (the planned one does here).
    const other = await processingJob({ runId: "run-empty-2" });
    await putOutput(other);
    const reported = `exports/${other.project_id}/custom/missing.mp4`;
    const otherRes = await webhook(other.id, 1, {
      id: "run-empty-2",
      status: "COMPLETED",
      output: { output_video_key: reported },
    });
    expect(await otherRes.json()).toEqual({ applied: true, outcome: "retrying" });
    expect(await readJob(other.id)).toMatchObject({
      status: "pending",
      retry_count: 1,
      error: `output missing: ${reported}`,
    });

    const last = await processingJob({ retryCount: 3, runId: "run-empty-last" });
    const lastRes = await webhook(last.id, 1, { id: "run-empty-last", status: "COMPLETED" });
    expect(await lastRes.json()).toEqual({ applied: true, outcome: "failed" });
    expect(await readJob(last.id)).toMatchObject({
      status: "error",
      retry_count: 4,
      error: `output missing: ${plannedKey(last)}`,
      runpod_job_id: "run-empty-last",
      output_video_key: null,
      due_at: null,
    });
  });

  it("ignores with 200: a repeat, an older attempt, another run's id, a finished job", async () => {
    const job = await processingJob({ runId: "run-1" });
    // The output is in R2 throughout: stale news is ignored for being stale, not for lack of it.
    await putOutput(job);
    const failed = { id: "run-1", status: "FAILED", error: "first" };
    expect(await (await webhook(job.id, 1, failed)).json()).toMatchObject({ applied: true });
    const afterFirst = await readJob(job.id);
    expect(afterFirst).toMatchObject({ status: "pending", retry_count: 1, attempt: 1 });
    const repeat = await webhook(job.id, 1, failed);
    expect(repeat.status).toBe(200);
    expect(await repeat.json()).toEqual({ applied: false, outcome: "unchanged" });
    expect(await readJob(job.id)).toEqual(afterFirst);

    // Attempt 2 is claimed and running; news about attempt 1 is stale, even of its own run.
    const [claimed] = await repo.claimJobs(env.DB, [job.id], 120);
    expect(claimed?.attempt).toBe(2);
    await repo.recordRun(env.DB, job.id, 2, "run-2", 300);
    const before = await readJob(job.id);
    for (const stale of [
      { id: "run-1", status: "COMPLETED" },
      { id: "run-2", status: "COMPLETED" },
      { id: "run-2", status: "FAILED", error: "stale" },
      { id: "run-2", status: "IN_PROGRESS", output: { progress: 50 } },
    ]) {
      const res = await webhook(job.id, 1, stale);
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ applied: false, outcome: "unchanged" });
    }
    expect(await readJob(job.id)).toEqual(before);

    // The right attempt but not the recorded run.
    const other = await webhook(job.id, 2, { id: "run-someone-else", status: "COMPLETED" });
    expect(await other.json()).toEqual({ applied: false, outcome: "unchanged" });
    expect(await readJob(job.id)).toEqual(before);

    // Finished jobs never change again.
    await webhook(job.id, 2, { id: "run-2", status: "COMPLETED" });
    const done = await readJob(job.id);
    expect(done).toMatchObject({ status: "complete", attempt: 2, runpod_job_id: "run-2" });
    for (const late of ["FAILED", "CANCELLED", "COMPLETED"]) {
      const res = await webhook(job.id, 2, { id: "run-2", status: late, error: "late" });
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ applied: false, outcome: "unchanged" });
    }
    expect(await readJob(job.id)).toEqual(done);
  });

  it("answers 200 unknown_job for a signed webhook of a job that does not exist", async () => {
    const id = crypto.randomUUID();
    const res = await postJson(
      await callbackPath("webhook", id, 1),
      { id: "run-nobody", status: "COMPLETED" },
      { token: null },
    );
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ applied: false, outcome: "unknown_job" });
    expect(await readJob(id)).toBeNull();
  });

  it("applies a webhook that arrives before the run was recorded; the late record does not undo it", async () => {
    const job = await processingJob({ runId: null });
    await putOutput(job);
    await webhook(job.id, 1, { id: "run-fast", status: "COMPLETED", output: {} });
    const done = await readJob(job.id);
    expect(done).toMatchObject({
      status: "complete",
      runpod_job_id: "run-fast",
      progress: 100,
      attempt: 1,
    });
    expect(await repo.recordRun(env.DB, job.id, 1, "run-fast", 300)).toBeNull();
    expect(await readJob(job.id)).toEqual(done);

    const failing = await processingJob({ runId: null });
    await webhook(failing.id, 1, { id: "run-fast-fail", status: "FAILED", error: "x" });
    expect(await repo.recordRun(env.DB, failing.id, 1, "run-fast-fail", 300)).toBeNull();
    expect(await readJob(failing.id)).toMatchObject({
      status: "pending",
      retry_count: 1,
      runpod_job_id: null,
    });

    // A run's webhook before recordRun, for an attempt that is not the current one: nothing.
    const early = await processingJob({ runId: null });
    await putOutput(early);
    const stale = await webhook(early.id, 2, { id: "run-future", status: "COMPLETED" });
    expect(await stale.json()).toEqual({ applied: false, outcome: "unchanged" });
    expect(await readJob(early.id)).toEqual(early);
  });

  it("answers 401 bad_signature to forged calls and 400 to bodies that are not RunPod's, changing nothing", async () => {
    const job = await processingJob({ runId: "run-f" });
    const body = { id: "run-f", status: "COMPLETED" };
    const secret = env.WEBHOOK_SECRET as string;
    const otherJobSig = await signAttempt(secret, "webhook", crypto.randomUUID(), 1);
    const wrongSecretSig = await signAttempt("not-the-secret", "webhook", job.id, 1);
    const sigOf = async (kind: "webhook" | "progress", attempt: number) =>
      (await callbackPath(kind, job.id, attempt)).split("sig=")[1];
    for (const query of [
      "",
      "?attempt=1",
      `?attempt=1&sig=${"0".repeat(64)}`,
      `?attempt=1&sig=${otherJobSig}`,
      `?attempt=1&sig=${wrongSecretSig}`,
      `?attempt=2&sig=${await sigOf("webhook", 1)}`,
      // The progress URL's signature (the GPU handler sees it) never signs a webhook.
      `?attempt=1&sig=${await sigOf("progress", 1)}`,
      `?attempt=1&sig=${(await sigOf("webhook", 1))?.toUpperCase()}`,
      "?attempt=-1&sig=zz",
    ]) {
      const res = await postJson(`/runpod/webhook/${job.id}${query}`, body, { token: null });
      expect(res.status, query).toBe(401);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("bad_signature");
    }
    for (const bad of [{ status: "COMPLETED" }, { id: "run-f", status: "DONE" }, "{"]) {
      const res = await postJson(await callbackPath("webhook", job.id, 1), bad, { token: null });
      expect(res.status).toBe(400);
    }
    const row = await readJob(job.id);
    expect(row).toMatchObject({ status: "processing", runpod_job_id: "run-f", retry_count: 0 });
    expect(row).toEqual(job);
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
    await putOutput(job);
    const res = await progress(job.id, 1, 40);
    expect(res.status).toBe(204);
    const raised = await readJob(job.id);
    expect(raised?.progress).toBe(40);
    expect(raised?.version).toBe(job.version + 1);
    await progress(job.id, 1, 25.5);
    expect((await readJob(job.id))?.progress).toBe(40);
    await progress(job.id, 1, 62.9);
    expect((await readJob(job.id))?.progress).toBe(62);
    // A signed report of an attempt that is not the current one: 409, the run is told to stop.
    const stale = await progress(job.id, 2, 90);
    expect(stale.status).toBe(409);
    expect(((await stale.json()) as { error: { code: string } }).error.code).toBe("stale_attempt");
    expect((await readJob(job.id))?.progress).toBe(62);

    await postJson(
      await callbackPath("webhook", job.id, 1),
      { id: "run-p", status: "COMPLETED" },
      { token: null },
    );
    // The current attempt of a finished job: 204, nothing changes.
    expect((await progress(job.id, 1, 70)).status).toBe(204);
    expect(await readJob(job.id)).toMatchObject({ status: "complete", progress: 100 });
  });

  it("answers 409 stale_attempt to progress of an older attempt, changing nothing, and rejects bad figures", async () => {
    const job = await processingJob({ runId: "run-q" });
    // Attempt 1 fails and is re-pended; attempt 2 is claimed and running.
    await postJson(
      await callbackPath("webhook", job.id, 1),
      { id: "run-q", status: "FAILED", error: "x" },
      { token: null, vars: { RETRY_BASE_DELAY_S: "0" } },
    );
    await repo.claimJobs(env.DB, [job.id], 120);
    await repo.recordRun(env.DB, job.id, 2, "run-q2", 300);
    const current = await readJob(job.id);
    expect(current).toMatchObject({ status: "processing", attempt: 2, retry_count: 1 });

    expect((await progress(job.id, 1, 50)).status).toBe(409);
    expect(await readJob(job.id)).toEqual(current);
    for (const bad of [101, -1, "50", null]) {
      expect((await progress(job.id, 2, bad)).status).toBe(400);
    }
    expect(await readJob(job.id)).toEqual(current);
    expect((await progress(job.id, 2, 50)).status).toBe(204);
    expect((await readJob(job.id))?.progress).toBe(50);
  });

  it("answers 401 to a progress report signed as a webhook, or for another attempt", async () => {
    const job = await processingJob({ runId: "run-s" });
    const webhookSig = (await callbackPath("webhook", job.id, 1)).split("sig=")[1];
    const progressSig = (await callbackPath("progress", job.id, 1)).split("sig=")[1];
    for (const query of [
      `?attempt=1&sig=${webhookSig}`,
      `?attempt=2&sig=${progressSig}`,
      "?attempt=1",
    ]) {
      const res = await postJson(
        `/runpod/progress/${job.id}${query}`,
        { progress: 50 },
        {
          token: null,
        },
      );
      expect(res.status, query).toBe(401);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("bad_signature");
    }
    expect(await readJob(job.id)).toEqual(job);
  });
});
