// GPU seconds, counted: every run has a record; a job's gpu_ms and queue_ms add up its runs'
// executionTime and delayTime (failed runs included); news of a run that comes after its job moved
// on reaches the run's record and the day's usage, never the job; GET /usage answers from per-day
// aggregates, reading no more rows than it answers.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import * as repo from "../../shared/sql/jobs/transitions.ts";
import { readUsage, runsOfJob } from "../../shared/sql/runs.ts";
import {
  ADMIN_TOKEN,
  callbackPath,
  postJson,
  processingJob,
  producerFetch,
  putOutput,
  readJob,
} from "./helpers.ts";

async function webhook(jobId: string, attempt: number, body: Record<string, unknown>) {
  const res = await postJson(await callbackPath("webhook", jobId, attempt), body, {
    token: null,
    vars: { RETRY_BASE_DELAY_S: "0" },
  });
  expect(res.status).toBe(200);
  return (await res.json()) as { applied: boolean; outcome: string };
}

const today = () => new Date().toISOString().slice(0, 10);

/** A user id no other test uses. */
let userCounter = Math.floor(Math.random() * 1_000_000) * 1000 + 7;
const freshUser = () => {
  userCounter += 1;
  return userCounter;
};

/** A job of `userId`, inserted as the producer would, claimed, its run `runId` recorded. */
async function userJob(userId: number, runId: string) {
  const id = crypto.randomUUID();
  await env.DB.prepare(
    `INSERT INTO export_jobs (id, project_id, user_id, type, input_video_key, params, due_at)
     VALUES (?, ?, ?, 'overlay', 'uploads/in.mp4', '{}', datetime('now'))`,
  )
    .bind(id, userId, userId)
    .run();
  await repo.claimJobs(env.DB, [id], 120);
  const job = await repo.recordRun(env.DB, id, 1, runId, 300);
  if (!job) throw new Error("not recorded");
  return job;
}

describe("GPU seconds", () => {
  it("a job's gpu_ms and queue_ms add a failed run and the run that completed; each run has its record", async () => {
    const job = await processingJob({ runId: "run-gpu-a" });
    expect(
      await webhook(job.id, 1, {
        id: "run-gpu-a",
        status: "FAILED",
        error: "boom",
        executionTime: 1200,
        delayTime: 300,
      }),
    ).toMatchObject({ outcome: "retrying" });
    expect(await readJob(job.id)).toMatchObject({ status: "pending", gpu_ms: 1200, queue_ms: 300 });

    await repo.claimJobs(env.DB, [job.id], 120);
    await repo.recordRun(env.DB, job.id, 2, "run-gpu-b", 300);
    await putOutput(job);
    expect(
      await webhook(job.id, 2, {
        id: "run-gpu-b",
        status: "COMPLETED",
        executionTime: 3000,
        delayTime: 100,
      }),
    ).toMatchObject({ outcome: "completed" });
    const done = await readJob(job.id);
    expect(done).toMatchObject({ status: "complete", gpu_ms: 4200, queue_ms: 400 });

    const runs = await runsOfJob(env.DB, job.id);
    expect(
      runs.map((run) => [
        run.runpod_job_id,
        run.attempt,
        run.outcome,
        run.execution_ms,
        run.delay_ms,
      ]),
    ).toEqual([
      ["run-gpu-a", 1, "failed", 1200, 300],
      ["run-gpu-b", 2, "completed", 3000, 100],
    ]);
    // The answer carries them.
    const res = await producerFetch(`/exports/${job.id}`);
    expect(((await res.json()) as { job: { gpu_ms: number } }).job.gpu_ms).toBe(4200);
  });

  it("news of a run after its job was cancelled counts its GPU time once, without touching the job", async () => {
    const userId = freshUser();
    const job = await userJob(userId, `run-late-${crypto.randomUUID()}`);
    const cancel = await postJson(`/exports/${job.id}/cancel`, {});
    expect(cancel.status).toBe(200);
    const cancelled = await readJob(job.id);

    const late = { id: job.runpod_job_id, status: "CANCELLED", executionTime: 900, delayTime: 20 };
    expect(await webhook(job.id, 1, late)).toMatchObject({ applied: false });
    expect(await webhook(job.id, 1, late)).toMatchObject({ applied: false });
    expect(await readJob(job.id)).toEqual(cancelled);
    const [run] = await runsOfJob(env.DB, job.id);
    expect(run).toMatchObject({ execution_ms: 900, late_ms: 900 });
    const { rows } = await readUsage(env.DB, "user", today(), today());
    expect(rows.find((row) => row.key === userId)).toMatchObject({
      exports: 1,
      error: 1,
      gpu_ms: 900,
    });
  });

  it("GET /usage: per user, the day's exports, endings and GPU seconds equal the jobs' gpu_ms; reads no more rows than it answers", async () => {
    const [alice, bob] = [freshUser(), freshUser()];
    const jobs: { id: string; user: number; exec: number }[] = [];
    for (const [user, exec] of [
      [alice, 2000],
      [alice, 500],
      [bob, 7000],
    ] as const) {
      const runId = `run-usage-${crypto.randomUUID()}`;
      const job = await userJob(user, runId);
      await putOutput(job);
      await webhook(job.id, 1, { id: runId, status: "COMPLETED", executionTime: exec });
      jobs.push({ id: job.id, user, exec });
    }
    const res = await producerFetch(`/usage?group_by=user&from=${today()}&to=${today()}`, {
      token: ADMIN_TOKEN,
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as {
      rows: {
        key: number;
        exports: number;
        complete: number;
        gpu_seconds: number;
        est_cost_usd: number;
      }[];
      price_per_s: number;
    };
    for (const user of [alice, bob]) {
      const mine = jobs.filter((job) => job.user === user);
      let gpuMs = 0;
      for (const job of mine) gpuMs += (await readJob(job.id))?.gpu_ms ?? 0;
      expect(body.rows.find((row) => row.key === user)).toEqual({
        key: user,
        exports: mine.length,
        complete: mine.length,
        error: 0,
        gpu_seconds: gpuMs / 1000,
        est_cost_usd: Math.round((gpuMs / 1000) * body.price_per_s * 1e6) / 1e6,
      });
    }
    // Most GPU first.
    const order = body.rows.map((row) => row.gpu_seconds);
    expect(order).toEqual([...order].sort((a, b) => b - a));
    // One day: one aggregate row per key answered, and no more read.
    const { rows, rowsRead } = await readUsage(env.DB, "user", today(), today());
    expect(rowsRead).toBeLessThanOrEqual(rows.length);
  });

  it("GET /usage refuses a bad window and needs the admin token", async () => {
    for (const query of [
      "group_by=team",
      "group_by=user&from=2026-13-01",
      "group_by=user&from=2026-12-08&to=2026-12-01",
      "group_by=user&from=2024-01-01&to=2026-01-01",
    ]) {
      const res = await producerFetch(`/usage?${query}`, { token: ADMIN_TOKEN });
      expect({ query, status: res.status }).toEqual({ query, status: 400 });
    }
    expect((await producerFetch("/usage?group_by=user")).status).toBe(401);
  });
});
