// What the chaos run (npm run chaos) found, each with its test: a lost run is finished when its
// output is in R2 also when no run was ever recorded; RunPod being down or unreachable is nobody's
// fault (released, no retry spent) while an error answer is the seed's CASE; jobs waiting in the
// dispatcher are not re-enqueued every grace period, and one the dispatcher lost is. (The live
// view ending at D1's version after bookkeeping is in live-status.test.ts.)
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { consumerDeps } from "../../consumer/process-jobs.ts";
import { reconcile } from "../../consumer/reconciler.ts";
import { AUDIT_CURSOR, AUDIT_STALE_MS, type DispatchStatus } from "../../shared/dispatcher.ts";
import { holdJobs } from "../../shared/job-state.ts";
import * as repo from "../../shared/sql/jobs/reads.ts";
import { claimJobs } from "../../shared/sql/jobs/transitions.ts";
import {
  callbackPath,
  configureEndpoint,
  deliver,
  emulatorRequests,
  freshProjectId,
  insertPendingJob,
  messageArrives,
  plannedKey,
  postJson,
  processingJob,
  putOutput,
  readJob,
  runCalls,
  sentMessagesFor,
  uniqueEndpoint,
  waitFor,
} from "./helpers.ts";

const envFor = (endpoint: string, extra: Record<string, string> = {}): typeof env => ({
  ...env,
  RUNPOD_ENDPOINT_ID: endpoint,
  ...extra,
});

async function makeDue(id: string): Promise<void> {
  await env.DB.prepare("UPDATE export_jobs SET due_at = datetime('now', '-1 seconds') WHERE id = ?")
    .bind(id)
    .run();
}

async function eventTypes(id: string): Promise<string[]> {
  const { results } = await env.DB.prepare(
    "SELECT type FROM export_job_events WHERE job_id = ? ORDER BY version, type",
  )
    .bind(id)
    .all<{ type: string }>();
  return results.map((row) => row.type);
}

function dispatchStatus(endpoint: string): Promise<DispatchStatus> {
  return env.DISPATCHER.get(env.DISPATCHER.idFromName(endpoint)).status();
}

describe("a claim timeout is a lost run", () => {
  it("completes the job when the run's output is in R2 (its /run answer and its news were lost)", async () => {
    const endpoint = uniqueEndpoint("claim-output");
    const job = await processingJob({ runId: null });
    const key = await putOutput(job);
    await makeDue(job.id);
    await reconcile(consumerDeps(envFor(endpoint)));
    expect(await readJob(job.id)).toMatchObject({
      status: "complete",
      progress: 100,
      retry_count: 0,
      output_video_key: key,
      runpod_job_id: null,
      error: null,
    });
    expect(await eventTypes(job.id)).toEqual(["created", "claimed", "completed"]);
  });

  it("names the run that wrote the output (the handler's runpod-job-id metadata)", async () => {
    const endpoint = uniqueEndpoint("claim-named");
    const job = await processingJob({ runId: null });
    await env.VIDEOS.put(plannedKey(job), new Uint8Array([1, 2, 3]), {
      customMetadata: { "runpod-job-id": "run-that-wrote-it" },
    });
    await makeDue(job.id);
    await reconcile(consumerDeps(envFor(endpoint)));
    expect(await readJob(job.id)).toMatchObject({
      status: "complete",
      runpod_job_id: "run-that-wrote-it",
    });
  });

  it("an output older than the attempt's claim is an earlier attempt's: not this one's", async () => {
    const endpoint = uniqueEndpoint("claim-stale-output");
    const job = await insertPendingJob();
    await putOutput(job); // left by an earlier attempt
    await new Promise((resolve) => setTimeout(resolve, 5)); // the claim comes strictly after it
    const [claimed] = await claimJobs(env.DB, [job.id], 120);
    if (!claimed) throw new Error("claim failed");
    await makeDue(job.id);
    await reconcile(consumerDeps(envFor(endpoint, { RETRY_BASE_DELAY_S: "0" })));
    expect(await readJob(job.id)).toMatchObject({ status: "pending", retry_count: 1 });
  });

  it("fails the attempt with the seed's CASE when there is no output, and says where it looked", async () => {
    const endpoint = uniqueEndpoint("claim-none");
    const job = await processingJob({ runId: null });
    await makeDue(job.id);
    await reconcile(consumerDeps(envFor(endpoint, { RETRY_BASE_DELAY_S: "0" })));
    const row = await readJob(job.id);
    expect(row).toMatchObject({ status: "pending", retry_count: 1, runpod_job_id: null });
    expect(row?.error).toBe(
      `no RunPod run recorded within 120s of the claim and no output at ${plannedKey(job)}`,
    );
  });
});

describe("a claim timeout never spends a job's last retry", () => {
  // The 10,000-job chaos run (seed 42): three jobs had three genuine failures, then a fourth
  // attempt whose /run answer timed out and whose run RunPod never created; the claim timeout
  // took the seed's CASE and ended them in error, though nothing showed the job at fault.
  it("with three failures counted, a claim timeout without output releases the job (retry_count 3)", async () => {
    const endpoint = uniqueEndpoint("claim-last");
    const job = await processingJob({ runId: null, retryCount: 3 });
    await makeDue(job.id);
    await reconcile(consumerDeps(envFor(endpoint, { RETRY_BASE_DELAY_S: "0" })));
    const row = await readJob(job.id);
    expect(row).toMatchObject({ status: "pending", retry_count: 3, runpod_job_id: null });
    expect(await eventTypes(job.id)).toEqual(["created", "claimed", "released"]);
    await messageArrives(job.id);
  });
});

describe("RunPod down is nobody's fault; an error answer is the job's attempt failing", () => {
  it("a 503 on /run releases the job with its retries intact, and the gate counts it", async () => {
    const endpoint = uniqueEndpoint("down-503");
    await configureEndpoint(endpoint, { outage: true });
    const job = await insertPendingJob();
    await deliver([job.id], { env: envFor(endpoint, { BREAKER_THRESHOLD: "1" }) });
    expect(runCalls(await emulatorRequests(endpoint))).toHaveLength(1);
    expect(await readJob(job.id)).toMatchObject({
      status: "pending",
      retry_count: 0,
      error: null,
      attempt: 1,
    });
    expect(await eventTypes(job.id)).toEqual(["created", "claimed", "released"]);
    expect((await dispatchStatus(endpoint)).state).toBe("paused");
  });

  it("no connection to RunPod at all releases the job too", async () => {
    const endpoint = uniqueEndpoint("down-unreachable");
    const job = await insertPendingJob();
    // Port 9 (discard) on the loopback: nothing listens, the connection is refused.
    await deliver([job.id], {
      env: envFor(endpoint, { RUNPOD_BASE_URL: "http://127.0.0.1:9/v2", BREAKER_THRESHOLD: "1" }),
    });
    expect(await readJob(job.id)).toMatchObject({ status: "pending", retry_count: 0 });
    expect(await eventTypes(job.id)).toEqual(["created", "claimed", "released"]);
    expect((await dispatchStatus(endpoint)).state).toBe("paused");
  });

  it("a 504 (RunPod's gateway gave up waiting) leaves the attempt open for the run's news", async () => {
    const endpoint = uniqueEndpoint("down-504");
    await configureEndpoint(endpoint, { outage: true, outageStatus: 504 });
    const job = await insertPendingJob();
    await deliver([job.id], { env: envFor(endpoint) });
    expect(await readJob(job.id)).toMatchObject({
      status: "processing",
      attempt: 1,
      retry_count: 0,
      runpod_job_id: null,
    });
    expect(await eventTypes(job.id)).toEqual(["created", "claimed"]);
  });

  it("a 500 answer to /run takes the seed's CASE", async () => {
    const endpoint = uniqueEndpoint("down-500");
    await configureEndpoint(endpoint, { outage: true, outageStatus: 500 });
    const job = await insertPendingJob();
    await deliver([job.id], { env: envFor(endpoint) });
    const row = await readJob(job.id);
    expect(row).toMatchObject({ status: "pending", retry_count: 1 });
    expect(row?.error).toMatch(/answered HTTP 500/);
    expect(await eventTypes(job.id)).toEqual(["created", "claimed", "submit_failed"]);
  });
});

describe("a progress report that names its run", () => {
  it("adopts the run of an attempt that recorded none (its /run answer timed out), once", async () => {
    const job = await processingJob({ runId: null });
    const path = await callbackPath("progress", job.id, job.attempt);
    const first = await postJson(
      path,
      { progress: 25, runpod_job_id: "run-timed-out" },
      { token: null },
    );
    expect(first.status).toBe(204);
    expect(await readJob(job.id)).toMatchObject({
      status: "processing",
      progress: 25,
      runpod_job_id: "run-timed-out",
    });
    // Another run's report (none can be this attempt's) never replaces it.
    const other = await postJson(
      path,
      { progress: 50, runpod_job_id: "another-run" },
      { token: null },
    );
    expect(other.status).toBe(204);
    expect(await readJob(job.id)).toMatchObject({ progress: 50, runpod_job_id: "run-timed-out" });
    expect(await eventTypes(job.id)).toEqual([
      "created",
      "claimed",
      "progress",
      "submitted",
      "progress",
    ]);
  });

  it("400 when runpod_job_id is not a non-empty string; nothing changes", async () => {
    const job = await processingJob({ runId: null });
    const path = await callbackPath("progress", job.id, job.attempt);
    for (const runpodJobId of ["", 7, null, "x".repeat(256)]) {
      const res = await postJson(
        path,
        { progress: 10, runpod_job_id: runpodJobId },
        { token: null },
      );
      expect(res.status).toBe(400);
    }
    expect(await readJob(job.id)).toEqual(job);
  });
});

describe("jobs waiting for a dispatch slot", () => {
  it("are held (not re-enqueued by the reconciler); one the dispatcher does not know is", async () => {
    const endpoint = uniqueEndpoint("held");
    await configureEndpoint(endpoint, { runMs: 600_000 });
    const testEnv = envFor(endpoint, { RUNPOD_MAX_IN_FLIGHT: "1", PENDING_GRACE_S: "0" });
    const projectId = freshProjectId();
    const ids = [];
    for (let i = 0; i < 3; i++) ids.push((await insertPendingJob(projectId)).id);
    await deliver(ids, { env: testEnv });
    const rows = await Promise.all(ids.map((id) => readJob(id)));
    // One was admitted (the oldest, or the least id among equal creation times); two wait.
    expect(rows.filter((row) => row?.status === "processing")).toHaveLength(1);
    const [first, second] = rows.filter((row) => row?.status === "pending");
    if (!first || !second) throw new Error("two jobs should wait");
    for (const waiting of [first, second]) {
      expect(await readJob(waiting.id)).toMatchObject({ status: "pending", due_at: null });
    }
    expect((await dispatchStatus(endpoint)).waiting).toBe(2);

    // A grace of 0 makes every due pending job look lost; held ones are not due.
    const before = await reconcile(consumerDeps(testEnv));
    expect(before.unheld).toBe(0);

    // The dispatcher lets one go while D1 still holds it (a free that came late): it sends the
    // job's message itself, so the audit, which reads only the holds since its last pass, does
    // not have to find it.
    await env.DISPATCHER.get(env.DISPATCHER.idFromName(endpoint)).free([second.id]);
    const report = await reconcile(consumerDeps(testEnv));
    expect(report.unheld).toBe(0);
    await waitFor(
      async () => ((await sentMessagesFor(second.id)).length > 0 ? true : undefined),
      "the forgotten job's message",
    );
    // Sent once, and never for the job the dispatcher still holds (by either pass).
    expect(await sentMessagesFor(second.id)).toEqual([{ job_id: second.id }]);
    expect(await sentMessagesFor(first.id)).toEqual([]);
    // Still pending and held: its next batch offers it to the dispatcher again.
    expect(await repo.getJob(env.DB, second.id)).toMatchObject({ status: "pending", due_at: null });
  });

  it("after a sweep, a pass audits only the jobs held since: none when none were, not the backlog", async () => {
    const endpoint = uniqueEndpoint("tail");
    await configureEndpoint(endpoint, { runMs: 600_000 });
    const testEnv = envFor(endpoint, { RUNPOD_MAX_IN_FLIGHT: "1" });
    const projectId = freshProjectId();
    const backlog: string[] = [];
    for (let i = 0; i < 12; i++) backlog.push((await insertPendingJob(projectId)).id);
    await deliver(backlog, { env: testEnv }); // one admitted, eleven held (and known)
    expect((await dispatchStatus(endpoint)).waiting).toBe(11);

    // A dispatcher that was never audited: every held job in D1 is read once (a sweep).
    const sweep = await reconcile(consumerDeps(testEnv));
    expect(sweep.heldAudited).toBeGreaterThanOrEqual(11);
    // Nothing held since: the next passes read nothing, however large the backlog.
    for (let pass = 0; pass < 2; pass++) {
      const quiet = await reconcile(consumerDeps(testEnv));
      expect(quiet.heldAudited).toBe(0);
      expect(quiet.unheld).toBe(0);
    }
    // Three jobs held since: the next pass reads those three.
    const later: string[] = [];
    for (let i = 0; i < 3; i++) later.push((await insertPendingJob(projectId)).id);
    await deliver(later, { env: testEnv });
    const next = await reconcile(consumerDeps(testEnv));
    expect(next.heldAudited).toBe(3);
    expect(next.unheld).toBe(0);
    for (const id of [...backlog, ...later]) expect(await sentMessagesFor(id)).toEqual([]);
  });

  it("a dispatcher whose audit fell behind (another one was audited meanwhile) is swept again", async () => {
    const endpoint = uniqueEndpoint("stale");
    await configureEndpoint(endpoint, { runMs: 600_000 });
    const testEnv = envFor(endpoint, { RUNPOD_MAX_IN_FLIGHT: "1" });
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push((await insertPendingJob()).id);
    await deliver(ids, { env: testEnv });
    await reconcile(consumerDeps(testEnv));
    expect((await reconcile(consumerDeps(testEnv))).heldAudited).toBe(0);
    // Its last audit is older than AUDIT_STALE_MS, as when the endpoint id pointed elsewhere for a
    // while: jobs held then were offered to that other dispatcher, whatever their rowid.
    const dispatcher = env.DISPATCHER.get(env.DISPATCHER.idFromName(endpoint));
    await runInDurableObject(dispatcher, async (_instance, state) => {
      const mark = await state.storage.get<{ after: number; at: number }>(AUDIT_CURSOR);
      if (!mark) throw new Error("no audit mark");
      await state.storage.put(AUDIT_CURSOR, { ...mark, at: mark.at - AUDIT_STALE_MS - 1 });
    });
    expect((await reconcile(consumerDeps(testEnv))).heldAudited).toBeGreaterThanOrEqual(3);
  });

  it("a job re-pended or released meanwhile is not held: it waits out its delay", async () => {
    const job = await insertPendingJob();
    await env.DB.prepare(
      "UPDATE export_jobs SET due_at = datetime('now', '+600 seconds') WHERE id = ?",
    )
      .bind(job.id)
      .run();
    const before = await readJob(job.id);
    expect(await holdJobs(consumerDeps(env), [job.id])).toEqual([]);
    expect(await readJob(job.id)).toEqual(before);
  });

  it("the audit reads at most its pages a pass and resumes where the last pass stopped", async () => {
    // A fresh endpoint's dispatcher knows none of these held jobs.
    const testEnv = envFor(uniqueEndpoint("sweep"));
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) ids.push((await insertPendingJob()).id);
    await env.DB.prepare(
      "UPDATE export_jobs SET due_at = NULL WHERE id IN (SELECT value FROM json_each(?))",
    )
      .bind(JSON.stringify(ids))
      .run();
    const first = await reconcile(consumerDeps(testEnv), { batch: 1, heldPages: 10 });
    expect(first.heldAudited).toBe(10);
    // The twelve are the newest held rows, after at least ten others or some of themselves: a
    // sweep that started over each pass would never reach the last of them.
    for (let pass = 0; pass < 50; pass++) {
      const sent = await Promise.all(ids.map(async (id) => (await sentMessagesFor(id)).length));
      if (sent.every((n) => n > 0)) break;
      await reconcile(consumerDeps(testEnv), { batch: 1, heldPages: 10 });
    }
    await waitFor(async () => {
      const sent = await Promise.all(ids.map(async (id) => (await sentMessagesFor(id)).length));
      return sent.every((n) => n > 0) ? true : undefined;
    }, "a message for each of the twelve");
  });
});
