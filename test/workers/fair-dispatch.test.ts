// Fair dispatch behind a small GPU fleet: the dispatcher (one Durable Object per RunPod endpoint)
// admits at most RUNPOD_MAX_IN_FLIGHT runs, gives each freed slot to the fairness key that has had
// the least, and every way a run ends frees exactly one slot. Through the real binding, the real
// consumer and the real state machine.
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { consumerDeps } from "../../consumer/process-jobs.ts";
import { reconcile } from "../../consumer/reconciler.ts";
import { FairQueue } from "../../shared/fair-queue.ts";
import { applyRunStatus, cancelJob } from "../../shared/job-state.ts";
import type { DispatchConfig } from "../../shared/settings.ts";
import type * as jobs from "../../shared/sql/jobs/row.ts";
import {
  configureEndpoint,
  deliver,
  dispatchConfig,
  freshProjectId,
  insertPendingJob,
  readJob,
  uniqueEndpoint,
} from "./helpers.ts";

const config = (maxInFlight: number): DispatchConfig =>
  dispatchConfig({ runsPer10s: 10_000, breakerThreshold: 1000, maxInFlight });

function dispatcherFor(endpoint: string) {
  return env.DISPATCHER.get(env.DISPATCHER.idFromName(endpoint));
}

let n = 0;
/** Offered jobs of one fairness key, oldest first. */
const jobsOf = (key: string, count: number) =>
  Array.from({ length: count }, () => {
    n += 1;
    return {
      id: `${key}-${n}`,
      key,
      createdAt: `2026-12-01 00:00:00.${String(n).padStart(6, "0")}`,
    };
  });

describe("the dispatcher's fair queue", () => {
  it("splits the slots evenly between two keys while both wait, oldest first within each", async () => {
    const d = dispatcherFor(uniqueEndpoint("shares"));
    const a = jobsOf("user:a", 30);
    const b = jobsOf("user:b", 30);
    const first = await d.dispatch([...a, ...b], config(4));
    // Four slots: two each, the oldest of each key.
    expect(first.admitted.map((x) => x.id).sort()).toEqual(
      [a[0]?.id, a[1]?.id, b[0]?.id, b[1]?.id].sort(),
    );
    // Each finished run frees one slot; record who gets it.
    const running = first.admitted.map((x) => x.id);
    const starts: string[] = [];
    for (let i = 0; i < 40; i++) {
      const done = running.shift() as string;
      await d.free([done]);
      const now = await d.inFlight();
      const started = now.filter((id) => !running.includes(id));
      expect(started).toHaveLength(1);
      running.push(...started);
      starts.push(...started);
    }
    const ofA = starts.filter((id) => id.startsWith("user:a")).length;
    expect(Math.abs(ofA - (starts.length - ofA))).toBeLessThanOrEqual(1);
    const aStarts = starts.filter((id) => id.startsWith("user:a"));
    expect(aStarts).toEqual(a.slice(2, 2 + aStarts.length).map((job) => job.id));
    expect((await d.status()).in_flight).toBe(4);
  });

  it("a key arriving behind another's backlog is served at the next free slot", async () => {
    const d = dispatcherFor(uniqueEndpoint("late"));
    const backlog = jobsOf("user:big", 120);
    const busy = await d.dispatch(backlog, config(3));
    expect(busy.admitted).toHaveLength(3);
    const single = jobsOf("project:7", 1);
    const waiting = await d.dispatch(single, config(3));
    expect(waiting.admitted).toEqual([]); // every slot is taken
    await d.free([busy.admitted[0]?.id as string]);
    expect(await d.inFlight()).toContain(single[0]?.id);
    expect((await d.status()).waiting).toBe(117);
  });

  it("an idle key banks no credit: returning, it shares evenly instead of taking every slot", async () => {
    const d = dispatcherFor(uniqueEndpoint("idle"));
    const a = jobsOf("user:a", 60);
    let running = (await d.dispatch(a, config(2))).admitted.map((x) => x.id);
    // user:a alone gets 30 runs while user:b is idle.
    for (let i = 0; i < 30; i++) {
      await d.free([running.shift() as string]);
      running = await d.inFlight();
    }
    await d.dispatch(jobsOf("user:b", 30), config(2));
    const starts: string[] = [];
    for (let i = 0; i < 10; i++) {
      const before = await d.inFlight();
      await d.free([before[0] as string]);
      starts.push(...(await d.inFlight()).filter((id) => !before.includes(id)));
    }
    const ofB = starts.filter((id) => id.startsWith("user:b")).length;
    expect(ofB).toBeGreaterThanOrEqual(4);
    expect(ofB).toBeLessThanOrEqual(6);
  });

  it("admits no job twice and frees a slot once, whatever is offered or freed again", async () => {
    const d = dispatcherFor(uniqueEndpoint("once"));
    const offered = jobsOf("user:x", 5);
    const first = await d.dispatch(offered, config(2));
    const again = await d.dispatch(offered, config(2));
    // Offered again while admitted: handed back to be claimed, but no new slot is used.
    expect(again.admitted.map((x) => x.id).sort()).toEqual(first.admitted.map((x) => x.id).sort());
    expect((await d.status()).in_flight).toBe(2);
    const done = first.admitted[0]?.id as string;
    await d.free([done]);
    await d.free([done]);
    expect((await d.status()).in_flight).toBe(2); // one freed, one admitted in its place
    expect((await d.status()).waiting).toBe(2);
  });
});

describe("the fair queue's cost and the heal race", () => {
  /** A FairQueue over a fresh dispatcher object's own SQLite storage. */
  function withQueue<T>(name: string, use: (queue: FairQueue) => T): Promise<T> {
    return runInDurableObject(dispatcherFor(uniqueEndpoint(name)), (_instance, state) =>
      use(new FairQueue(state.storage.sql)),
    );
  }

  /** Rows read and written by admitting and freeing one job, with `backlog` jobs waiting. */
  function admissionCost(queue: FairQueue, backlog: number) {
    const keys = 50;
    for (let i = 0; i < backlog; i += 1000) {
      queue.offer(
        Array.from({ length: Math.min(1000, backlog - i) }, (_, j) => ({
          id: `job-${i + j}`,
          key: `user:${(i + j) % keys}`,
          createdAt: `2026-12-01 00:00:${String((i + j) % 60).padStart(2, "0")}`,
        })),
      );
    }
    const [first] = queue.admit(1, 0);
    const before = queue.cost();
    // One admission as the dispatcher makes it: count, admit, free.
    queue.freeSlots(1_000);
    queue.counts();
    const [next] = queue.admit(1, 0);
    queue.free([first as string]);
    const after = queue.cost();
    expect(next).toBeDefined();
    expect(queue.counts()).toEqual({
      in_flight: 1,
      waiting: backlog - 2,
      waiting_keys: keys,
    });
    return {
      read: after.rowsRead - before.rowsRead,
      written: after.rowsWritten - before.rowsWritten,
    };
  }

  it("an admission reads and writes as many rows with 20,000 jobs waiting as with 100", async () => {
    const small = await withQueue("cost-small", (queue) => admissionCost(queue, 100));
    const big = await withQueue("cost-big", (queue) => admissionCost(queue, 20_000));
    expect(big).toEqual(small);
    expect(small.read).toBeLessThan(20);
  });

  it("counts stay exact through offers, admissions, frees of waiting jobs and heals", async () => {
    await withQueue("counts", (queue) => {
      const a = jobsOf("user:a", 3);
      const b = jobsOf("user:b", 2);
      queue.offer([...a, ...b, ...a]); // offered twice: counted once
      expect(queue.counts()).toEqual({ in_flight: 0, waiting: 5, waiting_keys: 2 });
      const admitted = queue.admit(3, 0); // a, b, a: the last of each key waits
      expect(queue.counts()).toEqual({ in_flight: 3, waiting: 2, waiting_keys: 2 });
      queue.free([...admitted.slice(0, 1), a[2]?.id as string, "unknown"]);
      expect(queue.counts()).toEqual({ in_flight: 2, waiting: 1, waiting_keys: 1 });
      queue.heal(new Set(), 1_000_000, 0);
      expect(queue.counts()).toEqual({ in_flight: 0, waiting: 1, waiting_keys: 1 });
      queue.admit(5, 0);
      expect(queue.counts()).toEqual({ in_flight: 1, waiting: 0, waiting_keys: 0 });
    });
  });

  it("a job handed back to be claimed keeps its slot against a heal that read D1 before the claim", async () => {
    await withQueue("heal-race", (queue) => {
      queue.offer(jobsOf("user:slow", 1));
      const admittedAt = 1_000_000;
      const [id] = queue.admit(1, admittedAt);
      // Its message comes back two minutes later (the dispatcher sent it while the queue was
      // slow): the consumer is about to claim it, and D1 does not have it processing yet.
      const handedBackAt = admittedAt + 120_000;
      expect(queue.handBack(id as string, handedBackAt)).toBe(true);
      // The reconciler read D1 just before the claim, and heals right after it.
      expect(queue.heal(new Set(), handedBackAt + 1_000, 60_000)).toEqual([]);
      expect(queue.counts().in_flight).toBe(1);
      // A slot that nobody comes back for is still healed once its grace has passed.
      expect(queue.heal(new Set(), handedBackAt + 61_000, 60_000)).toEqual([id]);
    });
  });
});

// ---- through the consumer and the state machine ----

function envFor(endpoint: string, extra: Record<string, string> = {}): typeof env {
  return {
    ...env,
    RUNPOD_ENDPOINT_ID: endpoint,
    RUNPOD_MAX_IN_FLIGHT: "3",
    RETRY_BASE_DELAY_S: "0",
    ...extra,
  };
}

async function processingCount(projectId: number): Promise<number> {
  const row = await env.DB.prepare(
    "SELECT COUNT(*) AS n FROM export_jobs WHERE project_id = ? AND status = 'processing'",
  )
    .bind(projectId)
    .first<{ n: number }>();
  return row?.n ?? 0;
}

describe("fair dispatch through the consumer", () => {
  it("never exceeds RUNPOD_MAX_IN_FLIGHT under duplicate deliveries and concurrent batches", async () => {
    const endpoint = uniqueEndpoint("cap");
    await configureEndpoint(endpoint, { runMs: 600_000 });
    const projectId = freshProjectId();
    const created = await Promise.all(
      Array.from({ length: 12 }, () => insertPendingJob(projectId)),
    );
    const ids = created.map((job) => job.id);
    const testEnv = envFor(endpoint);
    const results = await Promise.all([
      deliver(ids.slice(0, 6), { env: testEnv }),
      deliver(ids.slice(6), { env: testEnv }),
      deliver(ids, { env: testEnv }),
      deliver([...ids].reverse(), { env: testEnv }),
    ]);
    // Every message is acknowledged: the jobs that must wait wait in the dispatcher, not the queue.
    for (const result of results) expect(result.retryMessages).toEqual([]);
    expect(await processingCount(projectId)).toBe(3);
    const status = await dispatcherFor(endpoint).status();
    expect(status).toMatchObject({ in_flight: 3, waiting: 9, waiting_keys: 1, max_in_flight: 3 });
    const rows = await Promise.all(ids.map((id) => readJob(id)));
    expect(
      rows.filter((row) => row?.status === "pending").every((row) => row?.retry_count === 0),
    ).toBe(true);
  });

  it("every way a run ends frees exactly one slot and admits the next waiting job", async () => {
    const endpoint = uniqueEndpoint("paths");
    await configureEndpoint(endpoint, { runMs: 600_000 });
    const projectId = freshProjectId();
    const testEnv = envFor(endpoint, { RUNPOD_MAX_IN_FLIGHT: "1" });
    const deps = consumerDeps(testEnv);
    const d = dispatcherFor(endpoint);
    const queueOf = await Promise.all(Array.from({ length: 8 }, () => insertPendingJob(projectId)));
    await deliver(
      queueOf.map((job) => job.id),
      { env: testEnv },
    );
    const running = async () => {
      const slots = await d.inFlight();
      expect(slots).toHaveLength(1);
      return slots[0] as string;
    };
    /** Ends the running job one way and checks a different job took the one slot. */
    const endWith = async (how: (job: jobs.JobRow) => Promise<unknown>) => {
      const id = await running();
      // The dispatcher sent the admitted job to the queue; deliver it as Queues would.
      let job = (await readJob(id)) as jobs.JobRow;
      if (job.status === "pending") {
        await deliver([id], { env: testEnv });
        job = (await readJob(id)) as jobs.JobRow;
      }
      expect(job.status).toBe("processing");
      await how(job);
      const next = await running();
      expect(next).not.toBe(id);
      expect((await d.status()).in_flight).toBe(1);
    };
    const key = (job: jobs.JobRow) => `exports/${job.project_id}/${job.id}.mp4`;
    await endWith(async (job) => {
      await env.VIDEOS.put(key(job), "mp4");
      await applyRunStatus(deps, job, job.attempt, {
        id: job.runpod_job_id as string,
        status: "COMPLETED",
      });
    });
    await endWith((job) =>
      applyRunStatus(deps, job, job.attempt, { id: job.runpod_job_id as string, status: "FAILED" }),
    );
    await endWith((job) =>
      applyRunStatus(deps, job, job.attempt, {
        id: job.runpod_job_id as string,
        status: "TIMED_OUT",
      }),
    );
    await endWith((job) => cancelJob(deps, job.id));
    await endWith((job) =>
      applyRunStatus(deps, job, job.attempt, {
        id: job.runpod_job_id as string,
        status: "CANCELLED",
      }),
    );
    // Run lost: RunPod answers 404 for its id and there is no output.
    await endWith(async (job) => {
      await env.DB.prepare(
        "UPDATE export_jobs SET runpod_job_id = 'gone-run', due_at = datetime('now', '-1 seconds') WHERE id = ?",
      )
        .bind(job.id)
        .run();
      await reconcile(deps);
    });
  });

  it("a lost notification heals: the reconciler frees a slot D1 no longer has processing", async () => {
    const endpoint = uniqueEndpoint("heal");
    await configureEndpoint(endpoint, { runMs: 600_000 });
    const projectId = freshProjectId();
    const testEnv = envFor(endpoint, { RUNPOD_MAX_IN_FLIGHT: "1" });
    const [a, b] = await Promise.all([insertPendingJob(projectId), insertPendingJob(projectId)]);
    await deliver([a.id, b.id], { env: testEnv });
    const d = dispatcherFor(endpoint);
    const [holder] = await d.inFlight();
    // The job ends without telling the dispatcher (a crash between the two).
    await env.DB.prepare("UPDATE export_jobs SET status = 'error', error = 'x' WHERE id = ?")
      .bind(holder as string)
      .run();
    const report = await reconcile(consumerDeps(testEnv), { healGraceMs: 0 });
    expect(report.slotsHealed).toBe(1);
    const [next] = await d.inFlight();
    expect(next).toBe(holder === a.id ? b.id : a.id);
  });
});
