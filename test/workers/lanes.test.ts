// Lanes: `priority` on POST /exports (interactive, standard, batch). When a slot frees, the lane is
// chosen by weighted round robin among the lanes with jobs waiting (PRIORITY_WEIGHTS, 8,4,1), and
// within the lane the least served key goes next; batch runs carry RunPod's `lowPriority` while the
// endpoint has workers up, and a batch backlog alone never grows an `auto` cap. Through the real
// dispatcher binding, the consumer, D1 and the RunPod emulator over HTTP.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { pickLane } from "../../shared/fair-queue.ts";
import type { Lane } from "../../shared/queue-estimate.ts";
import type { Job } from "../../shared/sql/jobs/row.ts";
import {
  autoscalingEndpoint,
  deliver,
  dispatchConfig,
  emulatorRequests,
  freshProjectId,
  overlayRequest,
  postJson,
  putInput,
  readJob,
  runCalls,
  uniqueEndpoint,
  waitFor,
} from "./helpers.ts";

const fixed = (maxInFlight: number) =>
  dispatchConfig({ runsPer10s: 10_000, breakerThreshold: 1000, maxInFlight });

function dispatcherFor(endpoint: string) {
  return env.DISPATCHER.get(env.DISPATCHER.idFromName(endpoint));
}

let n = 0;
/** Offered jobs of one key in one lane, oldest first. */
const jobsOf = (key: string, lane: Lane, count: number) =>
  Array.from({ length: count }, () => {
    n += 1;
    return {
      id: `${lane}-${key}-${n}`,
      key,
      lane,
      createdAt: `2026-12-01 00:00:00.${String(n).padStart(6, "0")}`,
    };
  });

/** Frees the oldest running job `times` times; the jobs that started, in order. */
async function turnOver(
  d: ReturnType<typeof dispatcherFor>,
  running: string[],
  times: number,
): Promise<string[]> {
  const starts: string[] = [];
  for (let i = 0; i < times; i++) {
    await d.free([running.shift() as string]);
    const started = (await d.inFlight()).filter((id) => !running.includes(id));
    running.push(...started);
    starts.push(...started);
  }
  return starts;
}

describe("lanes in the dispatcher", () => {
  it("one user's 100 batch exports, then an interactive one: it takes the next freed slot", async () => {
    const d = dispatcherFor(uniqueEndpoint("lanes-preview"));
    const batch = jobsOf("user:7", "batch", 100);
    const first = await d.dispatch(batch, fixed(4));
    expect(first.admitted).toHaveLength(4);
    const [preview] = jobsOf("user:7", "interactive", 1);
    const waiting = await d.dispatch([preview as (typeof batch)[number]], fixed(4));
    expect(waiting.admitted).toEqual([]);
    expect((await d.status()).waiting_by_lane).toEqual({ interactive: 1, standard: 0, batch: 96 });
    // Its queue position says so before it starts: next.
    const [estimate] = await d.estimate([
      { id: preview?.id as string, key: "user:7", type: "overlay", lane: "interactive" },
    ]);
    expect(estimate?.queue).toMatchObject({ position: 0, lane: "interactive" });
    // The batch lane's next job starts after the interactive one: its position counts it.
    const [head] = await d.estimate([
      { id: batch[4]?.id as string, key: "user:7", type: "overlay", lane: "batch" },
    ]);
    expect(head?.queue).toMatchObject({ position: 1, lane: "batch" });

    const starts = await turnOver(
      d,
      first.admitted.map((job) => job.id),
      1,
    );
    expect(starts).toEqual([preview?.id]);
  });

  it("with all three lanes backlogged, slots go 8:4:1 and every lane progresses", async () => {
    const d = dispatcherFor(uniqueEndpoint("lanes-wrr"));
    const offered = [
      ...jobsOf("user:a", "batch", 60),
      ...jobsOf("user:b", "standard", 60),
      ...jobsOf("user:c", "interactive", 60),
    ];
    const first = await d.dispatch(offered, fixed(1));
    const starts = await turnOver(
      d,
      first.admitted.map((job) => job.id),
      38,
    );
    const all = [...first.admitted.map((job) => job.id), ...starts];
    const count = (lane: Lane) => all.filter((id) => id.startsWith(`${lane}-`)).length;
    // 39 slots, three rounds of 13: exactly 24, 12 and 3.
    expect([count("interactive"), count("standard"), count("batch")]).toEqual([24, 12, 3]);
  });

  it("within a lane, the key served least in that lane goes first", async () => {
    const d = dispatcherFor(uniqueEndpoint("lanes-keys"));
    // user:a has had many standard runs; in the batch lane it is as new as user:b.
    const standard = jobsOf("user:a", "standard", 10);
    const warm = await d.dispatch(standard, fixed(10));
    await d.free(warm.admitted.map((job) => job.id));
    const a = jobsOf("user:a", "batch", 10);
    const b = jobsOf("user:b", "batch", 10);
    const first = await d.dispatch([...a, ...b], fixed(4));
    const ids = first.admitted.map((job) => job.id);
    expect(ids.filter((id) => id.includes("user:a"))).toHaveLength(2);
    expect(ids.filter((id) => id.includes("user:b"))).toHaveLength(2);
  });

  it("the weighted round robin is smooth: no lane waits more than its share", () => {
    const waiting = new Map<Lane, number>([
      ["interactive", 100],
      ["standard", 100],
      ["batch", 100],
    ]);
    let credits = new Map<Lane, number>();
    const order: Lane[] = [];
    for (let i = 0; i < 13; i++) {
      const pick = pickLane(waiting, credits, [8, 4, 1]);
      if (!pick) throw new Error("no lane");
      credits = pick.credits;
      order.push(pick.lane);
    }
    expect(order.filter((lane) => lane === "batch")).toHaveLength(1);
    // Interactive never runs more than two slots in a row while standard waits.
    const runs = order.join(",").split("standard");
    expect(Math.max(...runs.map((run) => run.split("interactive").length - 1))).toBeLessThanOrEqual(
      3,
    );
    // An empty lane is never picked.
    expect(pickLane(new Map([["batch", 0]]), new Map(), [8, 4, 1])).toBeNull();
  });
});

/** An autoscaling endpoint (0 to `max` workers, `min` always on); runs last a minute. */
const fleetEndpoint = (name: string, min: number, max: number) =>
  autoscalingEndpoint(name, { min, max, runMs: 60_000 });

async function postExport(
  endpoint: string,
  projectId: number,
  priority: string,
  n: number,
): Promise<Job> {
  const key = `uploads/${projectId}/in.mp4`;
  await putInput(key);
  const res = await postJson(
    "/exports",
    {
      ...overlayRequest(projectId, key),
      params: { highlight_regions: [{ start_time: n, end_time: n + 1 }] },
      priority,
    },
    { vars: { RUNPOD_ENDPOINT_ID: endpoint } },
  );
  expect(res.status).toBe(202);
  return ((await res.json()) as { job: Job }).job;
}

const consumerEnv = (endpoint: string, extra: Record<string, string> = {}) => ({
  ...env,
  RUNPOD_ENDPOINT_ID: endpoint,
  RUNPOD_MAX_IN_FLIGHT: "auto",
  FLEET_POLL_S: "0.2",
  ...extra,
});

/** The policy of the run RunPod received for a job. */
async function policyOf(endpoint: string, jobId: string) {
  const run = runCalls(await emulatorRequests(endpoint)).find(
    (r) => (r.body as { input?: { export_job_id?: string } }).input?.export_job_id === jobId,
  );
  return (run?.body as { policy?: Record<string, unknown> } | undefined)?.policy;
}

describe("lanes at RunPod", () => {
  it("batch runs carry lowPriority while the endpoint has workers up; to a fleet at zero, without it", async () => {
    const warm = await fleetEndpoint("lanes-warm", 2, 4);
    const projectId = freshProjectId();
    const first = await postExport(warm, projectId, "standard", 1);
    await deliver([first.id], { env: consumerEnv(warm) });
    // The dispatcher reads the fleet (its alarm): two workers up.
    await waitFor(
      async () =>
        ((await dispatcherFor(warm).status()).fleet?.ready ?? 0) +
          ((await dispatcherFor(warm).status()).fleet?.running ?? 0) >=
        2
          ? true
          : undefined,
      "the fleet read",
    );
    const batch = await postExport(warm, projectId, "batch", 2);
    await deliver([batch.id], { env: consumerEnv(warm) });
    expect(await readJob(batch.id)).toMatchObject({ status: "processing", priority: "batch" });
    expect(await policyOf(warm, batch.id)).toMatchObject({ lowPriority: true });
    expect((await policyOf(warm, first.id))?.lowPriority).toBeUndefined();

    const cold = await fleetEndpoint("lanes-cold", 0, 4);
    const only = await postExport(cold, freshProjectId(), "batch", 3);
    await deliver([only.id], { env: consumerEnv(cold) });
    expect(await readJob(only.id)).toMatchObject({ status: "processing" });
    // No worker up: sent without the flag, so RunPod starts one.
    expect((await policyOf(cold, only.id))?.lowPriority).toBeUndefined();
  });

  it("in auto, a backlog of batch jobs alone does not grow the cap; a standard one does", async () => {
    const endpoint = await fleetEndpoint("lanes-cap", 1, 8);
    const d = dispatcherFor(endpoint);
    const config = dispatchConfig({
      maxInFlight: "auto",
      maxWorkers: 8,
      fleetPollS: 0.2,
      runsPer10s: 10_000,
      breakerThreshold: 1000,
    });
    await d.dispatch(jobsOf("user:9", "batch", 30), config);
    const steady = await waitFor(async () => {
      const now = await d.status();
      return now.fleet !== null ? now : undefined;
    }, "the fleet read");
    expect(steady.cap_reason).not.toContain("growing");
    await d.dispatch(jobsOf("user:9", "standard", 30), config);
    const growing = await waitFor(async () => {
      const now = await d.status();
      return now.cap_reason.includes("growing") ? now : undefined;
    }, "growth for the standard backlog");
    expect(growing.waiting_by_lane.standard).toBeGreaterThan(0);
  });

  it("a fleet reading from before an idle spell says nothing: batch runs go without lowPriority", async () => {
    const endpoint = await fleetEndpoint("lanes-stale", 2, 4);
    const d = dispatcherFor(endpoint);
    const config = dispatchConfig({
      maxInFlight: 10,
      fleetPollS: 0.2,
      runsPer10s: 10_000,
      breakerThreshold: 1000,
    });
    const [first] = jobsOf("user:s", "standard", 1);
    await d.dispatch(first ? [first] : [], config);
    await waitFor(async () => ((await d.status()).fleet?.ready ?? 0) >= 1 || undefined, "a read");
    const fresh = await d.dispatch(jobsOf("user:s", "batch", 1), config);
    expect(fresh.warm).toBe(true);
    // Idle: nothing waits or runs, so the fleet is not read again; its last reading goes stale.
    await d.free([first?.id as string, ...fresh.admitted.map((job) => job.id)]);
    const readAt = (await d.status()).fleet?.at as string;
    await waitFor(
      async () => (Date.now() - Date.parse(readAt) > 3 * 200 + 100 ? true : undefined),
      "the reading to be three polls old",
    );
    const stale = await d.dispatch(jobsOf("user:s", "batch", 1), config);
    expect(stale.warm).toBe(false);
  });
});

describe("POST /exports priority", () => {
  it("an interactive export never follows an identical pending batch one (it would wait in the batch lane)", async () => {
    const endpoint = uniqueEndpoint("lanes-follow");
    const projectId = freshProjectId();
    const batch = await postExport(endpoint, projectId, "batch", 1);
    const preview = await postExport(endpoint, projectId, "interactive", 1);
    expect(preview.follows).toBeNull();
    // The other way round, a batch export follows a pending interactive one.
    const again = await postExport(endpoint, projectId, "batch", 1);
    expect([batch.id, preview.id]).toContain(again.follows);
  });

  it("is stored and returned (standard by default); a bad one is 400 with its path and writes nothing", async () => {
    const endpoint = uniqueEndpoint("lanes-api");
    const projectId = freshProjectId();
    const interactive = await postExport(endpoint, projectId, "interactive", 1);
    expect(interactive.priority).toBe("interactive");
    expect(interactive.queue?.lane).toBe("interactive");
    expect((await readJob(interactive.id))?.priority).toBe("interactive");

    const key = `uploads/${projectId}/in.mp4`;
    const plain = await postJson("/exports", overlayRequest(projectId, key), {
      vars: { RUNPOD_ENDPOINT_ID: endpoint },
    });
    expect(((await plain.json()) as { job: Job }).job.priority).toBe("standard");

    const bad = await postJson(
      "/exports",
      { ...overlayRequest(projectId, key), priority: "urgent" },
      { vars: { RUNPOD_ENDPOINT_ID: endpoint } },
    );
    expect(bad.status).toBe(400);
    const body = (await bad.json()) as { error: { code: string; issues: { path: unknown[] }[] } };
    expect(body.error.code).toBe("invalid_request");
    expect(body.error.issues.map((issue) => issue.path)).toContainEqual(["priority"]);
    const count = await env.DB.prepare("SELECT COUNT(*) AS n FROM export_jobs WHERE project_id = ?")
      .bind(projectId)
      .first<{ n: number }>();
    expect(count?.n).toBe(2);
  });
});
