// Retention (shared/archive.ts, the reconciler's archive step): a job finished more than
// ARCHIVE_AFTER_S ago goes to R2 at archive/export_jobs/<id>.json, and only then its events, row
// and dead letters leave D1; archived jobs are answered from R2; /stats counts them; each pass does
// bounded work and keeps up; scripts/restore-archived-job.ts brings one back.
//
// Jobs here are "finished long ago" by moving their finished_at back 2 hours, and the passes use
// ARCHIVE_AFTER_S=3600, so jobs of other test files (finished just now, default 30 days) are never
// touched; every test leaves no archivable job behind.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { consumerDeps } from "../../consumer/process-jobs.ts";
import { reconcile } from "../../consumer/reconciler.ts";
import { main, restoreStatements } from "../../scripts/restore-archived-job.ts";
import {
  ARCHIVE_PREFIX,
  type ArchivedJob,
  archiveJobs,
  archiveKey,
  EVENT_ROWS_PER_STATEMENT,
  eventParts,
} from "../../shared/archive.ts";
import { retryJobs } from "../../shared/job-state.ts";
import { recordDeadLetters, replayDeadLetter } from "../../shared/sql/dead-letters.ts";
import { type JobEvent, listEvents } from "../../shared/sql/events.ts";
import { markCancelConfirmed, markCancelUnconfirmed } from "../../shared/sql/jobs/leases.ts";
import type { Job, JobRow } from "../../shared/sql/jobs/row.ts";
import * as repo from "../../shared/sql/jobs/row.ts";
import {
  cancelJob,
  completeJob,
  endRunCancelled,
  expirePendingJobs,
  failAttempt,
  retryJobsByIds,
} from "../../shared/sql/jobs/transitions.ts";
import {
  ADMIN_TOKEN,
  freshProjectId,
  overlayRequest,
  postJson,
  processingJob,
  producerFetch,
  putInput,
  putOutput,
  readJob,
  uniqueEndpoint,
} from "./helpers.ts";

type TestEnv = typeof env;
const retentionEnv = (extra: Record<string, string> = {}): TestEnv => ({
  ...env,
  RUNPOD_ENDPOINT_ID: uniqueEndpoint("retention"),
  ARCHIVE_AFTER_S: "3600",
  ...extra,
});
const pass = (
  extra: Record<string, string> = {},
  options?: { batch?: number; budgetMs?: number },
) => reconcile(consumerDeps(retentionEnv(extra)), options);

const OUTPUT = new Uint8Array([0, 0, 0, 24, 102, 116, 121, 112, 1, 2, 3, 4]);

/** A job completed through the state machine's statements, its output in R2. */
async function completedJob(): Promise<JobRow> {
  const job = await processingJob({ runId: `run-${crypto.randomUUID()}` });
  const key = await putOutput(job, undefined, OUTPUT);
  const done = await completeJob(env.DB, job, job.attempt, job.runpod_job_id as string, key);
  if (!done) throw new Error("complete failed");
  return done;
}

/** A job cancelled while pending: error 'cancelled'. */
async function cancelledJob(): Promise<JobRow> {
  const job = await processingJob({ runId: null });
  const cancelled = await cancelJob(env.DB, job.id);
  if (!cancelled) throw new Error("cancel failed");
  return cancelled;
}

/** Time passes: the job finished `seconds` ago. */
async function finishedAgo(id: string, seconds = 7200): Promise<JobRow> {
  await env.DB.prepare(
    "UPDATE export_jobs SET finished_at = strftime('%Y-%m-%d %H:%M:%f', 'now', ?) WHERE id = ?",
  )
    .bind(`-${seconds} seconds`, id)
    .run();
  return (await readJob(id)) as JobRow;
}

async function archiveObject(id: string): Promise<ArchivedJob | null> {
  const object = await env.VIDEOS.get(archiveKey(id));
  return object ? object.json<ArchivedJob>() : null;
}

async function countRows(sql: string, id: string): Promise<number> {
  return (await env.DB.prepare(sql).bind(id).first<{ n: number }>())?.n ?? 0;
}
const eventRows = (id: string) =>
  countRows("SELECT COUNT(*) AS n FROM export_job_events WHERE job_id = ?", id);
const deadLetterRows = (id: string) =>
  countRows("SELECT COUNT(*) AS n FROM dead_letters WHERE job_id = ?", id);

async function stats(): Promise<{ archived: number; jobs: Record<string, number> }> {
  const res = await producerFetch("/stats", { token: ADMIN_TOKEN });
  expect(res.status).toBe(200);
  return res.json();
}

/** job_counts and a full count of export_jobs, read in one transaction. */
async function countsAgree(): Promise<void> {
  const [kept, full] = await env.DB.batch([
    env.DB.prepare("SELECT status, n FROM job_counts ORDER BY status"),
    env.DB.prepare(
      `SELECT s.status, (SELECT COUNT(*) FROM export_jobs j WHERE j.status = s.status) AS n
       FROM job_counts s ORDER BY s.status`,
    ),
  ]);
  expect(kept?.results).toEqual(full?.results);
}

async function getJson<T>(path: string): Promise<{ status: number; body: T }> {
  const res = await producerFetch(path);
  return { status: res.status, body: (await res.json()) as T };
}

/**
 * A job as its archive stores it: the row's fields, without `queue` (the API's estimate, null for
 * a finished job, is not part of the row).
 */
function stored(job: Job): Job {
  const { queue: _queue, ...rest } = job;
  return rest;
}

describe("retention: the reconciler archives finished jobs", () => {
  it("writes the job as GET answered it and its events to R2, then deletes its events, row and dead letters", async () => {
    const job = await completedJob();
    await recordDeadLetters(env.DB, [
      {
        id: `dl-${job.id}`,
        queue: "export-jobs-dlq",
        reason: "dead_lettered",
        body: JSON.stringify({ job_id: job.id }),
        attempts: 11,
        job_id: job.id,
      },
    ]);
    const row = await finishedAgo(job.id);
    const answered = await getJson<{ job: Job }>(`/exports/${job.id}`);
    const timeline = await getJson<{ events: JobEvent[] }>(`/exports/${job.id}/events`);
    expect(timeline.body.events.map((event) => event.type)).toEqual([
      "created",
      "claimed",
      "submitted",
      "completed",
      "dead_lettered",
    ]);

    const report = await pass();
    expect(report.failedSteps).toEqual([]);
    expect(report.archived).toBeGreaterThanOrEqual(1);

    expect(await archiveObject(job.id)).toEqual({
      job: stored(answered.body.job),
      events: timeline.body.events,
    });
    const head = await env.VIDEOS.head(archiveKey(job.id));
    expect(head?.httpMetadata?.contentType).toBe("application/json");
    console.log(`archive object: ${head?.size} bytes (5 events, one highlight region)`);
    expect(answered.body.job).toEqual({ ...repo.toJob(row), queue: null });
    expect(archiveKey(job.id)).toBe(`archive/export_jobs/${job.id}.json`);
    expect(await readJob(job.id)).toBeNull();
    expect(await eventRows(job.id)).toBe(0);
    expect(await deadLetterRows(job.id)).toBe(0);
  });

  it("archives error jobs too (a cancelled one), and keeps a job that finished recently", async () => {
    const old = await cancelledJob();
    await finishedAgo(old.id);
    const young = await completedJob();
    await finishedAgo(young.id, 600);
    await pass();
    expect(await readJob(old.id)).toBeNull();
    expect((await archiveObject(old.id))?.job).toMatchObject({
      status: "error",
      error: "cancelled",
    });
    expect(await readJob(young.id)).toMatchObject({ status: "complete" });
    expect(await archiveObject(young.id)).toBeNull();
  });

  it("never archives a running job, nor an error job whose RunPod /cancel is still to be retried", async () => {
    const running = await processingJob({ runId: `run-${crypto.randomUUID()}` });
    // Even with a finished_at (which no running job has), the status keeps it out of the pick.
    await env.DB.prepare(
      `UPDATE export_jobs SET created_at = datetime('now', '-3 days'), started_at = datetime('now', '-3 days')
       WHERE id = ?`,
    )
      .bind(running.id)
      .run();
    await finishedAgo(running.id);
    const cancelling = await processingJob({ runId: `run-${crypto.randomUUID()}` });
    await cancelJob(env.DB, cancelling.id);
    await markCancelUnconfirmed(env.DB, cancelling.id, cancelling.runpod_job_id as string, 600);
    await finishedAgo(cancelling.id);

    await pass();
    expect(await readJob(running.id)).toMatchObject({ status: "processing" });
    expect(await readJob(cancelling.id)).toMatchObject({ status: "error", error: "cancelled" });
    expect(await archiveObject(running.id)).toBeNull();
    expect(await archiveObject(cancelling.id)).toBeNull();

    // Once its cancel is confirmed it goes like any other; the running one is left to end.
    await markCancelConfirmed(env.DB, cancelling.id);
    await finishedAgo(cancelling.id);
    await env.DB.prepare("UPDATE export_jobs SET finished_at = NULL WHERE id = ?")
      .bind(running.id)
      .run();
    await pass();
    expect(await readJob(cancelling.id)).toBeNull();
    expect(await readJob(running.id)).toMatchObject({ status: "processing" });
  });

  it("ARCHIVE_AFTER_S=0 keeps everything", async () => {
    const job = await completedJob();
    await finishedAgo(job.id, 2 * 365 * 86_400);
    const report = await pass({ ARCHIVE_AFTER_S: "0" });
    expect(report.archived).toBe(0);
    expect(await readJob(job.id)).toMatchObject({ status: "complete" });
    expect(await archiveObject(job.id)).toBeNull();
    await pass(); // leave nothing archivable behind
    expect(await readJob(job.id)).toBeNull();
  });

  it("finished_at is set by the transitions that end a job and cleared by retry and replay", async () => {
    const done = await completedJob();
    expect(done.finished_at).not.toBeNull();
    const cancelled = await cancelledJob();
    expect(cancelled.finished_at).not.toBeNull();
    const failing = await processingJob({ retryCount: 3, runId: null });
    const failed = await failAttempt(env.DB, failing, failing.attempt, null, "boom", 0);
    expect(failed).toMatchObject({ status: "error", retry_count: 4 });
    expect(failed?.finished_at).not.toBeNull();
    const repending = await processingJob({ runId: null });
    const again = await failAttempt(env.DB, repending, repending.attempt, null, "boom", 0);
    expect(again).toMatchObject({ status: "pending", finished_at: null });
    const [retried] = await retryJobsByIds(env.DB, [failing.id]);
    expect(retried).toMatchObject({ status: "pending", finished_at: null });

    // A recorded run that fails for the fourth time, then its dead letter replayed.
    const run = `run-${crypto.randomUUID()}`;
    const recorded = await processingJob({ retryCount: 3, runId: run });
    const ended = await failAttempt(env.DB, recorded, recorded.attempt, run, "FAILED", 0);
    expect(ended?.status).toBe("error");
    expect(ended?.finished_at).not.toBeNull();
    await recordDeadLetters(env.DB, [
      {
        id: `dl-${recorded.id}`,
        queue: "export-jobs-dlq",
        reason: "dead_lettered",
        body: JSON.stringify({ job_id: recorded.id }),
        attempts: 11,
        job_id: recorded.id,
      },
    ]);
    const replayed = await replayDeadLetter(env.DB, `dl-${recorded.id}`);
    expect(replayed?.job).toMatchObject({ status: "pending", finished_at: null });

    // The variants for a run not recorded yet, RunPod's CANCELLED, and expiry.
    const unrecorded = await processingJob({ runId: null });
    const adopted = await completeJob(env.DB, unrecorded, 1, "run-adopted", "k");
    expect(adopted?.finished_at).not.toBeNull();
    const runCancelled = await processingJob({ runId: null });
    const gone = await endRunCancelled(env.DB, runCancelled, 1, "run-gone");
    expect(gone).toMatchObject({ status: "error", error: "cancelled" });
    expect(gone?.finished_at).not.toBeNull();
    const waiting = await processingJob({ runId: null });
    await env.DB.prepare(
      `UPDATE export_jobs SET status = 'pending', created_at = '2000-01-01', pending_since = '2000-01-01'
       WHERE id = ?`,
    )
      .bind(waiting.id)
      .run();
    const [expired] = await expirePendingJobs(env.DB, "2000-01-02", "expired: test", 10);
    expect(expired).toMatchObject({ id: waiting.id, status: "error" });
    expect(expired?.finished_at).not.toBeNull();

    await env.DB.prepare("DELETE FROM dead_letters WHERE id = ?").bind(`dl-${recorded.id}`).run();
    const ids = [done, cancelled, failing, repending, recorded, unrecorded, runCancelled, waiting];
    await env.DB.prepare("DELETE FROM export_jobs WHERE id IN (SELECT value FROM json_each(?))")
      .bind(JSON.stringify(ids.map((job) => job.id)))
      .run();
  });
});

describe("retention: a crash between the put and the deletes", () => {
  it("leaves the job in D1 and answered from there; the next pass puts the object again and deletes", async () => {
    const job = await completedJob();
    const row = await finishedAgo(job.id);
    // The put succeeds, then D1 fails the deletes (the Worker dies there, as far as D1 knows).
    let batches = 0;
    const crashing = new Proxy(env.DB, {
      get(target, property) {
        if (property === "batch") {
          return (statements: D1PreparedStatement[]) => {
            batches += 1;
            if (batches === 2) return Promise.reject(new Error("the Worker died here"));
            return target.batch(statements);
          };
        }
        const value = Reflect.get(target, property);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    await expect(archiveJobs(crashing, env.VIDEOS, [row])).rejects.toThrow("the Worker died");
    expect(await archiveObject(job.id)).not.toBeNull();
    expect(await readJob(job.id)).toMatchObject({ status: "complete" });
    const fromD1 = await getJson<{ job: Job }>(`/exports/${job.id}`);
    expect(fromD1.body.job.archived).toBeUndefined();

    // An object a previous run left with stale content is overwritten, not trusted.
    await env.VIDEOS.put(archiveKey(job.id), JSON.stringify({ job: { id: job.id }, events: [] }));
    const before = (await stats()).archived;
    const report = await pass();
    expect(report.archived).toBe(1);
    expect((await stats()).archived).toBe(before + 1);
    expect(await readJob(job.id)).toBeNull();
    const archived = await archiveObject(job.id);
    expect(archived?.job).toEqual(repo.toJob(row));
    expect(archived?.events.map((event) => event.type)).toEqual([
      "created",
      "claimed",
      "submitted",
      "completed",
    ]);
  });

  it("a job retried by an operator after it was read is neither put nor deleted (version guard)", async () => {
    const failed = await failAttempt(
      env.DB,
      await processingJob({ retryCount: 3, runId: null }),
      1,
      null,
      "RunPod FAILED",
      0,
    );
    if (!failed) throw new Error("fail failed");
    const stale = await finishedAgo(failed.id);
    await retryJobs(consumerDeps(retentionEnv()), { ids: [failed.id] });
    const result = await archiveJobs(env.DB, env.VIDEOS, [stale]);
    expect(result).toEqual({ archived: 0, skipped: 1 });
    expect(await readJob(failed.id)).toMatchObject({ status: "pending" });
    expect(await archiveObject(failed.id)).toBeNull();
    await env.DB.prepare("DELETE FROM export_jobs WHERE id = ?").bind(failed.id).run();
  });
});

describe("retention: archived jobs are answered from R2", () => {
  it("GET, /events and /output answer 200; cancel 409; operator retry skips it; listings do not show it", async () => {
    const job = await completedJob();
    const row = await finishedAgo(job.id);
    const events = await listEvents(env.DB, job.id);
    await pass();
    expect(await readJob(job.id)).toBeNull();

    const got = await getJson<{ job: Job }>(`/exports/${job.id}`);
    expect(got.status).toBe(200);
    expect(got.body.job).toEqual({ ...repo.toJob(row), archived: true, queue: null });

    const timeline = await getJson<{ events: JobEvent[] }>(`/exports/${job.id}/events`);
    expect(timeline).toEqual({ status: 200, body: { events } });
    const forOperators = await producerFetch(`/exports/${job.id}/events`, { token: ADMIN_TOKEN });
    expect(forOperators.status).toBe(200);

    const output = await producerFetch(`/exports/${job.id}/output`);
    expect(output.status).toBe(200);
    expect(new Uint8Array(await output.arrayBuffer())).toEqual(OUTPUT);
    const ranged = await producerFetch(`/exports/${job.id}/output`, {
      headers: { range: "bytes=0-3" },
    });
    expect(ranged.status).toBe(206);
    expect(new Uint8Array(await ranged.arrayBuffer())).toEqual(OUTPUT.slice(0, 4));

    const cancel = await postJson(`/exports/${job.id}/cancel`, {});
    expect(cancel.status).toBe(409);
    expect(((await cancel.json()) as { error: { code: string } }).error.code).toBe(
      "already_finished",
    );

    const retry = await postJson(
      "/admin/jobs/retry",
      { job_ids: [job.id] },
      { token: ADMIN_TOKEN },
    );
    expect(retry.status).toBe(202);
    expect(await retry.json()).toEqual({ retried: 0, job_ids: [] });
    expect(await readJob(job.id)).toBeNull();

    const listed = await getJson<{ jobs: Job[] }>(`/exports?project_id=${job.project_id}`);
    expect(listed.body.jobs).toEqual([]);

    // The output is served while its object exists, and is gone with it.
    await env.VIDEOS.delete(job.output_video_key as string);
    const missing = await producerFetch(`/exports/${job.id}/output`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: { code: string } }).error.code).toBe(
      "output_missing",
    );
  });

  it("an archived error job's /output answers 409 not_complete; an unknown id still 404", async () => {
    const job = await cancelledJob();
    await finishedAgo(job.id);
    await pass();
    expect(await readJob(job.id)).toBeNull();
    const output = await producerFetch(`/exports/${job.id}/output`);
    expect(output.status).toBe(409);
    for (const path of ["", "/events", "/output"]) {
      const res = await producerFetch(`/exports/${crypto.randomUUID()}${path}`);
      expect(res.status, path).toBe(404);
    }
    expect((await producerFetch("/exports/..%2Fx")).status).toBe(404);
  });

  it("an Idempotency-Key is remembered while its job is in D1, and forgotten once it is archived", async () => {
    const projectId = freshProjectId();
    const key = `uploads/${projectId}/in.mp4`;
    await putInput(key);
    const headers = { "idempotency-key": "retention-1" };
    const first = await postJson("/exports", overlayRequest(projectId, key), { headers });
    expect(first.status).toBe(202);
    const { job } = (await first.json()) as { job: Job };
    const repeat = await postJson("/exports", overlayRequest(projectId, key), { headers });
    expect(repeat.status).toBe(200);
    expect(((await repeat.json()) as { job: Job }).job.id).toBe(job.id);

    await cancelJob(env.DB, job.id);
    await finishedAgo(job.id);
    await pass();
    expect(await readJob(job.id)).toBeNull();
    const after = await postJson("/exports", overlayRequest(projectId, key), { headers });
    expect(after.status).toBe(202);
    const fresh = ((await after.json()) as { job: Job }).job;
    expect(fresh.id).not.toBe(job.id);
    await env.DB.prepare("DELETE FROM export_jobs WHERE id = ?").bind(fresh.id).run();
  });
});

describe("retention: counts and bounded work", () => {
  it("/stats archived counts the jobs archived; job_counts still equals a full count", async () => {
    await countsAgree();
    const before = await stats();
    const jobs = [await completedJob(), await completedJob(), await cancelledJob()];
    for (const job of jobs) await finishedAgo(job.id);
    const report = await pass();
    expect(report.archived).toBe(3);
    const after = await stats();
    expect(after.archived).toBe(before.archived + 3);
    await countsAgree();
  });

  it("rows written by an archive batch: each job's events, its row, its job_counts row, and 1 for the count", async () => {
    const jobs = [await completedJob(), await completedJob(), await completedJob()];
    const rows = await Promise.all(jobs.map((job) => finishedAgo(job.id)));
    let written = 0;
    const measuring = new Proxy(env.DB, {
      get(target, property) {
        if (property === "batch") {
          return async (statements: D1PreparedStatement[]) => {
            const results = await target.batch(statements);
            for (const result of results) written += result.meta.rows_written;
            return results;
          };
        }
        const value = Reflect.get(target, property);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    expect(await archiveJobs(measuring, env.VIDEOS, rows)).toEqual({ archived: 3, skipped: 0 });
    // 4 events each (created, claimed, submitted, completed).
    expect(written).toBe(1 + 3 * (4 + 2));
    console.log(`rows written archiving 3 jobs of 4 events: ${written}`);
  });

  it("a pass with a small batch and no time left archives one batch; further passes finish the rest", async () => {
    const jobs: JobRow[] = [];
    for (let i = 0; i < 7; i++) jobs.push(await completedJob());
    for (const job of jobs) await finishedAgo(job.id);
    const remaining = async () =>
      (await Promise.all(jobs.map((job) => readJob(job.id)))).filter(Boolean).length;

    const first = await pass({}, { batch: 3, budgetMs: 0 });
    expect(first.archived).toBe(3);
    expect(await remaining()).toBe(4);
    const second = await pass({}, { batch: 3, budgetMs: 0 });
    expect(second.archived).toBe(3);
    const third = await pass({}, { batch: 3, budgetMs: 0 });
    expect(third.archived).toBe(1);
    expect(await remaining()).toBe(0);
    await countsAgree();
  });

  it("with time left a pass goes on while batches come back full, so it keeps up with the finish rate", async () => {
    const jobs: JobRow[] = [];
    for (let i = 0; i < 7; i++) jobs.push(await completedJob());
    for (const job of jobs) await finishedAgo(job.id);
    const report = await pass({}, { batch: 3 });
    expect(report.archived).toBe(7);
    for (const job of jobs) expect(await readJob(job.id)).toBeNull();
  });

  it("no statement touches more than 1,000 event rows, however long a timeline", () => {
    const short = Array.from({ length: 60 }, (_, i) => ({ id: `s${i}`, version: 20 }));
    const long = { id: "long", version: 2_500 };
    const parts = eventParts([...short.slice(0, 50), long, ...short.slice(50)]);
    for (const part of parts) {
      // Events have versions 1…version; one version holds one event (a dead letter's aside).
      const versionsIn = (job: { version: number }) =>
        Math.max(0, Math.min(job.version, part.to - 1) - Math.max(part.from, 1) + 1);
      const rows = part.jobs.reduce((sum, job) => sum + versionsIn(job), 0);
      expect(rows).toBeLessThanOrEqual(EVENT_ROWS_PER_STATEMENT);
    }
    const longParts = parts.filter((part) => part.jobs[0]?.id === "long");
    expect(longParts.map(({ from, to }) => [from, to])).toEqual([
      [0, 900],
      [900, 1800],
      [1800, 2700],
    ]);
    expect(
      parts.flatMap((part) => part.jobs.map((job) => job.id)).filter((id) => id !== "long"),
    ).toHaveLength(60);
  });

  it("a job with a long timeline is archived whole through version-ranged statements", async () => {
    const job = await completedJob();
    // 1,000 more events (as 1,000 versions of bookkeeping with events would leave).
    await env.DB.prepare(
      `WITH RECURSIVE n(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM n WHERE v < 1000)
       INSERT INTO export_job_events (job_id, version, type, at, attempt, detail)
       SELECT ?, version + v, 'progress', strftime('%Y-%m-%d %H:%M:%f', 'now'), attempt, 'x'
       FROM n, export_jobs WHERE id = ?`,
    )
      .bind(job.id, job.id)
      .run();
    await env.DB.prepare(
      "UPDATE export_jobs SET version = version + 1000, last_event = NULL WHERE id = ?",
    )
      .bind(job.id)
      .run();
    const row = await finishedAgo(job.id);
    const events = await listEvents(env.DB, job.id);
    expect(events).toHaveLength(1_004);
    expect(eventParts([row]).length).toBeGreaterThan(1);
    await pass();
    expect(await readJob(job.id)).toBeNull();
    expect(await eventRows(job.id)).toBe(0);
    expect((await archiveObject(job.id))?.events).toEqual(events);
  });
});

describe("retention: restoring an archived job (scripts/restore-archived-job.ts)", () => {
  it("its SQL puts the job and its timeline back; counts follow", async () => {
    const job = await completedJob();
    const row = await finishedAgo(job.id);
    const events = await listEvents(env.DB, job.id);
    await pass();
    expect(await readJob(job.id)).toBeNull();
    const archivedBefore = (await stats()).archived;

    const object = await env.VIDEOS.get(archiveKey(job.id));
    const text = (await object?.text()) ?? "";
    const out: string[] = [];
    const code = await main([`${ARCHIVE_PREFIX}${job.id}.json`], {
      readFile: async () => text,
      readStdin: async () => "",
      out: (s) => out.push(s),
      err: (s) => out.push(`ERR ${s}`),
    });
    expect(code).toBe(0);
    const statements = restoreStatements(JSON.parse(text));
    expect(out.join("")).toBe(`${statements.join(";\n")};\n`);
    await env.DB.batch(statements.map((sql) => env.DB.prepare(sql)));

    const got = await getJson<{ job: Job }>(`/exports/${job.id}`);
    expect(got.body.job).toEqual({ ...repo.toJob(row), queue: null });
    expect(got.body.job.archived).toBeUndefined();
    expect(
      (await getJson<{ events: JobEvent[] }>(`/exports/${job.id}/events`)).body.events,
    ).toEqual(events);
    expect((await stats()).archived).toBe(archivedBefore - 1);
    await countsAgree();
    // It stays another ARCHIVE_AFTER_S: a pass now keeps it.
    await pass();
    expect(await readJob(job.id)).toMatchObject({ status: "complete" });
    // A second restore of a job that is in D1 fails at its first statement.
    await expect(env.DB.prepare(statements[0] as string).run()).rejects.toThrow();

    await finishedAgo(job.id);
    await pass();
    expect(await readJob(job.id)).toBeNull();
  });

  it("refuses what is not an archive, with usage errors", async () => {
    const io = (text: string, out: string[]) => ({
      readFile: async () => text,
      readStdin: async () => text,
      out: (s: string) => out.push(s),
      err: (s: string) => out.push(`ERR ${s}`),
    });
    const out: string[] = [];
    expect(await main([], io("", out))).toBe(2);
    expect(await main(["-"], io('{"job":{"id":"x","status":"pending"},"events":[]}', out))).toBe(1);
    expect(await main(["f.json"], io("not json", out))).toBe(1);
    expect(out.filter((line) => line.startsWith("ERR error:"))).toHaveLength(2);
    expect(restoreStatements({ job: { ...fakeJob(), error: "it's" }, events: [] })[0]).toContain(
      "'it''s'",
    );
  });
});

function fakeJob(): Job {
  return {
    id: crypto.randomUUID(),
    project_id: 1,
    type: "overlay",
    status: "error",
    progress: 0,
    input_video_key: "k",
    output_video_key: null,
    params: {},
    error: null,
    retry_count: 0,
    runpod_job_id: null,
    created_at: "2026-01-01 00:00:00.000",
    started_at: null,
    completed_at: null,
    due_at: null,
    idempotency_key: null,
    attempt: 0,
    version: 2,
    user_id: null,
    gpu_ms: 0,
    queue_ms: 0,
    input_etag: null,
    supersede_key: null,
    reuse: true,
    follows: null,
    reused_from: null,
    priority: "standard",
    runpod_endpoint_id: null,
  };
}
