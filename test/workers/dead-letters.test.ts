import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import {
  ADMIN_TOKEN,
  API_TOKEN,
  callbackPath,
  deliver,
  insertPendingJob,
  postJson,
  processingJob,
  producerFetch,
  readJob,
  sentMessagesFor,
  waitFor,
} from "./helpers.ts";

interface DeadLetter {
  id: string;
  queue: string;
  reason: string;
  body: unknown;
  attempts: number;
  job_id: string | null;
  job_status: string | null;
  replayed_at: string | null;
}

let counter = 0;
function dlqMessage(body: unknown, attempts = 11) {
  counter += 1;
  return { id: `dlq-${crypto.randomUUID()}-${counter}`, timestamp: new Date(), attempts, body };
}

const admin = (path: string, init: RequestInit = {}) =>
  producerFetch(path, { ...init, token: ADMIN_TOKEN });

async function deadLetter(id: string): Promise<{ dead_letter: DeadLetter; job: unknown }> {
  const res = await admin(`/dead-letters/${id}`);
  expect(res.status).toBe(200);
  return (await res.json()) as { dead_letter: DeadLetter; job: unknown };
}

describe("dead-letter capture (consumer of export-jobs-dlq)", () => {
  it("records each message with the job's state, leaves the job as it is, and is idempotent", async () => {
    const pending = await insertPendingJob();
    const running = await processingJob({ runId: "run-live" });
    const a = dlqMessage({ job_id: pending.id });
    const b = dlqMessage({ job_id: running.id });
    const result = await deliver([a, b], { queue: "export-jobs-dlq" });
    expect(result.explicitAcks.sort()).toEqual([a.id, b.id].sort());

    const first = await deadLetter(a.id);
    expect(first.dead_letter).toMatchObject({
      id: a.id,
      queue: "export-jobs-dlq",
      reason: "dead_lettered",
      body: { job_id: pending.id },
      attempts: 11,
      job_id: pending.id,
      job_status: "pending",
      replayed_at: null,
    });
    // A dead letter is no verdict on the job: a pending one stays pending, for the reconciler to
    // re-enqueue (and, after PENDING_MAX_AGE_S, to expire).
    expect(await readJob(pending.id)).toEqual(pending);
    expect(first.job).toMatchObject({ id: pending.id, status: "pending", error: null });
    // A job with a live run is left alone.
    expect((await deadLetter(b.id)).dead_letter.job_status).toBe("processing");
    expect(await readJob(running.id)).toEqual(running);

    // The same message delivered again records nothing new.
    await deliver([{ ...a, attempts: 12 }], { queue: "export-jobs-dlq" });
    expect((await deadLetter(a.id)).dead_letter.attempts).toBe(11);
    const count = await env.DB.prepare("SELECT COUNT(*) AS n FROM dead_letters WHERE id = ?")
      .bind(a.id)
      .first<{ n: number }>();
    expect(count?.n).toBe(1);
  });

  it("records unparseable messages of export-jobs the same way and acks them", async () => {
    const poison = dlqMessage("not a job", 1);
    const result = await deliver([poison]);
    expect(result.explicitAcks).toEqual([poison.id]);
    expect(result.retryMessages).toEqual([]);
    expect((await deadLetter(poison.id)).dead_letter).toMatchObject({
      queue: "export-jobs",
      reason: "unparseable",
      body: "not a job",
      job_id: null,
      job_status: null,
    });
  });
});

describe("dead-letter API (ADMIN_TOKEN)", () => {
  it("requires the admin token: no token and the API token get 401", async () => {
    for (const token of [null, API_TOKEN, "nope"]) {
      for (const [method, path] of [
        ["GET", "/dead-letters"],
        ["GET", "/dead-letters/x"],
        ["POST", "/dead-letters/x/replay"],
        ["DELETE", "/dead-letters/x"],
        ["GET", "/stats"],
        ["GET", "/admin/jobs"],
      ] as const) {
        const res = await producerFetch(path, { method, token });
        expect(res.status, `${method} ${path}`).toBe(401);
      }
    }
  });

  it("lists newest first with cursor paging and shows one with its job", async () => {
    const jobs = [await insertPendingJob(), await insertPendingJob(), await insertPendingJob()];
    const messages = jobs.map((job) => dlqMessage({ job_id: job.id }));
    for (const message of messages) await deliver([message], { queue: "export-jobs-dlq" });

    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const query: string = `/dead-letters?limit=2${cursor ? `&cursor=${cursor}` : ""}`;
      const res = await admin(query);
      const page = (await res.json()) as { dead_letters: DeadLetter[]; next_cursor: string | null };
      seen.push(...page.dead_letters.map((d) => d.id));
      cursor = page.next_cursor;
    } while (cursor);
    const ours = seen.filter((id) => messages.some((m) => m.id === id));
    expect(ours).toEqual(messages.map((m) => m.id).reverse());

    const shown = await deadLetter(messages[0]?.id as string);
    expect(shown.job).toMatchObject({ id: jobs[0]?.id, status: "pending" });
    expect((await admin("/dead-letters/nope")).status).toBe(404);
    expect((await admin("/dead-letters?limit=0")).status).toBe(400);
    expect((await admin("/dead-letters?cursor=zzz")).status).toBe(400);
  });

  it("replays a pending job's dead letter: retry budget restored, re-enqueued, dead letter marked", async () => {
    const job = await insertPendingJob();
    await env.DB.prepare("UPDATE export_jobs SET retry_count = 2, attempt = 2 WHERE id = ?")
      .bind(job.id)
      .run();
    const message = dlqMessage({ job_id: job.id });
    await deliver([message], { queue: "export-jobs-dlq" });
    expect((await readJob(job.id))?.status).toBe("pending");

    const res = await admin(`/dead-letters/${message.id}/replay`, { method: "POST" });
    expect(res.status).toBe(202);
    const body = (await res.json()) as { dead_letter: DeadLetter; job: { status: string } };
    expect(body.dead_letter.replayed_at).not.toBeNull();
    expect(body.job).toMatchObject({ id: job.id, status: "pending", retry_count: 0 });
    const row = await readJob(job.id);
    // retry_count is reset, the attempt never: the next claim takes attempt 3.
    expect(row).toMatchObject({
      status: "pending",
      retry_count: 0,
      attempt: 2,
      error: null,
      runpod_job_id: null,
    });
    expect(row?.version).toBe(job.version + 1);
    expect(row?.pending_since).not.toBeNull(); // wanted again from now on (PENDING_MAX_AGE_S)
    await waitFor(
      async () => ((await sentMessagesFor(job.id)).length ? true : undefined),
      "replay",
    );
    expect(await sentMessagesFor(job.id)).toEqual([{ job_id: job.id }]);

    // Twice is a 409, and a late redelivery of the old dead letter does not undo the replay.
    const again = await admin(`/dead-letters/${message.id}/replay`, { method: "POST" });
    expect(again.status).toBe(409);
    expect(((await again.json()) as { error: { code: string } }).error.code).toBe(
      "already_replayed",
    );
    await deliver([message], { queue: "export-jobs-dlq" });
    expect(await readJob(job.id)).toEqual(row);
  });

  it("replays the dead letter of a job that ended in a failure (not cancelled)", async () => {
    const job = await processingJob({ retryCount: 3, runId: "run-failed" });
    const message = dlqMessage({ job_id: job.id });
    await deliver([message], { queue: "export-jobs-dlq" });
    // The job then ends `error` by the seed's CASE: its fourth failure.
    const failed = await postJson(
      await callbackPath("webhook", job.id, job.attempt),
      { id: "run-failed", status: "FAILED", error: "boom" },
      { token: null },
    );
    expect(await failed.json()).toEqual({ applied: true, outcome: "failed" });
    expect(await readJob(job.id)).toMatchObject({ status: "error", retry_count: 4 });

    const res = await admin(`/dead-letters/${message.id}/replay`, { method: "POST" });
    expect(res.status).toBe(202);
    expect(await readJob(job.id)).toMatchObject({
      status: "pending",
      retry_count: 0,
      attempt: job.attempt,
      error: null,
      runpod_job_id: null,
      started_at: null,
      completed_at: null,
      progress: 0,
    });
    await waitFor(
      async () => ((await sentMessagesFor(job.id)).length ? true : undefined),
      "replay",
    );
    expect(await sentMessagesFor(job.id)).toEqual([{ job_id: job.id }]);
  });

  it("refuses to replay a completed, running or cancelled job or a poison message (409), 404 unknown", async () => {
    const done = await processingJob({ runId: "run-done" });
    const doneLetter = dlqMessage({ job_id: done.id });
    await deliver([doneLetter], { queue: "export-jobs-dlq" });
    await env.DB.prepare("UPDATE export_jobs SET status = 'complete' WHERE id = ?")
      .bind(done.id)
      .run();
    const running = await processingJob({ runId: "run-busy" });
    const runningLetter = dlqMessage({ job_id: running.id });
    await deliver([runningLetter], { queue: "export-jobs-dlq" });
    const cancelled = await insertPendingJob();
    const cancelledLetter = dlqMessage({ job_id: cancelled.id });
    await deliver([cancelledLetter], { queue: "export-jobs-dlq" });
    expect((await postJson(`/exports/${cancelled.id}/cancel`, {})).status).toBe(200);
    const cancelledRow = await readJob(cancelled.id);
    expect(cancelledRow).toMatchObject({ status: "error", error: "cancelled" });
    const poison = dlqMessage({ nope: true });
    await deliver([poison], { queue: "export-jobs-dlq" });

    for (const [id, code] of [
      [doneLetter.id, "job_complete"],
      [runningLetter.id, "job_active"],
      [cancelledLetter.id, "job_cancelled"],
      [poison.id, "not_replayable"],
    ] as const) {
      const res = await admin(`/dead-letters/${id}/replay`, { method: "POST" });
      expect(res.status, code).toBe(409);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe(code);
      expect((await deadLetter(id)).dead_letter.replayed_at).toBeNull();
    }
    expect((await readJob(done.id))?.status).toBe("complete");
    expect(await readJob(running.id)).toEqual(running);
    expect(await readJob(cancelled.id)).toEqual(cancelledRow);
    expect(await sentMessagesFor(cancelled.id)).toEqual([]);
    expect((await admin("/dead-letters/unknown/replay", { method: "POST" })).status).toBe(404);
  });

  it("deletes a dead letter (204, then 404)", async () => {
    const message = dlqMessage({ job_id: (await insertPendingJob()).id });
    await deliver([message], { queue: "export-jobs-dlq" });
    expect((await admin(`/dead-letters/${message.id}`, { method: "DELETE" })).status).toBe(204);
    expect((await admin(`/dead-letters/${message.id}`)).status).toBe(404);
    expect((await admin(`/dead-letters/${message.id}`, { method: "DELETE" })).status).toBe(404);
  });
});

describe("GET /stats and GET /admin/jobs", () => {
  it("counts jobs by status, the oldest pending, processing without a run, dead letters", async () => {
    const before = (await (await admin("/stats")).json()) as {
      jobs: Record<string, number>;
      processing_without_run: number;
      dead_letters: { total: number; not_replayed: number };
      oldest_pending_age_s: number | null;
    };
    await insertPendingJob();
    await processingJob({ runId: null });
    await deliver([dlqMessage({ nope: 1 })], { queue: "export-jobs-dlq" });
    const after = (await (await admin("/stats")).json()) as typeof before;
    expect(after.jobs.pending).toBeGreaterThanOrEqual((before.jobs.pending ?? 0) + 1);
    expect(after.processing_without_run).toBeGreaterThanOrEqual(before.processing_without_run + 1);
    expect(after.dead_letters.total).toBeGreaterThanOrEqual(before.dead_letters.total + 1);
    expect(after.dead_letters.not_replayed).toBeGreaterThanOrEqual(
      before.dead_letters.not_replayed + 1,
    );
    expect(after.oldest_pending_age_s).toEqual(expect.any(Number));
    expect(Object.keys(after.jobs).sort()).toEqual(["complete", "error", "pending", "processing"]);
  });

  it("lists jobs across projects for operators, filtered by project and status", async () => {
    const job = await processingJob({ runId: "run-admin" });
    const res = await admin(`/admin/jobs?project_id=${job.project_id}&status=processing`);
    expect(res.status).toBe(200);
    const page = (await res.json()) as { jobs: { id: string }[] };
    expect(page.jobs.map((j) => j.id)).toEqual([job.id]);
    expect((await admin("/admin/jobs?status=done")).status).toBe(400);
  });
});

describe("POST /exports with Idempotency-Key", () => {
  async function create(key: string, body: unknown) {
    return postJson("/exports", body, { headers: { "idempotency-key": key } });
  }

  it("returns the first job for the same key and body, also when two requests race", async () => {
    const { freshProjectId, overlayRequest, putInput, countJobs } = await import("./helpers.ts");
    const projectId = freshProjectId();
    await putInput("uploads/idem.mp4");
    const body = overlayRequest(projectId, "uploads/idem.mp4");
    const key = `key-${crypto.randomUUID()}`;

    const [r1, r2] = await Promise.all([create(key, body), create(key, body)]);
    const statuses = [r1.status, r2.status].sort();
    expect(statuses).toEqual([200, 202]);
    const id1 = ((await r1.json()) as { job: { id: string } }).job.id;
    const id2 = ((await r2.json()) as { job: { id: string } }).job.id;
    expect(id1).toBe(id2);

    // Same body with its keys in another order is the same request.
    const reordered = {
      params: body.params,
      input_video_key: body.input_video_key,
      type: body.type,
      project_id: projectId,
    };
    const r3 = await create(key, reordered);
    expect(r3.status).toBe(200);
    expect(r3.headers.get("location")).toBe(`/exports/${id1}`);
    expect(await countJobs(projectId)).toBe(1);

    // One row, and exactly one message was sent: wait for a sentinel job's message to be sure.
    const sentinel = await postJson("/exports", overlayRequest(projectId, "uploads/idem.mp4"));
    const sentinelId = ((await sentinel.json()) as { job: { id: string } }).job.id;
    await waitFor(
      async () => ((await sentMessagesFor(sentinelId)).length ? true : undefined),
      "sentinel",
    );
    expect(await sentMessagesFor(id1)).toEqual([{ job_id: id1 }]);
  });

  it("answers 422 idempotency_key_reused for another body; keys are scoped per project", async () => {
    const { freshProjectId, overlayRequest, putInput, countJobs } = await import("./helpers.ts");
    const projectA = freshProjectId();
    const projectB = freshProjectId();
    await putInput("uploads/idem2.mp4");
    const key = `key-${crypto.randomUUID()}`;
    expect((await create(key, overlayRequest(projectA, "uploads/idem2.mp4"))).status).toBe(202);

    const changed = {
      ...overlayRequest(projectA, "uploads/idem2.mp4"),
      params: { highlight_regions: [{ start_time: 0, end_time: 9 }] },
    };
    const reused = await create(key, changed);
    expect(reused.status).toBe(422);
    expect(((await reused.json()) as { error: { code: string } }).error.code).toBe(
      "idempotency_key_reused",
    );
    expect(await countJobs(projectA)).toBe(1);

    expect((await create(key, overlayRequest(projectB, "uploads/idem2.mp4"))).status).toBe(202);
    expect(await countJobs(projectB)).toBe(1);

    const tooLong = await create("k".repeat(256), overlayRequest(projectA, "uploads/idem2.mp4"));
    expect(tooLong.status).toBe(400);
    expect(await countJobs(projectA)).toBe(1);
  });
});
