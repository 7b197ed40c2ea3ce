// Attempts never repeat, every change raises `version`, status counts stay equal to a full count,
// replay and operator retry never revive a cancelled job, and nothing undoes a replay.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { JobRow } from "../../shared/sql/jobs/row.ts";
import * as jobs from "../../shared/sql/jobs/transitions.ts";
import {
  ADMIN_TOKEN,
  callbackPath,
  deliver,
  insertPendingJob,
  postJson,
  processingJob,
  producerFetch,
  putOutput,
  readJob,
} from "./helpers.ts";

const admin = (path: string, body: unknown) => postJson(path, body, { token: ADMIN_TOKEN });

async function webhook(jobId: string, attempt: number, body: unknown): Promise<Response> {
  return postJson(await callbackPath("webhook", jobId, attempt), body);
}

/** A job whose run failed for the fourth time: `error`, retry_count 4. */
async function failedJob(): Promise<JobRow> {
  const job = await processingJob({ retryCount: 3, runId: "run-old" });
  const res = await webhook(job.id, job.attempt, { id: "run-old", status: "FAILED", error: "x" });
  expect(await res.json()).toMatchObject({ outcome: "failed" });
  const row = await readJob(job.id);
  expect(row).toMatchObject({ status: "error", retry_count: 4 });
  return row as JobRow;
}

async function fullCounts(): Promise<Record<string, number>> {
  const { results } = await env.DB.prepare(
    "SELECT status, COUNT(*) AS n FROM export_jobs GROUP BY status",
  ).all<{ status: string; n: number }>();
  const counts: Record<string, number> = { pending: 0, processing: 0, complete: 0, error: 0 };
  for (const row of results) counts[row.status] = row.n;
  return counts;
}

describe("attempts", () => {
  it("a late webhook of the run from before an operator retry cannot complete the new attempt", async () => {
    const job = await failedJob();
    // The output is in R2: the late webhook is refused for its attempt, not for a missing file.
    await putOutput(job);
    const retried = await admin("/admin/jobs/retry", { job_ids: [job.id] });
    expect(retried.status).toBe(202);
    expect(await retried.json()).toEqual({ retried: 1, job_ids: [job.id] });
    expect(await readJob(job.id)).toMatchObject({ status: "pending", retry_count: 0 });

    // The new attempt is claimed; before its run is recorded, the old run's webhook arrives late.
    const [claimed] = await jobs.claimJobs(env.DB, [job.id], 120);
    expect(claimed?.attempt).toBe(job.attempt + 1);
    const late = await webhook(job.id, job.attempt, {
      id: "run-old",
      status: "COMPLETED",
      output: { output_video_key: `exports/${job.project_id}/${job.id}.mp4` },
    });
    expect(late.status).toBe(200);
    expect(await late.json()).toMatchObject({ applied: false, outcome: "unchanged" });
    expect(await readJob(job.id)).toMatchObject({ status: "processing", runpod_job_id: null });

    // The new attempt's own run is recorded and completes.
    expect(await jobs.recordRun(env.DB, job.id, job.attempt + 1, "run-new", 300)).not.toBeNull();
    const done = await webhook(job.id, job.attempt + 1, { id: "run-new", status: "COMPLETED" });
    expect(await done.json()).toMatchObject({ outcome: "completed" });
  });

  it("every change raises version, and GET /exports/{id} returns it with the attempt", async () => {
    const job = await insertPendingJob();
    expect(job.version).toBe(1);
    const [claimed] = await jobs.claimJobs(env.DB, [job.id], 120);
    const recorded = await jobs.recordRun(env.DB, job.id, 1, "run-v", 300);
    const progressed = await jobs.recordProgress(env.DB, job.id, 1, 40, 300);
    expect([claimed?.version, recorded?.version, progressed?.version]).toEqual([2, 3, 4]);
    // A stale progress changes nothing, not even the version.
    expect(await jobs.recordProgress(env.DB, job.id, 0, 80, 300)).toBeNull();
    const res = await producerFetch(`/exports/${job.id}`);
    expect(await res.json()).toMatchObject({ job: { version: 4, attempt: 1, progress: 40 } });
  });
});

describe("replay and operator retry", () => {
  it("never revive a cancelled job", async () => {
    const job = await processingJob({ runId: "run-c" });
    const cancelled = await postJson(`/exports/${job.id}/cancel`, {});
    expect(cancelled.status).toBe(200);
    const letterId = `dl-${crypto.randomUUID()}`;
    await deliver([{ id: letterId, body: { job_id: job.id } }], {
      queue: "export-jobs-dlq",
      attempts: 11,
    });

    const replay = await postJson(`/dead-letters/${letterId}/replay`, {}, { token: ADMIN_TOKEN });
    expect(replay.status).toBe(409);
    expect(await replay.json()).toMatchObject({ error: { code: "job_cancelled" } });
    const retry = await admin("/admin/jobs/retry", { job_ids: [job.id] });
    expect(await retry.json()).toEqual({ retried: 0, job_ids: [] });
    expect(await readJob(job.id)).toMatchObject({ status: "error", error: "cancelled" });
  });

  it("a second dead letter of the same job does not undo a replay", async () => {
    const job = await insertPendingJob();
    const letter = (n: number) => ({
      id: `dl-${n}-${job.id}`,
      timestamp: new Date(),
      attempts: 11,
      body: { job_id: job.id },
    });
    await deliver([letter(1)], { queue: "export-jobs-dlq" });
    // A dead letter is no verdict on the job: it stays pending for the reconciler.
    expect(await readJob(job.id)).toMatchObject({ status: "pending" });
    const replay = await postJson(
      `/dead-letters/dl-1-${job.id}/replay`,
      {},
      { token: ADMIN_TOKEN },
    );
    expect(replay.status).toBe(202);
    await deliver([letter(2)], { queue: "export-jobs-dlq" });
    expect(await readJob(job.id)).toMatchObject({ status: "pending", error: null });
  });

  it("retries by filter: only error jobs with the prefix in the window, never cancelled ones", async () => {
    const failed = await failedJob();
    const other = await failedJob();
    await env.DB.prepare("UPDATE export_jobs SET error = 'something else' WHERE id = ?")
      .bind(other.id)
      .run();
    const res = await admin("/admin/jobs/retry", {
      error_prefix: "RunPod FAILED",
      created_after: failed.created_at,
      limit: 1000,
    });
    expect(res.status).toBe(202);
    const body = (await res.json()) as { retried: number; job_ids: string[] };
    expect(body.job_ids).toContain(failed.id);
    expect(body.job_ids).not.toContain(other.id);
    expect(await readJob(failed.id)).toMatchObject({ status: "pending", retry_count: 0 });
    expect(await readJob(other.id)).toMatchObject({ status: "error" });
  });

  it("refuses a retry request that selects nothing clearly, changing nothing", async () => {
    for (const body of [{}, { job_ids: [] }, { job_ids: ["not-a-uuid"] }, { limit: 5 }]) {
      const res = await admin("/admin/jobs/retry", body);
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({ error: { code: "invalid_request" } });
    }
    const unauthorized = await postJson("/admin/jobs/retry", { job_ids: [crypto.randomUUID()] });
    expect(unauthorized.status).toBe(401);
  });
});

describe("status counts", () => {
  it("job_counts, kept by triggers, equal a full count after inserts, transitions and deletes", async () => {
    const job = await processingJob({ runId: "run-count" });
    await webhook(job.id, job.attempt, { id: "run-count", status: "COMPLETED" });
    const doomed = await insertPendingJob();
    await postJson(`/exports/${doomed.id}/cancel`, {});
    await env.DB.prepare("DELETE FROM export_jobs WHERE id = ?").bind(doomed.id).run();
    const { results } = await env.DB.prepare("SELECT status, n FROM job_counts").all<{
      status: string;
      n: number;
    }>();
    expect(Object.fromEntries(results.map((row) => [row.status, row.n]))).toEqual(
      await fullCounts(),
    );
    const stats = await producerFetch("/stats", { token: ADMIN_TOKEN });
    expect(((await stats.json()) as { jobs: unknown }).jobs).toEqual(await fullCounts());
  });
});
