// Progress reports write D1 at most once per 25 points or per PROGRESS_WRITE_S (the first report of
// an attempt without a recorded run too: it adopts the run); the reports in between are published
// to live clients only, with the row's version, so a live view still moves with every report.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { PROGRESS_WRITE_S, recordProgress } from "../../shared/job-state.ts";
import type { LiveProgress, LivePublisher } from "../../shared/live-publisher.ts";
import { livePublisher } from "../../shared/live-publisher.ts";
import type { Job } from "../../shared/sql/jobs/row.ts";
import { callbackPath, postJson, processingJob, readJob } from "./helpers.ts";

async function report(jobId: string, attempt: number, progress: number) {
  const res = await postJson(
    await callbackPath("progress", jobId, attempt),
    { progress },
    { token: null },
  );
  expect(res.status).toBe(204);
}

/** Moves the job's last news `seconds` into the past (its poll time is news + POLL_AFTER_S). */
async function ageNews(jobId: string, seconds: number) {
  await env.DB.prepare(
    "UPDATE export_jobs SET due_at = strftime('%Y-%m-%d %H:%M:%f', due_at, ?) WHERE id = ?",
  )
    .bind(`-${seconds} seconds`, jobId)
    .run();
}

describe("progress writes", () => {
  it("a report every 5 points writes D1 only when it crosses 25 points", async () => {
    const job = await processingJob();
    for (let p = 5; p <= 95; p += 5) await report(job.id, job.attempt, p);
    const row = await readJob(job.id);
    // Three writes (25, 50, 75), not nineteen: the row moved three versions.
    expect(row?.version).toBe(job.version + 3);
    expect(row?.progress).toBe(75);
    const events = await env.DB.prepare(
      "SELECT COUNT(*) AS n FROM export_job_events WHERE job_id = ? AND type = 'progress'",
    )
      .bind(job.id)
      .first<{ n: number }>();
    expect(events?.n).toBe(3);
  });

  it(`writes a report PROGRESS_WRITE_S (${PROGRESS_WRITE_S} s) after the last write, also below the next 25`, async () => {
    const job = await processingJob();
    await report(job.id, job.attempt, 3);
    expect((await readJob(job.id))?.version).toBe(job.version);
    await ageNews(job.id, PROGRESS_WRITE_S);
    await report(job.id, job.attempt, 4);
    const row = await readJob(job.id);
    expect(row).toMatchObject({ progress: 4, version: job.version + 1 });
  });

  it("the first report of an attempt without a recorded run is written (it adopts the run)", async () => {
    const job = await processingJob({ runId: null });
    const res = await postJson(
      await callbackPath("progress", job.id, job.attempt),
      { progress: 2, runpod_job_id: "run-adopted-by-progress" },
      { token: null },
    );
    expect(res.status).toBe(204);
    expect(await readJob(job.id)).toMatchObject({
      progress: 2,
      runpod_job_id: "run-adopted-by-progress",
    });
  });

  it("publishes every report live: the written ones as the job, the others as progress at the row's version", async () => {
    const job = await processingJob();
    const jobs: Job[] = [];
    const progress: LiveProgress[] = [];
    const real = livePublisher(env);
    const live: LivePublisher = {
      publish: (published) => {
        jobs.push(...published);
        return real.publish(published);
      },
      progress: (update) => {
        progress.push(update);
        return real.progress(update);
      },
    };
    const deps = {
      db: env.DB,
      queue: env.EXPORT_QUEUE,
      retry: { baseDelayS: 30, maxDelayS: 900 },
      pollAfterS: 300,
      videos: env.VIDEOS,
      live,
      slots: () => env.DISPATCHER.get(env.DISPATCHER.idFromName("progress-writes")),
    };
    for (const p of [10, 20, 30, 40]) await recordProgress(deps, job.id, job.attempt, p);
    expect(jobs.map((j) => [j.progress, j.version])).toEqual([[30, job.version + 1]]);
    expect(progress).toEqual([
      {
        job_id: job.id,
        project_id: job.project_id,
        attempt: job.attempt,
        version: job.version,
        progress: 10,
      },
      {
        job_id: job.id,
        project_id: job.project_id,
        attempt: job.attempt,
        version: job.version,
        progress: 20,
      },
      {
        job_id: job.id,
        project_id: job.project_id,
        attempt: job.attempt,
        version: job.version + 1,
        progress: 40,
      },
    ]);
    // A stale attempt's report is neither written nor published.
    await recordProgress(deps, job.id, job.attempt + 1, 90);
    await recordProgress(deps, job.id, job.attempt - 1, 90);
    expect(progress).toHaveLength(3);
  });
});
