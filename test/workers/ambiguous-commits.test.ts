// D1 can lose the answer of a statement that committed ("Network connection lost" after the
// commit). The guarded statements are retried, and the retry of a committed one matches no row:
// each write must still learn that it happened. Each test makes the real binding lose one answer
// of one statement (answersLost) and checks what the pipeline does next.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { JobMessage } from "../../shared/env.ts";
import { INSERT_SQL } from "../../shared/sql/jobs/insert.ts";
import { TRANSITION_SQL } from "../../shared/sql/jobs/transitions.ts";
import {
  answersLost,
  callbackPath,
  configureEndpoint,
  deliver,
  emulatorRequests,
  freshProjectId,
  insertPendingJob,
  messageArrives,
  overlayRequest,
  postJson,
  putInput,
  putOutput,
  readJob,
  runCalls,
  sentMessagesFor,
  spyQueue,
  uniqueEndpoint,
} from "./helpers.ts";

const dispatcher = (endpoint: string) => env.DISPATCHER.get(env.DISPATCHER.idFromName(endpoint));

/** A job submitted by the consumer for `endpoint`: processing, its run recorded, in flight. */
async function submittedJob(endpoint: string) {
  await configureEndpoint(endpoint, { runMs: 600_000 });
  const job = await insertPendingJob();
  await deliver([job.id], { env: { ...env, RUNPOD_ENDPOINT_ID: endpoint } });
  const row = await readJob(job.id);
  if (!row?.runpod_job_id) throw new Error("not submitted");
  expect(await dispatcher(endpoint).inFlight()).toContain(job.id);
  return row;
}

describe("a commit whose answer D1 lost", () => {
  it("claim: the batch still submits the jobs it claimed, each once, on their first attempt", async () => {
    const endpoint = uniqueEndpoint("lost-claim");
    await configureEndpoint(endpoint, { runMs: 600_000 });
    const jobs = [await insertPendingJob(), await insertPendingJob()];
    const db = answersLost(env.DB, (sql) => sql === TRANSITION_SQL.claim);

    const result = await deliver(
      jobs.map((job) => job.id),
      { env: { ...env, RUNPOD_ENDPOINT_ID: endpoint, DB: db } },
    );
    expect(db.lost()).toBe(1);
    expect(result.retryMessages).toEqual([]);
    for (const job of jobs) {
      expect(await readJob(job.id)).toMatchObject({
        status: "processing",
        attempt: 1,
        retry_count: 0,
        runpod_job_id: expect.stringMatching(/.+/),
      });
    }
    expect(runCalls(await emulatorRequests(endpoint))).toHaveLength(2);
  });

  it("release (RunPod 429): the job is re-enqueued after its delay and its slot freed", async () => {
    const endpoint = uniqueEndpoint("lost-release");
    await configureEndpoint(endpoint, { runScript: [429], runMs: 600_000 });
    const job = await insertPendingJob();
    const spy = spyQueue();
    const db = answersLost(env.DB, (sql) => sql === TRANSITION_SQL.release);

    await deliver([job.id], {
      env: {
        ...env,
        RUNPOD_ENDPOINT_ID: endpoint,
        BREAKER_COOLDOWN_S: "45",
        DB: db,
        EXPORT_QUEUE: spy.queue,
      },
    });
    expect(db.lost()).toBe(1);
    expect(await readJob(job.id)).toMatchObject({ status: "pending", retry_count: 0, attempt: 1 });
    expect(spy.sendsOf(job.id)).toEqual([45]);
    expect(await dispatcher(endpoint).inFlight()).not.toContain(job.id);
  });

  it("failed submission (the seed's CASE): the job is re-enqueued after its delay and its slot freed", async () => {
    const endpoint = uniqueEndpoint("lost-fail");
    await configureEndpoint(endpoint, { runScript: [500], runMs: 600_000 });
    const job = await insertPendingJob();
    const spy = spyQueue();
    const db = answersLost(env.DB, (sql) => sql === TRANSITION_SQL.failWithoutRun);

    await deliver([job.id], {
      env: { ...env, RUNPOD_ENDPOINT_ID: endpoint, DB: db, EXPORT_QUEUE: spy.queue },
    });
    expect(db.lost()).toBe(1);
    expect(await readJob(job.id)).toMatchObject({ status: "pending", retry_count: 1, attempt: 1 });
    expect(spy.sendsOf(job.id)).toHaveLength(1);
    expect(await dispatcher(endpoint).inFlight()).not.toContain(job.id);
  });

  it("complete (webhook): the slot is freed and the answer is 200", async () => {
    const endpoint = uniqueEndpoint("lost-complete");
    const job = await submittedJob(endpoint);
    await putOutput(job);
    const db = answersLost(env.DB, (sql) => sql === TRANSITION_SQL.completeRecordedRun);

    const res = await postJson(
      await callbackPath("webhook", job.id, job.attempt),
      { id: job.runpod_job_id, status: "COMPLETED", executionTime: 1000, delayTime: 10 },
      { token: null, vars: { RUNPOD_ENDPOINT_ID: endpoint }, bindings: { DB: db } },
    );
    expect(res.status).toBe(200);
    expect(db.lost()).toBe(1);
    expect(await readJob(job.id)).toMatchObject({ status: "complete", progress: 100 });
    expect(await dispatcher(endpoint).inFlight()).not.toContain(job.id);
  });

  it("insert without an Idempotency-Key: 202 with the one job, which is enqueued", async () => {
    const projectId = freshProjectId();
    const key = `uploads/${projectId}/in.mp4`;
    await putInput(key);
    const db = answersLost(env.DB, (sql) => sql === INSERT_SQL.insert);

    const res = await postJson("/exports", overlayRequest(projectId, key), {
      bindings: { DB: db },
    });
    expect(db.lost()).toBe(1);
    expect(res.status).toBe(202);
    const { job } = (await res.json()) as { job: { id: string; status: string } };
    expect(job.status).toBe("pending");
    const { results } = await env.DB.prepare("SELECT id FROM export_jobs WHERE project_id = ?")
      .bind(projectId)
      .all<{ id: string }>();
    expect(results.map((row) => row.id)).toEqual([job.id]);
    await messageArrives(job.id);
  });

  it("insert with an Idempotency-Key: 202 (not a repeat), enqueued; the client's retry gets the same job", async () => {
    const projectId = freshProjectId();
    const key = `uploads/${projectId}/in.mp4`;
    await putInput(key);
    const db = answersLost(env.DB, (sql) => sql === INSERT_SQL.insert);
    const headers = { "Idempotency-Key": `lost-${projectId}` };

    const res = await postJson("/exports", overlayRequest(projectId, key), {
      headers,
      bindings: { DB: db },
    });
    expect(db.lost()).toBe(1);
    expect(res.status).toBe(202);
    const { job } = (await res.json()) as { job: { id: string } };
    await messageArrives(job.id);

    const again = await postJson("/exports", overlayRequest(projectId, key), { headers });
    expect(again.status).toBe(200);
    expect(((await again.json()) as { job: { id: string } }).job.id).toBe(job.id);
  });
});

describe("an idempotent repeat", () => {
  it("enqueues a job that is pending and was never enqueued", async () => {
    const projectId = freshProjectId();
    const key = `uploads/${projectId}/in.mp4`;
    await putInput(key);
    const headers = { "Idempotency-Key": `never-sent-${projectId}` };
    // The first request's insert committed and its send was lost (the queue refused it).
    const refusing: Queue<JobMessage> = {
      metrics: () => env.EXPORT_QUEUE.metrics(),
      send: () => Promise.reject(new Error("Queue send failed: internal error")),
      sendBatch: () => Promise.reject(new Error("Queue send failed: internal error")),
    };
    const first = await postJson("/exports", overlayRequest(projectId, key), {
      headers,
      bindings: { EXPORT_QUEUE: refusing, RUNPOD_ENDPOINT_ID: uniqueEndpoint("unheld") },
    });
    expect(first.status).toBe(202);
    const { job } = (await first.json()) as { job: { id: string } };
    expect(await sentMessagesFor(job.id)).toEqual([]);
    // …and the dispatcher holding it lost it (a reset: D1 names one that does not know it).
    await env.DB.prepare("UPDATE export_jobs SET runpod_endpoint_id = ? WHERE id = ?")
      .bind(uniqueEndpoint("reset"), job.id)
      .run();

    const again = await postJson("/exports", overlayRequest(projectId, key), { headers });
    expect(again.status).toBe(200);
    await messageArrives(job.id);
  });
});

describe("a slot whose free fails", () => {
  it("is freed through the queue: a message for the finished job, whose delivery frees it", async () => {
    const endpoint = uniqueEndpoint("free-fails");
    const job = await submittedJob(endpoint);
    await putOutput(job);
    const spy = spyQueue();
    let refused = 0;
    // The real namespace, whose stubs refuse `free` once (a Durable Object reset by a deploy).
    const flaky = new Proxy(env.DISPATCHER, {
      get(target, prop) {
        if (prop === "get") {
          return (id: DurableObjectId) => {
            const stub = target.get(id);
            return new Proxy(stub, {
              get(s, p) {
                if (p === "free" && refused === 0) {
                  return async () => {
                    refused += 1;
                    throw new Error("Durable Object reset because its code was updated.");
                  };
                }
                const value = Reflect.get(s, p);
                return typeof value === "function" ? value.bind(s) : value;
              },
            });
          };
        }
        const value = Reflect.get(target, prop);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });

    const res = await postJson(
      await callbackPath("webhook", job.id, job.attempt),
      { id: job.runpod_job_id, status: "COMPLETED" },
      {
        token: null,
        vars: { RUNPOD_ENDPOINT_ID: endpoint },
        bindings: { DISPATCHER: flaky, EXPORT_QUEUE: spy.queue },
      },
    );
    expect(res.status).toBe(200);
    expect(refused).toBe(1);
    expect(await readJob(job.id)).toMatchObject({ status: "complete" });
    expect(await dispatcher(endpoint).inFlight()).toContain(job.id);
    expect(spy.sendsOf(job.id)).toHaveLength(1);

    // That message reaches a consumer: the finished job's slot is freed.
    await deliver([job.id], { env: { ...env, RUNPOD_ENDPOINT_ID: endpoint } });
    expect(await dispatcher(endpoint).inFlight()).not.toContain(job.id);
  });
});
