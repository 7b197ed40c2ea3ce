// Endpoints: RUNPOD_ENDPOINTS routes each export type to its RunPod endpoints, one dispatcher per
// endpoint; a job records the endpoint of its attempt (status polls and cancels go there); while
// an endpoint is down its type's jobs go to the next one, and come back once it runs again.
// Through the real Workers, D1, Queues, Durable Objects and the emulator over HTTP (each endpoint
// its own fleet and outage switch).
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { consumerDeps } from "../../consumer/process-jobs.ts";
import { reconcile } from "../../consumer/reconciler.ts";
import { endpointRoutesVar } from "../../shared/settings.ts";
import type { Job, JobRow } from "../../shared/sql/jobs/row.ts";
import * as repo from "../../shared/sql/jobs/transitions.ts";
import {
  callbackPath,
  configureEndpoint,
  deliver,
  dispatchConfig,
  emulatorRequests,
  freshProjectId,
  postJson,
  producerFetch,
  putInput,
  putOutput,
  readJob,
  runCalls,
  sentMessagesFor,
  uniqueEndpoint,
  waitFor,
} from "./helpers.ts";

describe("RUNPOD_ENDPOINTS", () => {
  it("routes per type with a * default; empty means RUNPOD_ENDPOINT_ID alone", () => {
    expect(endpointRoutesVar('{"framing": ["f1", "f2"], "*": ["d1"]}', "x")).toEqual({
      framing: ["f1", "f2"],
      overlay: ["d1"],
      annotate: ["d1"],
    });
    expect(endpointRoutesVar("", "main")).toEqual({
      framing: ["main"],
      overlay: ["main"],
      annotate: ["main"],
    });
  });

  it("refuses a malformed value with a message naming it", () => {
    for (const bad of [
      "not json",
      "[]",
      '{"render": ["a"]}',
      '{"*": []}',
      '{"*": [""]}',
      '{"framing": ["a"]}',
      '{"*": ["a", "a"]}',
      '{"*": ["a/b"]}',
    ]) {
      expect(() => endpointRoutesVar(bad, "x"), bad).toThrow(/RUNPOD_ENDPOINTS/);
    }
  });
});

/** An endpoint whose runs last a minute. */
async function endpointWith(name: string, config: Record<string, unknown> = {}) {
  const endpoint = uniqueEndpoint(name);
  await configureEndpoint(endpoint, { runMs: 60_000, queueMs: 0, ...config });
  return endpoint;
}

function settingsFor(primary: string, routes: Record<string, string[]>) {
  return {
    RUNPOD_ENDPOINT_ID: primary,
    RUNPOD_ENDPOINTS: JSON.stringify(routes),
    RUNPOD_MAX_IN_FLIGHT: "20",
    BREAKER_THRESHOLD: "2",
    BREAKER_WINDOW: "4",
    BREAKER_COOLDOWN_S: "1",
    BREAKER_PROBES: "1",
  };
}

let n = 0;
async function postExport(
  vars: Record<string, string>,
  type: "framing" | "overlay",
  projectId = freshProjectId(),
): Promise<Job> {
  const key = `uploads/${projectId}/in.mp4`;
  await putInput(key);
  n += 1;
  const params =
    type === "framing"
      ? { crop_keyframes: [{ time: 0, x: 0, y: 0, width: 640, height: 360 }], n }
      : { highlight_regions: [{ start_time: 0, end_time: 1 }], n };
  const res = await postJson(
    "/exports",
    { project_id: projectId, type, input_video_key: key, params },
    { vars },
  );
  expect(res.status).toBe(202);
  return ((await res.json()) as { job: Job }).job;
}

async function runsFor(endpoint: string, jobId: string) {
  return runCalls(await emulatorRequests(endpoint)).filter(
    (r) => (r.body as { input?: { export_job_id?: string } }).input?.export_job_id === jobId,
  );
}

describe("routing and failover", () => {
  it("each type reaches its own endpoint; polls and cancels go to the attempt's endpoint", async () => {
    const framingEp = await endpointWith("ep-framing");
    const otherEp = await endpointWith("ep-other");
    const vars = settingsFor(otherEp, { framing: [framingEp], "*": [otherEp] });
    const framing = await postExport(vars, "framing");
    const overlay = await postExport(vars, "overlay");
    await deliver([framing.id, overlay.id], { env: { ...env, ...vars } });

    expect(await runsFor(framingEp, framing.id)).toHaveLength(1);
    expect(await runsFor(otherEp, overlay.id)).toHaveLength(1);
    expect(await runsFor(otherEp, framing.id)).toHaveLength(0);
    const row = await readJob(framing.id);
    expect(row).toMatchObject({ status: "processing", runpod_endpoint_id: framingEp });
    const record = await env.DB.prepare("SELECT endpoint_id FROM export_runs WHERE job_id = ?")
      .bind(framing.id)
      .first<{ endpoint_id: string }>();
    expect(record?.endpoint_id).toBe(framingEp);

    // The reconciler polls the framing run at its endpoint.
    await env.DB.prepare("UPDATE export_jobs SET due_at = '2000-01-01 00:00:00.000' WHERE id = ?")
      .bind(framing.id)
      .run();
    await reconcile(consumerDeps({ ...env, ...vars }), { budgetMs: 5_000 });
    const polls = (await emulatorRequests(framingEp)).filter((r) =>
      r.path.includes(`/status/${row?.runpod_job_id}`),
    );
    expect(polls.length).toBeGreaterThanOrEqual(1);

    const cancel = await postJson(`/exports/${framing.id}/cancel`, {}, { vars });
    expect(cancel.status).toBe(200);
    const cancels = (await emulatorRequests(framingEp)).filter((r) => r.path.includes("/cancel/"));
    expect(cancels.map((r) => r.path)).toEqual([`/v2/${framingEp}/cancel/${row?.runpod_job_id}`]);
    // Its slot freed at its own dispatcher.
    const framingDispatcher = env.DISPATCHER.get(env.DISPATCHER.idFromName(framingEp));
    expect(await framingDispatcher.inFlight()).toEqual([]);

    const stats = await producerFetch("/stats", {
      token: env.ADMIN_TOKEN as string,
      vars,
    });
    const body = (await stats.json()) as {
      dispatch_by_endpoint: Record<string, unknown>;
      dispatch: unknown;
    };
    expect(Object.keys(body.dispatch_by_endpoint).sort()).toEqual([framingEp, otherEp].sort());
    expect(body.dispatch).toEqual(body.dispatch_by_endpoint[otherEp]);
  });

  it("with the primary in an outage, jobs complete on the secondary, no retry spent; the primary takes work again once it recovers", async () => {
    const primary = await endpointWith("ep-primary", { outage: true, outageStatus: 503 });
    const secondary = await endpointWith("ep-secondary");
    const vars = settingsFor(primary, { "*": [primary, secondary] });
    const testEnv = { ...env, ...vars };
    const projectId = freshProjectId();
    const jobs = [
      await postExport(vars, "overlay", projectId),
      await postExport(vars, "overlay", projectId),
      await postExport(vars, "overlay", projectId),
    ];
    const ids = jobs.map((job) => job.id);
    // The first batch meets the outage: released (not the jobs' fault), the primary goes down.
    await deliver(ids, { env: testEnv });
    for (const id of ids) {
      expect(await readJob(id)).toMatchObject({ status: "pending", retry_count: 0 });
    }
    const primaryDispatcher = env.DISPATCHER.get(env.DISPATCHER.idFromName(primary));
    expect((await primaryDispatcher.route()).down).toBe(true);

    // Their next delivery goes to the secondary.
    await deliver(ids, { env: testEnv });
    for (const id of ids) {
      expect(await readJob(id)).toMatchObject({
        status: "processing",
        retry_count: 0,
        runpod_endpoint_id: secondary,
      });
      expect(await runsFor(secondary, id)).toHaveLength(1);
    }
    // They complete there.
    for (const id of ids) {
      const row = (await readJob(id)) as JobRow;
      await putOutput(row);
      const res = await postJson(
        await callbackPath("webhook", id, row.attempt),
        { id: row.runpod_job_id, status: "COMPLETED", executionTime: 1000 },
        { token: null, vars },
      );
      expect(res.status).toBe(200);
      expect(await readJob(id)).toMatchObject({ status: "complete", retry_count: 0 });
    }
    // A new export while the primary is down: the secondary holds it from the start.
    const fresh = await postExport(vars, "overlay", projectId);
    await deliver([fresh.id], { env: testEnv });
    expect(await readJob(fresh.id)).toMatchObject({ runpod_endpoint_id: secondary });

    // The primary recovers; once its pause is over, a job goes there as its probe, and the
    // probe's success brings it back: the next job runs on the primary again.
    await configureEndpoint(primary, { runMs: 60_000, queueMs: 0, outage: false });
    await waitFor(
      async () => ((await primaryDispatcher.route()).probes > 0 ? true : undefined),
      "the primary's pause to end",
    );
    const probe = await postExport(vars, "overlay", projectId);
    await deliver([probe.id], { env: testEnv });
    expect(await readJob(probe.id)).toMatchObject({
      status: "processing",
      runpod_endpoint_id: primary,
    });
    expect((await primaryDispatcher.route()).down).toBe(false);
    const after = await postExport(vars, "overlay", projectId);
    await deliver([after.id], { env: testEnv });
    expect(await readJob(after.id)).toMatchObject({ runpod_endpoint_id: primary });
  });
});

describe("a dispatcher whose endpoint goes down", () => {
  it("hands its waiting jobs back (each once, to be routed on) and refuses new ones", async () => {
    const primary = uniqueEndpoint("ep-down");
    const secondary = uniqueEndpoint("ep-up");
    const routes = {
      framing: [primary, secondary],
      overlay: [primary, secondary],
      annotate: [primary, secondary],
    };
    const config = dispatchConfig({
      maxInFlight: 1,
      breakerThreshold: 2,
      breakerWindow: 4,
      breakerCooldownS: 1,
      breakerProbes: 1,
      routes,
    });
    const d = env.DISPATCHER.get(env.DISPATCHER.idFromName(primary));
    const jobs = Array.from({ length: 5 }, (_, i) => ({
      id: crypto.randomUUID(),
      key: "user:1",
      createdAt: `2026-12-01 00:00:0${i}.000`,
    }));
    const first = await d.dispatch(jobs, config);
    expect(first.admitted).toHaveLength(1);
    expect((await d.status()).waiting).toBe(4);
    await d.report(
      [
        { kind: "failed", error: "RunPod /run answered HTTP 503" },
        { kind: "failed", error: "RunPod /run answered HTTP 503" },
      ],
      config,
    );
    expect((await d.route()).down).toBe(true);
    // Evacuated: none waits here any more, and each has its message back on the queue.
    expect((await d.status()).waiting).toBe(0);
    const waiting = jobs.slice(1).map((job) => job.id);
    expect(await d.known(waiting)).toEqual([]);
    for (const id of waiting) {
      await waitFor(
        async () => ((await sentMessagesFor(id)).length === 1 ? true : undefined),
        "its message",
      );
    }
    // A new job is refused while another endpoint can take it (within the pause: no probe).
    const late = { id: crypto.randomUUID(), key: "user:2", createdAt: "2026-12-01 00:01:00.000" };
    const refused = await d.dispatch([late], config);
    expect(refused.refused).toEqual([late.id]);
    expect(await d.offerNew([{ ...late, type: "overlay" }])).toBeNull();
    // Told to stay (every endpoint of its type is down), it waits here: never refused, no loop.
    const staying = { ...late, id: crypto.randomUUID(), stay: true };
    expect((await d.dispatch([staying], config)).refused).toEqual([]);
    expect(await d.known([staying.id])).toEqual([staying.id]);
    // A type no other endpoint takes is never refused either.
    const own = dispatchConfig({ ...config, routes: { ...routes, annotate: [primary] } });
    const annotate = { ...late, id: crypto.randomUUID(), type: "annotate" };
    expect((await d.dispatch([annotate], own)).refused).toEqual([]);
  });
});

describe("the reconciler's heal across endpoints", () => {
  it("frees a dispatcher's slot held by a job now processing on another endpoint", async () => {
    const a = uniqueEndpoint("heal-a");
    const b = uniqueEndpoint("heal-b");
    const vars = settingsFor(a, { "*": [a, b] });
    const job = await postExport(vars, "overlay");
    const dA = env.DISPATCHER.get(env.DISPATCHER.idFromName(a));
    // A admitted it (its slot), then the job was claimed for B (a message routed elsewhere).
    const admitted = await dA.dispatch(
      [{ id: job.id, key: "project:1", createdAt: job.created_at, type: "overlay" }],
      dispatchConfig({ routes: endpointRoutesVar(vars.RUNPOD_ENDPOINTS, a) }),
    );
    expect(admitted.admitted.map((x) => x.id)).toContain(job.id);
    await repo.claimJobs(env.DB, [job.id], 120, b);
    expect(await readJob(job.id)).toMatchObject({ status: "processing", runpod_endpoint_id: b });
    await reconcile(consumerDeps({ ...env, ...vars }), { budgetMs: 5_000, healGraceMs: 0 });
    expect(await dA.inFlight()).not.toContain(job.id);
  });
});
