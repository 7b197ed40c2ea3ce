// GPU seconds, never wasted: supersede keys end older jobs under the same key (their runs are
// cancelled at RunPod), an export identical to a complete one reuses its output (copied, no run),
// one identical to a job on its way follows it (single flight), and `reuse: false`, a changed
// input object or another project render again. Real D1, R2, Queues and Durable Objects; RunPod
// is the emulator over HTTP.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { consumerDeps } from "../../consumer/process-jobs.ts";
import { reconcile } from "../../consumer/reconciler.ts";
import * as state from "../../shared/job-state.ts";
import { copyObject } from "../../shared/r2-copy.ts";
import { listEvents } from "../../shared/sql/events.ts";
import { INSERT_SQL } from "../../shared/sql/jobs/insert.ts";
import type { Job, JobRow } from "../../shared/sql/jobs/row.ts";
import {
  answersLost,
  callbackPath,
  configureEndpoint,
  deliver,
  emulatorOrigin,
  emulatorRequests,
  freshProjectId,
  overlayRequest,
  plannedKey,
  postJson,
  producerFetch,
  putOutput,
  readJob,
  runCalls,
  sentMessagesFor,
  spyQueue,
  submitEmulatorRun,
  uniqueEndpoint,
  waitFor,
} from "./helpers.ts";

/** A fresh endpoint whose runs last a minute (they are still running while a test looks). */
async function slowEndpoint(name: string) {
  const endpoint = uniqueEndpoint(name);
  await configureEndpoint(endpoint, { runMs: 60_000 });
  return endpoint;
}

/** An input object of `bytes` (its ETag changes with them). */
async function putInputBytes(key: string, bytes: Uint8Array) {
  await env.VIDEOS.put(key, bytes, { httpMetadata: { contentType: "video/mp4" } });
}

function randomBytes(n: number): Uint8Array {
  const bytes = new Uint8Array(n);
  for (let i = 0; i < n; i += 65_536) crypto.getRandomValues(bytes.subarray(i, i + 65_536));
  return bytes;
}

interface Setup {
  endpoint: string;
  projectId: number;
  input: string;
}

async function setup(name: string): Promise<Setup> {
  const projectId = freshProjectId();
  const input = `uploads/${projectId}/clip.mp4`;
  await putInputBytes(input, randomBytes(64));
  return { endpoint: await slowEndpoint(name), projectId, input };
}

/** POST /exports for the setup's project and input; `edit` changes the params (another render). */
async function create(
  s: Setup,
  extra: Record<string, unknown> = {},
  options: { edit?: number; idempotencyKey?: string; projectId?: number } = {},
): Promise<{ status: number; job: Job }> {
  const body = overlayRequest(options.projectId ?? s.projectId, s.input);
  if (options.edit !== undefined) {
    body.params = {
      highlight_regions: [{ start_time: options.edit, end_time: 99, color: "#0f0" }],
    };
  }
  const res = await postJson(
    "/exports",
    { ...body, ...extra },
    {
      vars: { RUNPOD_ENDPOINT_ID: s.endpoint },
      headers: options.idempotencyKey ? { "Idempotency-Key": options.idempotencyKey } : {},
    },
  );
  const answer = (await res.json()) as { job: Job };
  return { status: res.status, job: answer.job };
}

const consumerEnv = (s: Setup) => ({ ...env, RUNPOD_ENDPOINT_ID: s.endpoint });

/** The consumer takes the job's message: it reuses, follows, or submits a run. */
async function consume(s: Setup, jobId: string): Promise<JobRow> {
  await deliver([jobId], { env: consumerEnv(s) });
  const row = await readJob(jobId);
  if (!row) throw new Error("no job");
  return row;
}

/** RunPod reports the job's current run COMPLETED, its output written first. */
async function completeRun(row: JobRow, body: Uint8Array): Promise<void> {
  await putOutput(row, plannedKey(row), body);
  const res = await postJson(
    await callbackPath("webhook", row.id, row.attempt),
    { id: row.runpod_job_id, status: "COMPLETED", executionTime: 4_000, delayTime: 100 },
    { token: null },
  );
  expect(res.status).toBe(200);
}

/** A job rendered to the end: created, submitted, COMPLETED with `body` as its output. */
async function renderedJob(s: Setup, body: Uint8Array, extra: Record<string, unknown> = {}) {
  const { job } = await create(s, extra);
  const running = await consume(s, job.id);
  expect(running.status).toBe("processing");
  await completeRun(running, body);
  expect(await readJob(job.id)).toMatchObject({ status: "complete" });
  return job;
}

async function runsAt(endpoint: string): Promise<number> {
  return runCalls(await emulatorRequests(endpoint)).length;
}

async function outputBytes(jobId: string): Promise<Uint8Array> {
  const res = await producerFetch(`/exports/${jobId}/output`);
  expect(res.status).toBe(200);
  return new Uint8Array(await res.arrayBuffer());
}

function dispatcherOf(s: Setup) {
  return env.DISPATCHER.get(env.DISPATCHER.idFromName(s.endpoint));
}

describe("supersede keys", () => {
  it("a newer export under the same key ends a pending one: error, event, no place left in the dispatcher", async () => {
    const s = await setup("supersede-pending");
    const { job: first } = await create(s, { supersede_key: "reel-7" }, { edit: 1 });
    expect(await dispatcherOf(s).known([first.id])).toEqual([first.id]);

    const { status, job: second } = await create(s, { supersede_key: "reel-7" }, { edit: 2 });
    expect(status).toBe(202);
    expect(second).toMatchObject({ status: "pending", supersede_key: "reel-7", follows: null });
    const old = await readJob(first.id);
    expect(old).toMatchObject({ status: "error", error: `superseded by ${second.id}` });
    expect(old?.finished_at).not.toBeNull();
    const events = await listEvents(env.DB, first.id);
    expect(events.at(-1)).toMatchObject({
      type: "superseded",
      detail: `superseded by ${second.id}`,
    });
    expect(await dispatcherOf(s).known([first.id, second.id])).toEqual([second.id]);
    // Its message, when it comes, is a duplicate: no run.
    await consume(s, first.id);
    expect(await runsAt(s.endpoint)).toBe(0);
  });

  it("a newer export ends a processing one and cancels its run at RunPod", async () => {
    const s = await setup("supersede-running");
    const { job: first } = await create(s, { supersede_key: "reel-8" }, { edit: 1 });
    const running = await consume(s, first.id);
    expect(running).toMatchObject({ status: "processing" });
    const runId = running.runpod_job_id as string;
    expect(runId).toBeTruthy();

    const { job: second } = await create(s, { supersede_key: "reel-8" }, { edit: 2 });
    expect(await readJob(first.id)).toMatchObject({
      status: "error",
      error: `superseded by ${second.id}`,
      due_at: null, // RunPod confirmed the cancel: no retry left due
    });
    const cancels = (await emulatorRequests(s.endpoint)).filter((r) => r.path.includes("/cancel/"));
    expect(cancels.map((r) => r.path)).toEqual([`/v2/${s.endpoint}/cancel/${runId}`]);
    const state = await fetch(`${emulatorOrigin}/__emulator/jobs/${runId}`);
    expect(((await state.json()) as { status: string }).status).toBe("CANCELLED");
    // The slot is free: the dispatcher no longer holds the superseded job.
    expect(await dispatcherOf(s).known([first.id])).toEqual([]);
  });

  it("a superseded run whose /cancel fails is cancelled again by the reconciler", async () => {
    const s = await setup("supersede-retry");
    const { job: first } = await create(s, { supersede_key: "reel-9" }, { edit: 1 });
    const running = await consume(s, first.id);
    await configureEndpoint(s.endpoint, { runMs: 60_000, outage: true, outageStatus: 503 });
    await create(s, { supersede_key: "reel-9" }, { edit: 2 });
    const ended = await readJob(first.id);
    expect(ended?.status).toBe("error");
    expect(ended?.due_at).not.toBeNull(); // a cancel retry is due

    await configureEndpoint(s.endpoint, { runMs: 60_000, outage: false });
    await env.DB.prepare("UPDATE export_jobs SET due_at = '2000-01-01 00:00:00.000' WHERE id = ?")
      .bind(first.id)
      .run();
    await reconcile(consumerDeps(consumerEnv(s)), { budgetMs: 5_000 });
    expect((await readJob(first.id))?.due_at).toBeNull();
    const state = await fetch(`${emulatorOrigin}/__emulator/jobs/${running.runpod_job_id}`);
    expect(((await state.json()) as { status: string }).status).toBe("CANCELLED");
  });

  it("a burst of three under one key leaves the last one; complete jobs are untouched", async () => {
    const s = await setup("supersede-burst");
    const done = await renderedJob(s, randomBytes(32), { supersede_key: "reel-10" });
    const created: Job[] = [];
    for (const edit of [1, 2, 3]) {
      created.push((await create(s, { supersede_key: "reel-10" }, { edit })).job);
    }
    const [a, b, c] = created as [Job, Job, Job];
    expect(await readJob(a.id)).toMatchObject({ error: `superseded by ${b.id}` });
    expect(await readJob(b.id)).toMatchObject({ error: `superseded by ${c.id}` });
    expect(await readJob(c.id)).toMatchObject({ status: "pending", error: null });
    expect(await readJob(done.id)).toMatchObject({ status: "complete", error: null });
  });

  it("an identical older job is followed, not superseded", async () => {
    const s = await setup("supersede-identical");
    const { job: first } = await create(s, { supersede_key: "reel-11" });
    const { job: again } = await create(s, { supersede_key: "reel-11" });
    expect(await readJob(first.id)).toMatchObject({ status: "pending", error: null });
    expect(again).toMatchObject({ status: "pending", follows: first.id });
  });

  it("with an Idempotency-Key, a repeat answers the first job and supersedes nothing", async () => {
    const s = await setup("supersede-idempotent");
    const { job: old } = await create(s, { supersede_key: "reel-12" }, { edit: 1 });
    const first = await create(s, { supersede_key: "reel-12" }, { edit: 2, idempotencyKey: "k1" });
    expect(await readJob(old.id)).toMatchObject({ error: `superseded by ${first.job.id}` });
    // A job under the same key created after it (straight into D1): a repeat must not end it.
    const later = crypto.randomUUID();
    await env.DB.prepare(
      `INSERT INTO export_jobs (id, project_id, type, input_video_key, params, supersede_key, due_at)
       VALUES (?, ?, 'overlay', ?, '{}', 'reel-12', datetime('now'))`,
    )
      .bind(later, s.projectId, s.input)
      .run();
    const repeat = await create(s, { supersede_key: "reel-12" }, { edit: 2, idempotencyKey: "k1" });
    expect(repeat.status).toBe(200);
    expect(repeat.job.id).toBe(first.job.id);
    expect(await readJob(later)).toMatchObject({ status: "pending", error: null });
  });

  it("an insert whose answer D1 lost still ends the older job, once, and cancels its run", async () => {
    const s = await setup("supersede-lost");
    const { job: first } = await create(s, { supersede_key: "reel-13" }, { edit: 1 });
    const running = await consume(s, first.id);
    const db = answersLost(env.DB, (sql) => sql === INSERT_SQL.insert);
    const res = await postJson(
      "/exports",
      {
        ...overlayRequest(s.projectId, s.input),
        params: { highlight_regions: [{ start_time: 5, end_time: 9 }] },
        supersede_key: "reel-13",
      },
      { vars: { RUNPOD_ENDPOINT_ID: s.endpoint }, bindings: { DB: db } },
    );
    expect(db.lost()).toBe(1);
    expect(res.status).toBe(202);
    const { job } = (await res.json()) as { job: Job };
    expect(await readJob(first.id)).toMatchObject({
      status: "error",
      error: `superseded by ${job.id}`,
      due_at: null,
    });
    const cancels = (await emulatorRequests(s.endpoint)).filter((r) => r.path.includes("/cancel/"));
    expect(cancels.map((r) => r.path)).toEqual([
      `/v2/${s.endpoint}/cancel/${running.runpod_job_id}`,
    ]);
    const events = await listEvents(env.DB, first.id);
    expect(events.filter((event) => event.type === "superseded")).toHaveLength(1);
  });

  it("a run whose /run answer came after its job was superseded is cancelled, and again by the reconciler if that fails", async () => {
    const s = await setup("supersede-late-run");
    const { job: first } = await create(s, { supersede_key: "reel-14" }, { edit: 1 });
    const deps = consumerDeps(consumerEnv(s));
    const [claimed] = await state.claimJobs(deps, [first.id], 120);
    expect(claimed).toBeDefined();
    await create(s, { supersede_key: "reel-14" }, { edit: 2 });
    // RunPod's answer to the claimed job's /run comes now, while /cancel fails.
    const runId = await submitEmulatorRun(s.endpoint);
    await configureEndpoint(s.endpoint, { runMs: 60_000, outage: true, outageStatus: 503 });
    expect(await state.recordRun(deps, claimed as JobRow, runId)).toBeNull();
    const ended = await readJob(first.id);
    expect(ended).toMatchObject({ status: "error", runpod_job_id: runId });
    expect(ended?.due_at).not.toBeNull(); // a cancel retry is due

    await configureEndpoint(s.endpoint, { runMs: 60_000, outage: false });
    await env.DB.prepare("UPDATE export_jobs SET due_at = '2000-01-01 00:00:00.000' WHERE id = ?")
      .bind(first.id)
      .run();
    await reconcile(deps, { budgetMs: 5_000 });
    expect((await readJob(first.id))?.due_at).toBeNull();
    const stateOfRun = await fetch(`${emulatorOrigin}/__emulator/jobs/${runId}`);
    expect(((await stateOfRun.json()) as { status: string }).status).toBe("CANCELLED");
  });

  it("refuses a supersede_key outside 1–200 characters, and writes nothing", async () => {
    const s = await setup("supersede-bad");
    for (const key of ["", "x".repeat(201), 7]) {
      const res = await postJson(
        "/exports",
        { ...overlayRequest(s.projectId, s.input), supersede_key: key },
        { vars: { RUNPOD_ENDPOINT_ID: s.endpoint } },
      );
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe(
        "invalid_request",
      );
    }
    const count = await env.DB.prepare("SELECT COUNT(*) AS n FROM export_jobs WHERE project_id = ?")
      .bind(s.projectId)
      .first<{ n: number }>();
    expect(count?.n).toBe(0);
  });
});

describe("reuse of identical exports", () => {
  it("copies the identical complete job's output to the new job's key: the same bytes, no RunPod call", async () => {
    const s = await setup("reuse");
    const bytes = randomBytes(3 * 1024 * 1024 + 17);
    const source = await renderedJob(s, bytes);
    const runsBefore = await runsAt(s.endpoint);

    const { job } = await create(s);
    // It takes its output from the identical complete job: never offered to the dispatcher.
    expect(job).toMatchObject({ status: "pending", reuse: true, follows: source.id, queue: null });
    expect(await dispatcherOf(s).known([job.id])).toEqual([]);
    const done = await consume(s, job.id);
    expect(done).toMatchObject({
      status: "complete",
      progress: 100,
      reused_from: source.id,
      output_video_key: plannedKey(job),
      attempt: 0,
      gpu_ms: 0,
      runpod_job_id: null,
    });
    expect(await runsAt(s.endpoint)).toBe(runsBefore);
    expect(await outputBytes(job.id)).toEqual(bytes);
    const events = await listEvents(env.DB, job.id);
    expect(events.map((event) => event.type)).toEqual(["created", "reused"]);
    expect(events[1]?.detail).toBe(`output of ${source.id}`);
    const head = await env.VIDEOS.head(plannedKey(job));
    expect(head?.customMetadata?.["reused-from"]).toBe(source.id);
  });

  it('"reuse": false, a changed input object (new ETag), and another project each run again', async () => {
    const s = await setup("no-reuse");
    await renderedJob(s, randomBytes(128));
    const before = await runsAt(s.endpoint);

    const { job: optedOut } = await create(s, { reuse: false });
    expect(optedOut.reuse).toBe(false);
    expect(await consume(s, optedOut.id)).toMatchObject({ status: "processing" });

    await putInputBytes(s.input, randomBytes(64)); // the user uploaded a new take: a new ETag
    const { job: changed } = await create(s);
    expect(changed.input_etag).not.toBe(optedOut.input_etag);
    expect(await consume(s, changed.id)).toMatchObject({ status: "processing" });

    expect(await runsAt(s.endpoint)).toBe(before + 2);
  });

  it("an identical export in another project with the same input key runs again", async () => {
    const s = await setup("reuse-project");
    await renderedJob(s, randomBytes(64));
    const other = freshProjectId();
    // The other project's job names the very same input object.
    const res = await postJson("/exports", overlayRequest(other, s.input), {
      vars: { RUNPOD_ENDPOINT_ID: s.endpoint },
    });
    expect(res.status).toBe(202);
    const job = ((await res.json()) as { job: Job }).job;
    expect(await consume(s, job.id)).toMatchObject({ status: "processing", reused_from: null });
  });

  it("copies an output larger than one put in parts, byte for byte", async () => {
    const from = `exports/copy-test/${crypto.randomUUID()}.mp4`;
    const to = `exports/copy-test/${crypto.randomUUID()}.mp4`;
    const bytes = randomBytes(11 * 1024 * 1024 + 5);
    await env.VIDEOS.put(from, bytes, { customMetadata: { a: "1" } });
    const copied = await copyObject(env.VIDEOS, from, to, {
      singlePutMax: 5 * 1024 * 1024,
      partBytes: 5 * 1024 * 1024,
    });
    expect(copied?.size).toBe(bytes.length);
    const back = await env.VIDEOS.get(to);
    expect(new Uint8Array(await (back as R2ObjectBody).arrayBuffer())).toEqual(bytes);
    expect(back?.customMetadata).toEqual({ a: "1" });
    expect(await copyObject(env.VIDEOS, `${from}.missing`, to)).toBeNull();
  });
});

describe("single flight", () => {
  it("a follower waits for its leader and reuses its output when it completes", async () => {
    const s = await setup("follow-complete");
    const { job: leader } = await create(s);
    const running = await consume(s, leader.id);
    expect(running.status).toBe("processing");

    const { job: follower } = await create(s);
    expect(follower).toMatchObject({ status: "pending", follows: leader.id, queue: null });
    const held = await consume(s, follower.id);
    expect(held).toMatchObject({ status: "pending", due_at: null, attempt: 0 });
    expect(await dispatcherOf(s).known([follower.id])).toEqual([]);
    expect(await runsAt(s.endpoint)).toBe(1);

    // The reconciler's audit (a sweep of every held job) leaves a follower of a live leader
    // alone — unknown to the dispatcher, it is not sent as lost — and never expires it.
    const before = (await sentMessagesFor(follower.id)).length;
    const spy = spyQueue();
    await dispatcherOf(s).setAuditCursor(0);
    // Waiting for longer than PENDING_MAX_AGE_S: an ordinary pending job would expire.
    await env.DB.prepare(
      `UPDATE export_jobs SET created_at = datetime('now', '-2 hours'),
                              pending_since = datetime('now', '-2 hours')
       WHERE id = ?`,
    )
      .bind(follower.id)
      .run();
    const report = await reconcile(
      consumerDeps({ ...consumerEnv(s), PENDING_MAX_AGE_S: "3600", EXPORT_QUEUE: spy.queue }),
      { budgetMs: 5_000 },
    );
    expect(report.heldAudited).toBeGreaterThanOrEqual(1);
    expect(spy.sendsOf(follower.id)).toEqual([]);
    expect(await readJob(follower.id)).toMatchObject({ status: "pending", error: null });

    const bytes = randomBytes(1024);
    await completeRun(running, bytes);
    // The leader's end sends the follower's message at once.
    await waitFor(
      async () => ((await sentMessagesFor(follower.id)).length > before ? true : undefined),
      "the follower's message",
    );
    const done = await consume(s, follower.id);
    expect(done).toMatchObject({ status: "complete", reused_from: leader.id, gpu_ms: 0 });
    expect(await outputBytes(follower.id)).toEqual(bytes);
    expect(await runsAt(s.endpoint)).toBe(1);
  });

  it("a follower of a cancelled leader runs as an ordinary job, without spending a retry", async () => {
    const s = await setup("follow-cancel");
    const { job: leader } = await create(s);
    await consume(s, leader.id);
    const { job: follower } = await create(s);
    await consume(s, follower.id);

    const cancel = await postJson(
      `/exports/${leader.id}/cancel`,
      {},
      {
        vars: { RUNPOD_ENDPOINT_ID: s.endpoint },
      },
    );
    expect(cancel.status).toBe(200);
    // Woken by the leader's end: due now (the reconciler's net), its message sent.
    const woken = await readJob(follower.id);
    expect(woken?.due_at).not.toBeNull();

    const running = await consume(s, follower.id);
    expect(running).toMatchObject({ status: "processing", follows: null, retry_count: 0 });
    expect(await runsAt(s.endpoint)).toBe(2);
  });

  it("a follower whose leader ended while its wake-up was lost is sent again by the reconciler", async () => {
    const s = await setup("follow-audit");
    const { job: leader } = await create(s);
    await consume(s, leader.id);
    const { job: follower } = await create(s);
    await consume(s, follower.id);
    // The leader ends behind the pipeline's back: no trigger-made due time, no message.
    await env.DB.prepare("UPDATE export_jobs SET followers = 0 WHERE id = ?").bind(leader.id).run();
    await postJson(
      `/exports/${leader.id}/cancel`,
      {},
      { vars: { RUNPOD_ENDPOINT_ID: s.endpoint } },
    );
    expect((await readJob(follower.id))?.due_at).toBeNull();
    const before = (await sentMessagesFor(follower.id)).length;
    // A new dispatcher's audit sweeps every held job: the follower's leader ended, so it is sent.
    await dispatcherOf(s).setAuditCursor(0);
    const report = await reconcile(consumerDeps(consumerEnv(s)), { budgetMs: 5_000 });
    expect(report.unheld).toBeGreaterThanOrEqual(1);
    await waitFor(
      async () => ((await sentMessagesFor(follower.id)).length > before ? true : undefined),
      "the follower's message",
    );
  });

  it("followers of a leader that ended without an output: the first leads, the others follow it", async () => {
    const s = await setup("follow-relead");
    const { job: leader } = await create(s);
    await consume(s, leader.id);
    const { job: a } = await create(s);
    const { job: b } = await create(s);
    expect([a.follows, b.follows]).toEqual([leader.id, leader.id]);
    await deliver([a.id, b.id], { env: consumerEnv(s) });

    await postJson(
      `/exports/${leader.id}/cancel`,
      {},
      { vars: { RUNPOD_ENDPOINT_ID: s.endpoint } },
    );
    // Both woken, delivered together: one runs, the other waits for it — never two runs.
    await deliver([a.id, b.id], { env: consumerEnv(s) });
    const [ra, rb] = [await readJob(a.id), await readJob(b.id)];
    const rows = [ra, rb] as JobRow[];
    const running = rows.filter((row) => row.status === "processing");
    const waiting = rows.filter((row) => row.status === "pending");
    expect(running).toHaveLength(1);
    expect(waiting).toHaveLength(1);
    expect(running[0]?.follows).toBeNull();
    expect(waiting[0]).toMatchObject({ follows: running[0]?.id, due_at: null });
    expect(await runsAt(s.endpoint)).toBe(2); // the leader's, and the new leader's
  });

  it("a follower whose leader ended after its batch read it is not held: it stays due", async () => {
    const s = await setup("follow-hold-race");
    const { job: leader } = await create(s);
    const { job: follower } = await create(s);
    expect(follower.follows).toBe(leader.id);
    await postJson(
      `/exports/${leader.id}/cancel`,
      {},
      { vars: { RUNPOD_ENDPOINT_ID: s.endpoint } },
    );
    // The batch saw the leader pending; its hold comes after the leader's end.
    const held = await state.holdJobs(consumerDeps(consumerEnv(s)), [follower.id]);
    expect(held).toEqual([]);
    expect((await readJob(follower.id))?.due_at).not.toBeNull();
  });

  it("a job identical to a follower that follows nobody supersedes it: only one renders", async () => {
    const s = await setup("supersede-unfollowed");
    const { job: leader } = await create(s, { supersede_key: "reel-20" });
    const { job: follower } = await create(s, { supersede_key: "reel-20" });
    expect(follower.follows).toBe(leader.id);
    await postJson(
      `/exports/${leader.id}/cancel`,
      {},
      { vars: { RUNPOD_ENDPOINT_ID: s.endpoint } },
    );
    // The follower is not released yet; a new identical export under the key follows nobody.
    const { job: fresh } = await create(s, { supersede_key: "reel-20" });
    expect(fresh.follows).toBeNull();
    expect(await readJob(follower.id)).toMatchObject({
      status: "error",
      error: `superseded by ${fresh.id}`,
    });
  });

  it('"reuse": false never follows', async () => {
    const s = await setup("follow-opt-out");
    const { job: leader } = await create(s);
    const { job: own } = await create(s, { reuse: false });
    expect(own.follows).toBeNull();
    expect(await consume(s, own.id)).toMatchObject({ status: "processing" });
    void leader;
  });
});
