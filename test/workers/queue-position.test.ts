// Queue position and ETA in the API: a pending job answers `queue` (its place in the dispatcher's
// fair order, given today's backlog, and when it should start), a running or finished one null;
// `queue` is not part of the row and never raises `version`. Through the real consumer, the
// dispatcher's Durable Object and the producer.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { Job } from "../../shared/sql/jobs/row.ts";
import {
  configureEndpoint,
  deliver,
  freshProjectId,
  insertPendingJob,
  producerFetch,
  uniqueEndpoint,
} from "./helpers.ts";

describe("queue position and ETA", () => {
  it("a pending job answers where it stands in the fair order; a running one answers null; nothing raises its version", async () => {
    const endpoint = uniqueEndpoint("position");
    await configureEndpoint(endpoint, { maxWorkers: 1, queueMs: 0, runMs: 600_000 });
    const vars = { RUNPOD_ENDPOINT_ID: endpoint, RUNPOD_MAX_IN_FLIGHT: "1" };
    const big = freshProjectId();
    const small = big + 1; // "project:<small>" sorts after "project:<big>": big's job goes first
    const bigJobs = [];
    for (let i = 0; i < 4; i++) bigJobs.push(await insertPendingJob(big));
    const smallJob = await insertPendingJob(small);
    await deliver(
      [...bigJobs, smallJob].map((job) => job.id),
      { env: { ...env, ...vars } },
    );

    const get = async (id: string) => {
      const res = await producerFetch(`/exports/${id}`, { vars });
      expect(res.status).toBe(200);
      return ((await res.json()) as { job: Job }).job;
    };
    const answers = await Promise.all(bigJobs.map((job) => get(job.id)));
    // The big project's oldest job runs (its key sorts first; oldest first within it).
    const running = answers.find((job) => job.status === "processing") as Job;
    expect(running.queue).toBeNull();
    expect(answers.filter((job) => job.status === "processing")).toHaveLength(1);

    // The small project's one job is next (its key has had nothing); the big project's others
    // follow, one a slot: positions 1, 2, 3, oldest first.
    const oldestFirst = (a: Job, b: Job) =>
      a.created_at === b.created_at ? (a.id < b.id ? -1 : 1) : a.created_at < b.created_at ? -1 : 1;
    const waiting = answers.filter((job) => job.status === "pending").sort(oldestFirst);
    const next = await get(smallJob.id);
    expect(next.queue).toMatchObject({ position: 0, lane: "standard" });
    expect(waiting.map((job) => job.queue?.position)).toEqual([1, 2, 3]);
    // One worker: each start waits for a run (30 s before any is learned).
    const etas = [next, ...waiting].map((job) => job.queue?.eta_s ?? -1);
    expect(etas.every((eta, i) => i === 0 || eta > (etas[i - 1] ?? 0))).toBe(true);
    expect(Date.parse(next.queue?.at ?? "")).toBeGreaterThan(Date.now() - 60_000);

    // The listing answers the same estimates; asking changed no job.
    const res = await producerFetch(`/exports?project_id=${big}&project_id=${small}`, { vars });
    const listed = ((await res.json()) as { jobs: Job[] }).jobs;
    const byId = new Map(listed.map((job) => [job.id, job]));
    for (const job of [running, next, ...waiting]) {
      expect(byId.get(job.id)?.queue ?? null).toEqual(job.queue ?? null);
      expect(byId.get(job.id)?.version).toBe(job.version);
    }
    expect((await get(smallJob.id)).version).toBe(next.version);
  });

  it("an estimate the dispatcher cannot give leaves `queue` null and the job answered", async () => {
    const job = await insertPendingJob();
    // A dispatcher that is not the job's (no such endpoint): it does not hold the job, so the
    // job is placed last of its key: position 0 in an empty queue.
    const res = await producerFetch(`/exports/${job.id}`, {
      vars: { RUNPOD_ENDPOINT_ID: uniqueEndpoint("empty") },
    });
    expect(res.status).toBe(200);
    const answered = ((await res.json()) as { job: Job }).job;
    expect(answered.queue).toMatchObject({ position: 0 });
  });
});
