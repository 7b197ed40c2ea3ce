// A job's timeline (migration 0005: each change writes its event in the same statement) through
// GET /exports/{id}/events, what those events cost in D1's rows written, and the finished export's
// file through GET /exports/{id}/output (Range, ETag).
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { consumerDeps } from "../../consumer/process-jobs.ts";
import { reconcile } from "../../consumer/reconciler.ts";
import { JOB_SQL } from "../../shared/sql/jobs/catalog.ts";
import { insertBinds } from "../../shared/sql/jobs/insert.ts";
import type { JobRow } from "../../shared/sql/jobs/row.ts";
import * as repo from "../../shared/sql/jobs/transitions.ts";
import { seconds } from "../../shared/sql/time.ts";
import {
  ADMIN_TOKEN,
  callbackPath,
  configureEndpoint,
  deliver,
  freshProjectId,
  insertPendingJob,
  plannedKey,
  postJson,
  processingJob,
  producerFetch,
  putOutput,
  readJob,
  uniqueEndpoint,
} from "./helpers.ts";

interface Event {
  at: string;
  attempt: number;
  type: string;
  runpod_job_id?: string;
  detail?: string;
}

async function eventsOf(jobId: string): Promise<Event[]> {
  const res = await producerFetch(`/exports/${jobId}/events`);
  expect(res.status).toBe(200);
  return ((await res.json()) as { events: Event[] }).events;
}

const typesOf = async (jobId: string) => (await eventsOf(jobId)).map((event) => event.type);

async function eventRows(jobId: string): Promise<number> {
  const row = await env.DB.prepare("SELECT COUNT(*) AS n FROM export_job_events WHERE job_id = ?")
    .bind(jobId)
    .first<{ n: number }>();
  return row?.n ?? 0;
}

/** RunPod's webhook for one attempt; re-pends wait no delay. */
async function webhook(jobId: string, attempt: number, body: unknown) {
  return postJson(await callbackPath("webhook", jobId, attempt), body, {
    token: null,
    vars: { RETRY_BASE_DELAY_S: "0" },
  });
}

async function progress(jobId: string, attempt: number, value: number) {
  const res = await postJson(
    await callbackPath("progress", jobId, attempt),
    { progress: value },
    { token: null },
  );
  expect(res.status).toBe(204);
}

/** The test bindings against the test's own RunPod endpoint. */
const envFor = (endpoint: string) => ({ ...env, RUNPOD_ENDPOINT_ID: endpoint });

async function deadLetter(jobId: string): Promise<string> {
  const id = `dl-${crypto.randomUUID()}`;
  await deliver([{ id, body: { job_id: jobId } }], { queue: "export-jobs-dlq", attempts: 11 });
  return id;
}

/** A job whose run failed for the fourth time: `error`, retry_count 4. */
async function failedJob(): Promise<JobRow> {
  const job = await processingJob({ retryCount: 3, runId: "run-last" });
  const res = await webhook(job.id, job.attempt, { id: "run-last", status: "FAILED", error: "x" });
  expect(await res.json()).toMatchObject({ outcome: "failed" });
  return job;
}

describe("GET /exports/{id}/events", () => {
  it("tells one job's life: created → claimed → submitted → progress 25, 50 → completed", async () => {
    const endpoint = uniqueEndpoint("timeline");
    // The run is accepted and keeps running; its own webhooks and progress are not sent.
    await configureEndpoint(endpoint, { runMs: 60_000, progressSteps: [], dropWebhookRate: 1 });
    const job = await insertPendingJob();
    // The insert trigger fires for a row inserted by plain SQL too.
    expect(await typesOf(job.id)).toEqual(["created"]);

    const result = await deliver([job.id], { env: envFor(endpoint) });
    expect(result.retryMessages).toEqual([]);
    const submitted = await readJob(job.id);
    expect(submitted).toMatchObject({ status: "processing", attempt: 1 });
    const runId = submitted?.runpod_job_id as string;
    expect(runId).toMatch(/.+/);

    // At most one event per 25 points: 25, 30, 40, 49 give one; 50 the next. (D1 records 25;
    // 30, 40 and 49 are published live only: progress-writes.test.ts.)
    for (const value of [25, 30, 40, 49]) await progress(job.id, 1, value);
    expect((await readJob(job.id))?.progress).toBe(25);
    expect(await typesOf(job.id)).toEqual(["created", "claimed", "submitted", "progress"]);
    await progress(job.id, 1, 50);

    await putOutput(job);
    const done = await webhook(job.id, 1, { id: runId, status: "COMPLETED", output: {} });
    expect(await done.json()).toEqual({ applied: true, outcome: "completed" });

    const events = await eventsOf(job.id);
    expect(events.map((event) => event.type)).toEqual([
      "created",
      "claimed",
      "submitted",
      "progress",
      "progress",
      "completed",
    ]);
    expect(events.map((event) => event.attempt)).toEqual([0, 1, 1, 1, 1, 1]);
    const [created, claimed, sent, p25, p50, completed] = events;
    expect(created?.runpod_job_id).toBeUndefined();
    expect(claimed?.runpod_job_id).toBeUndefined();
    expect(sent?.runpod_job_id).toBe(runId);
    expect(completed?.runpod_job_id).toBe(runId);
    expect([p25?.detail, p50?.detail]).toEqual(["25", "50"]);
    // Oldest first.
    const times = events.map((event) => event.at);
    expect([...times].sort()).toEqual(times);
    for (const event of events) expect(event.at).toMatch(/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}/);
  });

  it("a submission RunPod answers 500: submit_failed with the error", async () => {
    const endpoint = uniqueEndpoint("tl-submit");
    await configureEndpoint(endpoint, { runScript: [500] });
    const job = await insertPendingJob();
    await deliver([job.id], { env: envFor(endpoint) });
    expect(await readJob(job.id)).toMatchObject({ status: "pending", retry_count: 1 });
    const events = await eventsOf(job.id);
    expect(events.map((event) => event.type)).toEqual(["created", "claimed", "submit_failed"]);
    expect(events[2]).toMatchObject({ attempt: 1 });
    expect(events[2]?.detail).toMatch(/HTTP 500/);
    expect(events[2]?.detail).toBe((await readJob(job.id))?.error);
  });

  it("a submission RunPod rate-limits (429): released, retry_count unchanged", async () => {
    const endpoint = uniqueEndpoint("tl-429");
    await configureEndpoint(endpoint, { runScript: [429] });
    const job = await insertPendingJob();
    await deliver([job.id], { env: envFor(endpoint) });
    expect(await readJob(job.id)).toMatchObject({ status: "pending", retry_count: 0 });
    const events = await eventsOf(job.id);
    expect(events.map((event) => event.type)).toEqual(["created", "claimed", "released"]);
    expect(events[2]).toMatchObject({ attempt: 1, detail: expect.stringMatching(/not the job/) });
  });

  it("a FAILED run: failed with RunPod's error and the run; stale news of that attempt writes nothing", async () => {
    const job = await processingJob({ runId: "run-bad" });
    await putOutput(job);
    const res = await webhook(job.id, 1, { id: "run-bad", status: "FAILED", error: "CUDA OOM" });
    expect(await res.json()).toEqual({ applied: true, outcome: "retrying" });
    expect(await typesOf(job.id)).toEqual(["created", "claimed", "submitted", "failed"]);
    expect((await eventsOf(job.id))[3]).toMatchObject({
      attempt: 1,
      runpod_job_id: "run-bad",
      detail: "RunPod FAILED: CUDA OOM",
    });

    // Attempt 2 runs; news of attempt 1 (a repeat, even a COMPLETED with its output in R2) and
    // progress of attempt 1 change nothing, so they write no event.
    const [claimed] = await repo.claimJobs(env.DB, [job.id], 120);
    expect(claimed?.attempt).toBe(2);
    await repo.recordRun(env.DB, job.id, 2, "run-good", 300);
    const before = await readJob(job.id);
    const count = await eventRows(job.id);
    expect(count).toBe(6);
    for (const stale of [
      { id: "run-bad", status: "FAILED", error: "again" },
      { id: "run-bad", status: "COMPLETED" },
      { id: "run-good", status: "COMPLETED" },
      { id: "run-good", status: "CANCELLED" },
    ]) {
      const stalePost = await webhook(job.id, 1, stale);
      expect(await stalePost.json()).toEqual({ applied: false, outcome: "unchanged" });
    }
    // Progress of the failed attempt 1 (the job is at attempt 2 now): 409, its run should stop.
    const staleProgress = await postJson(
      await callbackPath("progress", job.id, 1),
      { progress: 80 },
      { token: null },
    );
    expect(staleProgress.status).toBe(409);
    // The right attempt, another run's news.
    const other = await webhook(job.id, 2, { id: "run-other", status: "COMPLETED" });
    expect(await other.json()).toEqual({ applied: false, outcome: "unchanged" });
    expect(await readJob(job.id)).toEqual(before);
    expect(await eventRows(job.id)).toBe(count);
    expect(await typesOf(job.id)).toEqual([
      "created",
      "claimed",
      "submitted",
      "failed",
      "claimed",
      "submitted",
    ]);
    expect((await eventsOf(job.id)).slice(4).map((event) => event.attempt)).toEqual([2, 2]);
  });

  it("a user's cancel: cancelled, once (a second cancel and RunPod's /cancel write nothing)", async () => {
    const job = await processingJob({ runId: "run-to-cancel" });
    expect((await postJson(`/exports/${job.id}/cancel`, {})).status).toBe(200);
    await postJson(`/exports/${job.id}/cancel`, {});
    const events = await eventsOf(job.id);
    expect(events.map((event) => event.type)).toEqual([
      "created",
      "claimed",
      "submitted",
      "cancelled",
    ]);
    expect(events[3]).toMatchObject({ attempt: 1, runpod_job_id: "run-to-cancel" });

    const pending = await insertPendingJob();
    expect((await postJson(`/exports/${pending.id}/cancel`, {})).status).toBe(200);
    expect(await typesOf(pending.id)).toEqual(["created", "cancelled"]);
  });

  it("a dead letter (dead_lettered, the job unchanged) and its replay (replayed)", async () => {
    const job = await insertPendingJob();
    const letterId = await deadLetter(job.id);
    expect(await readJob(job.id)).toEqual(job);
    expect(await typesOf(job.id)).toEqual(["created", "dead_lettered"]);
    expect((await eventsOf(job.id))[1]?.detail).toContain(letterId);

    const replay = await postJson(`/dead-letters/${letterId}/replay`, {}, { token: ADMIN_TOKEN });
    expect(replay.status).toBe(202);
    expect(await typesOf(job.id)).toEqual(["created", "dead_lettered", "replayed"]);
  });

  // The event is written by a trigger on the dead letter's insert: a redelivered DLQ message
  // (ON CONFLICT DO NOTHING) writes none, even after the job changed.
  it("a redelivered dead letter writes no second event", async () => {
    const job = await insertPendingJob();
    const letterId = `dl-${crypto.randomUUID()}`;
    const redeliver = async () => {
      await deliver([{ id: letterId, body: { job_id: job.id } }], {
        queue: "export-jobs-dlq",
        attempts: 11,
      });
    };
    await redeliver();
    expect((await postJson(`/exports/${job.id}/cancel`, {})).status).toBe(200);
    await redeliver();
    expect(await typesOf(job.id)).toEqual(["created", "dead_lettered", "cancelled"]);
  });

  // Events that change no row are told apart by `ref` (the message id) in the primary key.
  it("two different dead letters of an unchanged job are two events", async () => {
    const job = await insertPendingJob();
    await deadLetter(job.id);
    await deadLetter(job.id);
    expect(await typesOf(job.id)).toEqual(["created", "dead_lettered", "dead_lettered"]);
  });

  it("an operator's retry of a failed job: retried", async () => {
    const job = await failedJob();
    const res = await postJson("/admin/jobs/retry", { job_ids: [job.id] }, { token: ADMIN_TOKEN });
    expect(await res.json()).toEqual({ retried: 1, job_ids: [job.id] });
    const events = await eventsOf(job.id);
    expect(events.map((event) => event.type)).toEqual([
      "created",
      "claimed",
      "submitted",
      "failed",
      "retried",
    ]);
    expect(events[3]?.detail).toBe("RunPod FAILED: x");
    expect(events[4]?.attempt).toBe(1);
    // A second retry finds no error job: nothing changes, nothing is written.
    await postJson("/admin/jobs/retry", { job_ids: [job.id] }, { token: ADMIN_TOKEN });
    expect(await eventRows(job.id)).toBe(5);
  });

  it("an expiry: expired with the reason; the reconciler's leases write nothing", async () => {
    const endpoint = uniqueEndpoint("tl-expire");
    const old = await insertPendingJob();
    const ago = "strftime('%Y-%m-%d %H:%M:%f', 'now', '-120 seconds')";
    // Moving the clock by SQL changes no version: no event.
    await env.DB.prepare(
      `UPDATE export_jobs SET created_at = ${ago}, pending_since = ${ago} WHERE id = ?`,
    )
      .bind(old.id)
      .run();
    const report = await reconcile(
      consumerDeps({ ...env, RUNPOD_ENDPOINT_ID: endpoint, PENDING_MAX_AGE_S: "60" }),
    );
    expect(report.expired).toBeGreaterThanOrEqual(1);
    expect((await readJob(old.id))?.status).toBe("error");
    const events = await eventsOf(old.id);
    expect(events.map((event) => event.type)).toEqual(["created", "expired"]);
    expect(events[1]?.detail).toMatch(/^expired: not dispatched within 60s/);
  });

  it("the reconciler's leases (a lost message re-enqueued, a run polled with no news) write nothing", async () => {
    const endpoint = uniqueEndpoint("tl-lease");
    await configureEndpoint(endpoint, { runMs: 60_000, progressSteps: [], dropWebhookRate: 1 });
    const lost = await insertPendingJob();
    const running = await insertPendingJob();
    await deliver([running.id], { env: envFor(endpoint) });
    const submitted = await readJob(running.id);
    expect(submitted?.status).toBe("processing");
    await env.DB.prepare(
      `UPDATE export_jobs SET due_at = datetime('now', '-1 seconds')
       WHERE id IN (SELECT value FROM json_each(?))`,
    )
      .bind(JSON.stringify([lost.id, running.id]))
      .run();
    const report = await reconcile(
      consumerDeps({
        ...env,
        RUNPOD_ENDPOINT_ID: endpoint,
        PENDING_GRACE_S: "0",
        POLL_AFTER_S: "0",
      }),
    );
    expect(report.failedSteps).toEqual([]);
    // Both were leased (their version moved), neither changed state.
    const [lostAfter, runningAfter] = [await readJob(lost.id), await readJob(running.id)];
    expect(lostAfter?.version).toBeGreaterThan(lost.version);
    expect(lostAfter?.status).toBe("pending");
    expect(runningAfter?.version).toBeGreaterThan(submitted?.version as number);
    expect(runningAfter).toMatchObject({ status: "processing", progress: 0 });
    expect(await typesOf(lost.id)).toEqual(["created"]);
    expect(await typesOf(running.id)).toEqual(["created", "claimed", "submitted"]);
  });

  it("answers 404 for an unknown job and 401 without the API token", async () => {
    const unknown = await producerFetch(`/exports/${crypto.randomUUID()}/events`);
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ error: { code: "not_found" } });
    const job = await insertPendingJob();
    const anonymous = await producerFetch(`/exports/${job.id}/events`, { token: null });
    expect(anonymous.status).toBe(401);
    const wrong = await producerFetch(`/exports/${job.id}/events`, { token: "not-the-token" });
    expect(wrong.status).toBe(401);
  });
});

// ---- what the timeline costs ----

describe("rows written by the timeline", () => {
  it("one event row per event statement, none for a progress below the next 25", async () => {
    const projectId = freshProjectId();
    const id = crypto.randomUUID();
    const runId = `run-${crypto.randomUUID()}`;
    const key = `exports/${projectId}/${id}.mp4`;
    const run = async (sql: string, ...binds: unknown[]) => {
      const result = await env.DB.prepare(sql)
        .bind(...binds)
        .run();
      return { changed: result.meta.changes, written: result.meta.rows_written };
    };
    const statements: [string, () => Promise<{ changed: number; written: number }>][] = [
      [
        "insert",
        () =>
          run(
            JOB_SQL.insert,
            ...insertBinds({
              id,
              project_id: projectId,
              type: "overlay",
              input_video_key: `uploads/${projectId}/in.mp4`,
              params: { highlight_regions: [{ start_time: 0, end_time: 1 }] },
            }),
          ),
      ],
      ["claim", () => run(JOB_SQL.claim, seconds(120), "token", "endpoint", JSON.stringify([id]))],
      ["recordRun", () => run(JOB_SQL.recordRun, runId, seconds(300), id, 1)],
      ["progress 50", () => run(JOB_SQL.progress, 50, seconds(300), 50, id, 1, 50)],
      ["completeRecordedRun", () => run(JOB_SQL.completeRecordedRun, 1000, 10, key, id, 1, runId)],
    ];
    const written: Record<string, number> = {};
    for (const [name, statement] of statements) {
      const before = await eventRows(id);
      const result = await statement();
      expect(result.changed, name).toBeGreaterThanOrEqual(1);
      expect(await eventRows(id), name).toBe(before + 1);
      written[name] = result.written;
    }
    expect(await eventRows(id)).toBe(5);
    expect(await typesOf(id)).toEqual(["created", "claimed", "submitted", "progress", "completed"]);

    // The same progress statement without an event: the difference is one event row's cost.
    const other = await processingJob({ runId: "run-quiet" });
    const atBoundary = await run(JOB_SQL.progress, 25, seconds(300), 25, other.id, 1, 25);
    const rowsBefore = await eventRows(other.id);
    const belowNext = await run(JOB_SQL.progress, 40, seconds(300), 40, other.id, 1, 40);
    expect(belowNext.changed).toBe(1);
    expect(await eventRows(other.id)).toBe(rowsBefore);
    expect((await readJob(other.id))?.progress).toBe(40);
    written["progress 25 (event)"] = atBoundary.written;
    written["progress 40 (no event)"] = belowNext.written;

    console.log(
      `rows_written per statement (D1 meta): ${JSON.stringify(written)}; ` +
        `an event row costs ${atBoundary.written - belowNext.written} (progress with - without event)`,
    );
  });
});

// ---- GET /exports/{id}/output ----

const SIZE = 10_000;
const content = Uint8Array.from({ length: SIZE }, (_, i) => (i * 7 + 3) % 256);

/** A job completed through its webhook, with `content` at its planned key. */
async function completedJob(): Promise<JobRow> {
  const job = await processingJob({ runId: "run-out" });
  await putOutput(job, plannedKey(job), content);
  const res = await webhook(job.id, 1, { id: "run-out", status: "COMPLETED", output: {} });
  expect(await res.json()).toEqual({ applied: true, outcome: "completed" });
  return job;
}

const bytesOf = async (res: Response) => new Uint8Array(await res.arrayBuffer());

describe("GET /exports/{id}/output", () => {
  it("streams the whole file with Content-Type, Content-Length, ETag and Accept-Ranges", async () => {
    const job = await completedJob();
    const res = await producerFetch(`/exports/${job.id}/output`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("video/mp4");
    expect(res.headers.get("content-length")).toBe(String(SIZE));
    expect(res.headers.get("accept-ranges")).toBe("bytes");
    const head = await env.VIDEOS.head(plannedKey(job));
    expect(res.headers.get("etag")).toBe(head?.httpEtag);
    expect(res.headers.get("etag")).toMatch(/^"/);
    expect(await bytesOf(res)).toEqual(content);
  });

  it("answers byte ranges with 206 and Content-Range, and an unsatisfiable one with 416", async () => {
    const job = await completedJob();
    const get = (range: string) =>
      producerFetch(`/exports/${job.id}/output`, { headers: { range } });

    const first = await get("bytes=0-99");
    expect(first.status).toBe(206);
    expect(first.headers.get("content-range")).toBe(`bytes 0-99/${SIZE}`);
    expect(first.headers.get("content-length")).toBe("100");
    expect(first.headers.get("accept-ranges")).toBe("bytes");
    expect(await bytesOf(first)).toEqual(content.slice(0, 100));

    const tail = await get("bytes=9990-");
    expect(tail.status).toBe(206);
    expect(tail.headers.get("content-range")).toBe(`bytes 9990-9999/${SIZE}`);
    expect(await bytesOf(tail)).toEqual(content.slice(9990));

    const suffix = await get("bytes=-5");
    expect(suffix.status).toBe(206);
    expect(suffix.headers.get("content-range")).toBe(`bytes 9995-9999/${SIZE}`);
    expect(await bytesOf(suffix)).toEqual(content.slice(SIZE - 5));

    const outside = await get("bytes=20000-");
    expect(outside.status).toBe(416);
    expect(outside.headers.get("content-range")).toBe(`bytes */${SIZE}`);
    expect(await outside.json()).toMatchObject({ error: { code: "range_not_satisfiable" } });
  });

  it("answers If-None-Match with the current ETag with 304 and no body", async () => {
    const job = await completedJob();
    const etag = (await producerFetch(`/exports/${job.id}/output`)).headers.get("etag") as string;
    const res = await producerFetch(`/exports/${job.id}/output`, {
      headers: { "if-none-match": etag },
    });
    expect(res.status).toBe(304);
    expect(res.headers.get("etag")).toBe(etag);
    expect(await res.text()).toBe("");
    const stale = await producerFetch(`/exports/${job.id}/output`, {
      headers: { "if-none-match": '"not-the-etag"' },
    });
    expect(stale.status).toBe(200);
    expect(await bytesOf(stale)).toEqual(content);
  });

  it("409 not_complete for a pending job, 404 output_missing when the object is gone, 404 not_found, 401", async () => {
    const pending = await insertPendingJob();
    const notDone = await producerFetch(`/exports/${pending.id}/output`);
    expect(notDone.status).toBe(409);
    expect(await notDone.json()).toMatchObject({ error: { code: "not_complete" } });

    const job = await completedJob();
    await env.VIDEOS.delete(plannedKey(job));
    const gone = await producerFetch(`/exports/${job.id}/output`);
    expect(gone.status).toBe(404);
    expect(await gone.json()).toMatchObject({ error: { code: "output_missing" } });

    const unknown = await producerFetch(`/exports/${crypto.randomUUID()}/output`);
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ error: { code: "not_found" } });

    const anonymous = await producerFetch(`/exports/${job.id}/output`, { token: null });
    expect(anonymous.status).toBe(401);
  });
});
