// The RunPod emulator over real HTTP: RunPod routes, lifecycle, webhooks, progress, faults and the
// admin API. Each test uses its own endpoint id, so configs and jobs never collide.

import { spawn } from "node:child_process";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createRunpodEmulator,
  type FleetReport,
  type FleetSample,
  type JobState,
  type RequestRecord,
  type RunpodEmulator,
} from "../../emulator/runpod-emulator.ts";

const API_KEY = "test-key";
const AUTH = { authorization: `Bearer ${API_KEY}` };
let emulator: RunpodEmulator;
let origin = "";
let endpointCounter = 0;

beforeAll(async () => {
  emulator = createRunpodEmulator({
    apiKey: API_KEY,
    queueMs: 10,
    runMs: 100,
    webhookRetryDelayMs: 20,
  });
  origin = (await emulator.listen(0)).url;
});

afterAll(async () => {
  await emulator?.close();
});

function newEndpoint(name: string): string {
  endpointCounter += 1;
  return `${name}-${endpointCounter}`;
}

async function call(method: string, url: string, body?: unknown, headers = {}) {
  const res = await fetch(`${origin}${url}`, {
    method,
    headers: { "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const runpod = (method: string, url: string, body?: unknown) => call(method, url, body, AUTH);

async function configure(endpoint: string, config: Record<string, unknown>) {
  const res = await call("PUT", `/__emulator/endpoints/${endpoint}/config`, config);
  expect(res.status).toBe(200);
  return res.body;
}

async function submit(endpoint: string, body: Record<string, unknown>): Promise<string> {
  const res = await runpod("POST", `/v2/${endpoint}/run`, body);
  expect(res.status).toBe(200);
  return res.body.id as string;
}

async function jobState(id: string): Promise<JobState> {
  return (await call("GET", `/__emulator/jobs/${id}`)).body as unknown as JobState;
}

/** Polls `check` until it returns something other than undefined/false. */
async function waitFor<T>(check: () => Promise<T | undefined | false>, what: string): Promise<T> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function waitForStatus(endpoint: string, id: string, status: string) {
  return waitFor(async () => {
    const res = await runpod("GET", `/v2/${endpoint}/status/${id}`);
    return res.body.status === status && res.body;
  }, `${id} to be ${status}`);
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** POST /run with `{input: {}}`, keeping the Retry-After header. */
async function run(endpoint: string) {
  const res = await fetch(`${origin}/v2/${endpoint}/run`, {
    method: "POST",
    headers: AUTH,
    body: JSON.stringify({ input: {} }),
  });
  const body = (await res.json()) as Record<string, unknown>;
  return { status: res.status, retryAfter: res.headers.get("retry-after"), body };
}

async function runAnswers(endpoint: string) {
  return (await call("GET", `/__emulator/endpoints/${endpoint}/stats`)).body.run_answers;
}

async function fleet(endpoint: string): Promise<FleetReport> {
  const res = await call("GET", `/__emulator/endpoints/${endpoint}/fleet`);
  expect(res.status).toBe(200);
  return res.body as unknown as FleetReport;
}

interface Health {
  jobs: Record<"completed" | "failed" | "inProgress" | "inQueue" | "retried", number>;
  workers: Record<
    "idle" | "initializing" | "ready" | "running" | "throttled" | "unhealthy",
    number
  >;
}

async function health(endpoint: string): Promise<Health> {
  return (await runpod("GET", `/v2/${endpoint}/health`)).body as unknown as Health;
}

/** Short autoscaler timings for the fleet tests; each test sets the rest. */
const FLEET = { scalerIntervalMs: 50, queueMs: 0, runMs: 60_000, idleTimeoutMs: 60_000 };

async function jobCount(endpoint: string) {
  return ((await call("GET", `/__emulator/jobs?endpoint=${endpoint}`)).body.jobs as unknown[])
    .length;
}

interface Received {
  path: string;
  contentType: string | undefined;
  body: unknown;
}

/** A small HTTP server that records every POST and answers with the next status of `answers`. */
async function receiver(answers: number[] = [200]) {
  const calls: Received[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      calls.push({
        path: req.url ?? "",
        contentType: req.headers["content-type"],
        body: JSON.parse(Buffer.concat(chunks).toString("utf8")) as unknown,
      });
      res.statusCode = answers[Math.min(calls.length - 1, answers.length - 1)] ?? 200;
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    calls,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** The emulator's CLI (emulator/main.ts) with these variables; resolves once it listens. */
async function startCli(variables: Record<string, string>) {
  const main = path.join(path.dirname(new URL(import.meta.url).pathname), "../../emulator/main.ts");
  const child = spawn(process.execPath, [main], {
    env: { ...process.env, RUNPOD_EMULATOR_PORT: "0", RUNPOD_EMULATOR_LOG: "0", ...variables },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
  const lines = createInterface({ input: child.stdout });
  const first = await new Promise<string>((resolve) => lines.once("line", resolve));
  const origin = new URL(first.replace("runpod emulator listening on ", "")).origin;
  return { child, exited, origin };
}

describe("RunPod routes", () => {
  it("answers 401 without a bearer token or with a wrong one, and logs the attempts", async () => {
    const endpoint = newEndpoint("auth");
    const body = { input: { a: 1 } };
    expect(await call("POST", `/v2/${endpoint}/run`, body)).toEqual({
      status: 401,
      body: { error: "Unauthorized" },
    });
    const wrong = await call("POST", `/v2/${endpoint}/run`, body, { authorization: "Bearer no" });
    expect(wrong.status).toBe(401);
    expect((await call("GET", `/v2/${endpoint}/health`)).status).toBe(401);
    const { requests } = (await call("GET", `/__emulator/requests?endpoint=${endpoint}`)).body as {
      requests: RequestRecord[];
    };
    expect(requests.map((r) => [r.authorization, r.responseStatus])).toEqual([
      [null, 401],
      ["Bearer no", 401],
      [null, 401],
    ]);
    expect((await call("GET", `/__emulator/jobs?endpoint=${endpoint}`)).body.jobs).toEqual([]);
  });

  it("runs a job IN_QUEUE → IN_PROGRESS (with progress) → COMPLETED and posts rising progress", async () => {
    const endpoint = newEndpoint("lifecycle");
    await configure(endpoint, { queueMs: 500, runMs: 1200, progressSteps: [25, 50, 75] });
    const progress = await receiver([204]);
    const input = {
      output_video_key: "exports/1/a.mp4",
      progress_url: `${progress.url}/runpod/progress/a?attempt=0`,
    };

    const accepted = await runpod("POST", `/v2/${endpoint}/run`, { input });
    expect(accepted.status).toBe(200);
    expect(accepted.body).toEqual({
      id: expect.stringMatching(/^[0-9a-f-]{36}-u1$/),
      status: "IN_QUEUE",
    });
    const id = accepted.body.id as string;
    expect((await runpod("GET", `/v2/${endpoint}/status/${id}`)).body).toEqual({
      id,
      status: "IN_QUEUE",
    });

    await waitFor(async () => progress.calls.length > 0, "the first progress call");
    const running = await runpod("GET", `/v2/${endpoint}/status/${id}`);
    expect(running.body).toMatchObject({ id, status: "IN_PROGRESS" });
    expect([25, 50, 75]).toContain((running.body.output as { progress: number }).progress);
    expect(running.body.delayTime).toEqual(expect.any(Number));

    const done = await waitForStatus(endpoint, id, "COMPLETED");
    expect(done).toEqual({
      id,
      status: "COMPLETED",
      delayTime: expect.any(Number),
      executionTime: expect.any(Number),
      output: { output_video_key: "exports/1/a.mp4" },
    });
    expect(Number.isInteger(done.delayTime)).toBe(true);
    expect(Number.isInteger(done.executionTime)).toBe(true);

    // As a handler does, each report names its run (docs/gpu-worker.md).
    expect(progress.calls.map((c) => c.body)).toEqual([
      { progress: 25, runpod_job_id: id },
      { progress: 50, runpod_job_id: id },
      { progress: 75, runpod_job_id: id },
    ]);
    expect(progress.calls[0]?.path).toBe("/runpod/progress/a?attempt=0");
    expect(progress.calls[0]?.contentType).toBe("application/json");
    const state = await jobState(id);
    expect(state.progressCalls.map((c) => [c.progress, c.status])).toEqual([
      [25, 204],
      [50, 204],
      [75, 204],
    ]);
    expect(state.input).toEqual(input);
    await progress.close();
  });

  it("completes with output {} when the input has no output_video_key", async () => {
    const endpoint = newEndpoint("no-key");
    const id = await submit(endpoint, { input: { anything: true } });
    expect((await waitForStatus(endpoint, id, "COMPLETED")).output).toEqual({});
  });

  it("rejects a /run body without an object input with 400 and creates no job", async () => {
    const endpoint = newEndpoint("bad-run");
    for (const body of [
      {},
      { input: [1] },
      { input: "x" },
      "not json",
      { input: {}, webhook: 3 },
    ]) {
      const res = await runpod("POST", `/v2/${endpoint}/run`, body);
      expect(res.status).toBe(400);
      expect(res.body.error).toEqual(expect.any(String));
    }
    expect((await call("GET", `/__emulator/jobs?endpoint=${endpoint}`)).body.jobs).toEqual([]);
  });

  it("answers 404 for an unknown id and for another endpoint's job", async () => {
    const endpoint = newEndpoint("unknown");
    const id = await submit(endpoint, { input: {} });
    const other = newEndpoint("other");
    for (const url of [
      `/v2/${endpoint}/status/nope-u1`,
      `/v2/${other}/status/${id}`,
      `/v2/${endpoint}/cancel/nope-u1`,
    ]) {
      const res = await runpod(url.includes("cancel") ? "POST" : "GET", url);
      expect(res).toEqual({ status: 404, body: { error: "request does not exist" } });
    }
  });

  it("reports /health from the endpoint's jobs", async () => {
    const endpoint = newEndpoint("health");
    await configure(endpoint, { outcomeScript: ["COMPLETED", "FAILED"] });
    const ids = [await submit(endpoint, { input: {} }), await submit(endpoint, { input: {} })];
    await waitForStatus(endpoint, ids[1] as string, "FAILED");
    await waitForStatus(endpoint, ids[0] as string, "COMPLETED");
    await configure(endpoint, { queueMs: 60_000 });
    await submit(endpoint, { input: {} });
    const res = await runpod("GET", `/v2/${endpoint}/health`);
    expect(res).toEqual({
      status: 200,
      body: {
        jobs: { completed: 1, failed: 1, inProgress: 0, inQueue: 1, retried: 0 },
        workers: { idle: 1, initializing: 0, ready: 1, running: 0, throttled: 0, unhealthy: 0 },
      },
    });
  });
});

describe("webhooks", () => {
  it("posts RunPod's status object once when the receiver answers 200", async () => {
    const endpoint = newEndpoint("webhook");
    const hook = await receiver([200]);
    const id = await submit(endpoint, {
      input: { output_video_key: "k.mp4" },
      webhook: `${hook.url}/runpod/webhook/j?attempt=0&sig=abc`,
      policy: { executionTimeout: 60_000, ttl: 60_000 },
    });
    await waitFor(async () => hook.calls.length === 1, "the webhook");
    const status = await runpod("GET", `/v2/${endpoint}/status/${id}`);
    expect(hook.calls[0]?.body).toEqual(status.body);
    expect(hook.calls[0]?.body).toMatchObject({
      id,
      status: "COMPLETED",
      output: { output_video_key: "k.mp4" },
    });
    expect(hook.calls[0]?.path).toBe("/runpod/webhook/j?attempt=0&sig=abc");
    expect(hook.calls[0]?.contentType).toBe("application/json");
    const state = await jobState(id);
    expect(state.webhookDeliveries).toEqual([
      {
        url: `${hook.url}/runpod/webhook/j?attempt=0&sig=abc`,
        attempt: 1,
        status: 200,
        error: null,
        at: expect.any(String),
      },
    ]);
    expect(state.policy).toEqual({ executionTimeout: 60_000, ttl: 60_000 });
    await hook.close();
  });

  it("tries a failing webhook 3 times in total, webhookRetryDelayMs apart, and no more", async () => {
    const endpoint = newEndpoint("retry");
    const hook = await receiver([500]);
    const id = await submit(endpoint, { input: {}, webhook: `${hook.url}/hook` });
    await waitFor(async () => hook.calls.length === 3, "three webhook attempts");
    const state = await waitFor(async () => {
      const s = await jobState(id);
      return s.webhookDeliveries.every((d) => d.status !== null) && s;
    }, "the third answer");
    await pause(200); // ten retry delays: a fourth attempt would have come by now
    expect(hook.calls).toHaveLength(3);
    expect((await jobState(id)).webhookDeliveries).toHaveLength(3);
    expect(state.webhookDeliveries.map((d) => [d.attempt, d.status])).toEqual([
      [1, 500],
      [2, 500],
      [3, 500],
    ]);
    for (const c of hook.calls) expect(c.body).toEqual(hook.calls[0]?.body);
    await hook.close();
  });

  it("stops retrying once the receiver answers 200, and records a failed connection", async () => {
    const endpoint = newEndpoint("recover");
    const hook = await receiver([503, 200]);
    const id = await submit(endpoint, { input: {}, webhook: `${hook.url}/hook` });
    await waitFor(async () => hook.calls.length === 2, "two attempts");
    await pause(200);
    expect(hook.calls).toHaveLength(2);
    expect((await jobState(id)).webhookDeliveries.map((d) => d.status)).toEqual([503, 200]);

    const closed = await receiver();
    await closed.close();
    const lost = await submit(endpoint, { input: {}, webhook: `${closed.url}/hook` });
    const state = await waitFor(async () => {
      const s = await jobState(lost);
      return s.webhookDeliveries.length === 3 && s.webhookDeliveries[2]?.error !== null && s;
    }, "three failed connections");
    expect(state.webhookDeliveries.map((d) => d.status)).toEqual([null, null, null]);
    await hook.close();
  });

  it("sends no webhook with dropWebhookRate 1, and follows webhookScript over the rate", async () => {
    const endpoint = newEndpoint("drop");
    await configure(endpoint, { dropWebhookRate: 1, runMs: 60_000 });
    const hook = await receiver();
    const id = await submit(endpoint, { input: {}, webhook: `${hook.url}/hook` });
    const finished = await call("POST", `/__emulator/jobs/${id}/finish`, { status: "COMPLETED" });
    expect(finished.body).toMatchObject({
      status: "COMPLETED",
      webhookDropped: true,
      webhookDeliveries: [],
    });

    await configure(endpoint, { webhookScript: ["send"] });
    const sent = await submit(endpoint, { input: {}, webhook: `${hook.url}/sent` });
    await call("POST", `/__emulator/jobs/${sent}/finish`, { status: "COMPLETED" });
    await waitFor(async () => hook.calls.length === 1, "the scripted webhook");
    await pause(100);
    expect(hook.calls.map((c) => c.path)).toEqual(["/sent"]);
    await hook.close();
  });
});

describe("faults", () => {
  it("answers /run per runScript [429, 500, 200] and creates a job only for 200", async () => {
    const endpoint = newEndpoint("script");
    await configure(endpoint, { runScript: [429, 500, 200], runMs: 60_000 });
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) {
      statuses.push((await runpod("POST", `/v2/${endpoint}/run`, { input: { i } })).status);
    }
    expect(statuses).toEqual([429, 500, 200, 200]);
    const { jobs } = (await call("GET", `/__emulator/jobs?endpoint=${endpoint}`)).body as {
      jobs: JobState[];
    };
    expect(jobs.map((j) => j.input)).toEqual([{ i: 2 }, { i: 3 }]);
    expect((await configure(endpoint, {})).runScript).toEqual([]);
  });

  it("ends a run FAILED with an error text per outcomeScript, and webhooks it", async () => {
    const endpoint = newEndpoint("failed");
    await configure(endpoint, { outcomeScript: ["FAILED", "TIMED_OUT"] });
    const hook = await receiver();
    const id = await submit(endpoint, { input: { output_video_key: "x" }, webhook: hook.url });
    const failed = await waitForStatus(endpoint, id, "FAILED");
    expect(failed).toEqual({
      id,
      status: "FAILED",
      delayTime: expect.any(Number),
      executionTime: expect.any(Number),
      error: "emulated failure",
    });
    await waitFor(async () => hook.calls.length === 1, "the FAILED webhook");
    expect(hook.calls[0]?.body).toEqual(failed);

    const timedOut = await submit(endpoint, { input: {} });
    expect((await waitForStatus(endpoint, timedOut, "TIMED_OUT")).output).toBeUndefined();
    await hook.close();
  });

  it("reports executionTime as the run's time in progress: its run length, or until its cancel", async () => {
    const endpoint = newEndpoint("exec-time");
    await configure(endpoint, { runMs: 400, queueMs: 0, progressSteps: [] });
    const id = await submit(endpoint, { input: { output_video_key: "x" } });
    const done = await waitForStatus(endpoint, id, "COMPLETED");
    const state = await jobState(id);
    const inProgressMs =
      Date.parse(state.finishedAt as string) - Date.parse(state.startedAt as string);
    expect(done.executionTime).toBe(inProgressMs);
    expect(done.executionTime).toBeGreaterThanOrEqual(400);

    await configure(endpoint, { runMs: 60_000, queueMs: 0, progressSteps: [] });
    const long = await submit(endpoint, { input: { output_video_key: "y" } });
    await waitFor(async () => (await jobState(long)).startedAt !== null, "the run to start");
    await runpod("POST", `/v2/${endpoint}/cancel/${long}`);
    const cancelled = await waitForStatus(endpoint, long, "CANCELLED");
    const after = await jobState(long);
    expect(cancelled.executionTime).toBe(
      Date.parse(after.finishedAt as string) - Date.parse(after.startedAt as string),
    );
    expect(cancelled.executionTime).toBeLessThan(60_000);
  });

  it("ends TIMED_OUT when policy.executionTimeout is shorter than runMs", async () => {
    const endpoint = newEndpoint("exec-timeout");
    await configure(endpoint, { runMs: 60_000 });
    const hook = await receiver();
    const id = await submit(endpoint, {
      input: { output_video_key: "x" },
      webhook: hook.url,
      policy: { executionTimeout: 50 },
    });
    const result = await waitForStatus(endpoint, id, "TIMED_OUT");
    expect(result.output).toBeUndefined();
    expect(result.executionTime).toEqual(expect.any(Number));
    await waitFor(async () => hook.calls.length === 1, "the TIMED_OUT webhook");
    expect(hook.calls[0]?.body).toMatchObject({ id, status: "TIMED_OUT" });
    await hook.close();
  });

  it("creates the job before a delayed /run answer (runDelayMs)", async () => {
    const endpoint = newEndpoint("slow-run");
    await configure(endpoint, { runDelayMs: 1000, runMs: 60_000 });
    const answer = runpod("POST", `/v2/${endpoint}/run`, { input: { slow: true } });
    const job = await waitFor(async () => {
      const { jobs } = (await call("GET", `/__emulator/jobs?endpoint=${endpoint}`)).body as {
        jobs: JobState[];
      };
      return jobs[0];
    }, "the job to exist");
    const { requests } = (await call("GET", `/__emulator/requests?endpoint=${endpoint}`)).body as {
      requests: RequestRecord[];
    };
    expect(requests[0]?.responseStatus).toBeNull();
    expect((await answer).body).toEqual({ id: job.id, status: "IN_QUEUE" });
  });

  it("answers 500 for runErrorRate 1 and statusErrorRate 1", async () => {
    const endpoint = newEndpoint("errors");
    await configure(endpoint, { runMs: 60_000 });
    const id = await submit(endpoint, { input: {} });
    await configure(endpoint, { runErrorRate: 1, statusErrorRate: 1 });
    expect(await runpod("POST", `/v2/${endpoint}/run`, { input: {} })).toEqual({
      status: 500,
      body: { error: "internal error" },
    });
    expect((await runpod("GET", `/v2/${endpoint}/status/${id}`)).status).toBe(500);
    await configure(endpoint, { runErrorRate: 0, runRateLimitRate: 1 });
    expect((await runpod("POST", `/v2/${endpoint}/run`, { input: {} })).status).toBe(429);
    expect((await call("GET", `/__emulator/jobs?endpoint=${endpoint}`)).body.jobs).toHaveLength(1);
  });

  it("draws the same outcomes from the same seed", async () => {
    const outcomes = async () => {
      const other = createRunpodEmulator({ apiKey: API_KEY, failRate: 0.5, queueMs: 60_000 });
      const { url } = await other.listen(0);
      const planned: string[] = [];
      for (let i = 0; i < 12; i++) {
        const res = await fetch(`${url}/v2/seeded/run`, {
          method: "POST",
          headers: AUTH,
          body: JSON.stringify({ input: {} }),
        });
        const { id } = (await res.json()) as { id: string };
        const state = (await (await fetch(`${url}/__emulator/jobs/${id}`)).json()) as JobState;
        planned.push(state.plannedOutcome);
      }
      await other.close();
      return planned;
    };
    const first = await outcomes();
    expect(first).toEqual(await outcomes());
    expect(new Set(first)).toEqual(new Set(["COMPLETED", "FAILED"]));
  });
});

describe("cancel, retention and ttl", () => {
  it("cancels a running job: CANCELLED, no webhook, no further progress", async () => {
    const endpoint = newEndpoint("cancel");
    await configure(endpoint, { runMs: 1000, progressSteps: [25, 50, 75] });
    const hook = await receiver();
    const progress = await receiver();
    const id = await submit(endpoint, {
      input: { progress_url: `${progress.url}/p` },
      webhook: `${hook.url}/hook`,
    });
    await waitFor(async () => progress.calls.length > 0, "the first progress call");
    const cancelled = await runpod("POST", `/v2/${endpoint}/cancel/${id}`);
    expect(cancelled).toEqual({ status: 200, body: { id, status: "CANCELLED" } });
    const calls = progress.calls.length;
    await pause(1000); // past the end of the run
    expect(progress.calls).toHaveLength(calls);
    expect(hook.calls).toHaveLength(0);
    const state = await jobState(id);
    expect(state).toMatchObject({
      status: "CANCELLED",
      webhookDeliveries: [],
      webhookDropped: false,
    });
    expect((await runpod("GET", `/v2/${endpoint}/status/${id}`)).body.status).toBe("CANCELLED");
    expect((await runpod("POST", `/v2/${endpoint}/cancel/${id}`)).body.status).toBe("CANCELLED");
    await hook.close();
    await progress.close();
  });

  it("keeps a finished job's status as it is on cancel", async () => {
    const endpoint = newEndpoint("cancel-done");
    const id = await submit(endpoint, { input: {} });
    await waitForStatus(endpoint, id, "COMPLETED");
    expect((await runpod("POST", `/v2/${endpoint}/cancel/${id}`)).body).toEqual({
      id,
      status: "COMPLETED",
    });
  });

  it("forgets a finished job after retentionMs, and a queued job after policy.ttl", async () => {
    const endpoint = newEndpoint("retention");
    await configure(endpoint, { retentionMs: 500 });
    const id = await submit(endpoint, { input: {} });
    const seen = new Set<unknown>();
    const gone = await waitFor(async () => {
      const res = await runpod("GET", `/v2/${endpoint}/status/${id}`);
      seen.add(res.body.status);
      return res.status === 404 && res;
    }, "the result to expire");
    expect(seen).toContain("COMPLETED");
    expect(gone.body).toEqual({ error: "request does not exist" });

    await configure(endpoint, { queueMs: 60_000 });
    const queued = await submit(endpoint, { input: {}, policy: { ttl: 500 } });
    expect((await runpod("GET", `/v2/${endpoint}/status/${queued}`)).body.status).toBe("IN_QUEUE");
    await waitFor(async () => {
      return (await runpod("GET", `/v2/${endpoint}/status/${queued}`)).status === 404;
    }, "the queued job to expire");
    expect((await call("GET", `/__emulator/jobs/${queued}`)).status).toBe(404);
  });
});

describe("admin API", () => {
  it("logs every /v2 request of an endpoint, oldest first", async () => {
    const endpoint = newEndpoint("log");
    await runpod("GET", `/v2/${newEndpoint("elsewhere")}/health`);
    await configure(endpoint, { runMs: 60_000 });
    const id = await submit(endpoint, { input: { n: 1 }, webhook: "http://127.0.0.1:9/x" });
    await runpod("GET", `/v2/${endpoint}/status/${id}`);
    await runpod("GET", `/v2/${endpoint}/status/missing-u1`);
    const { requests } = (await call("GET", `/__emulator/requests?endpoint=${endpoint}`)).body as {
      requests: RequestRecord[];
    };
    expect(requests).toEqual([
      {
        method: "POST",
        path: `/v2/${endpoint}/run`,
        endpointId: endpoint,
        authorization: `Bearer ${API_KEY}`,
        body: { input: { n: 1 }, webhook: "http://127.0.0.1:9/x" },
        receivedAt: expect.any(String),
        responseStatus: 200,
      },
      expect.objectContaining({
        method: "GET",
        path: `/v2/${endpoint}/status/${id}`,
        body: null,
        responseStatus: 200,
      }),
      expect.objectContaining({ path: `/v2/${endpoint}/status/missing-u1`, responseStatus: 404 }),
    ]);
    const all = (await call("GET", "/__emulator/requests")).body.requests as RequestRecord[];
    expect(new Set(all.map((r) => r.endpointId)).size).toBeGreaterThan(1);
  });

  it("validates PUT config by hand and returns the effective config", async () => {
    const endpoint = newEndpoint("config");
    for (const bad of [
      { bogus: 1 },
      { runMs: "fast" },
      { runMs: -1 },
      { failRate: 1.5 },
      { runScript: [201] },
      { outcomeScript: ["DONE"] },
      { webhookScript: "drop" },
      { progressSteps: [50, 150] },
      [1, 2],
      "{not json",
    ]) {
      const res = await call("PUT", `/__emulator/endpoints/${endpoint}/config`, bad);
      expect(res.status, JSON.stringify(bad)).toBe(400);
      expect(res.body.error).toEqual(expect.any(String));
    }
    const unknown = await call("PUT", `/__emulator/endpoints/${endpoint}/config`, { bogus: 1 });
    expect(unknown.body.error).toMatch(/bogus/);

    const effective = await configure(endpoint, { failRate: 0.25, runScript: [429] });
    expect(effective).toMatchObject({
      queueMs: 10, // from the options
      runMs: 100,
      webhookRetryDelayMs: 20,
      retentionMs: 1_800_000, // built-in default
      failRate: 0.25,
      runScript: [429],
    });
    expect((await call("GET", `/__emulator/endpoints/${endpoint}/config`)).body).toEqual(effective);
  });

  it("finishes a job on demand, refuses a second finish, and resets an endpoint", async () => {
    const endpoint = newEndpoint("finish");
    await configure(endpoint, { queueMs: 60_000, failRate: 1 });
    const hook = await receiver();
    const id = await submit(endpoint, { input: {}, webhook: hook.url });
    const bad = await call("POST", `/__emulator/jobs/${id}/finish`, { status: "DONE" });
    expect(bad.status).toBe(400);
    const finished = await call("POST", `/__emulator/jobs/${id}/finish`, {
      status: "FAILED",
      error: "GPU on fire",
    });
    expect(finished.body).toMatchObject({ status: "FAILED", error: "GPU on fire" });
    await waitFor(async () => hook.calls.length === 1, "the webhook");
    expect(hook.calls[0]?.body).toMatchObject({ id, status: "FAILED", error: "GPU on fire" });
    const again = await call("POST", `/__emulator/jobs/${id}/finish`, { status: "COMPLETED" });
    expect(again.status).toBe(409);
    expect(
      (await call("POST", "/__emulator/jobs/nope-u1/finish", { status: "COMPLETED" })).status,
    ).toBe(404);

    const kept = newEndpoint("kept");
    await configure(kept, { queueMs: 60_000 });
    const keptId = await submit(kept, { input: {} });
    expect((await call("POST", `/__emulator/reset?endpoint=${endpoint}`)).status).toBe(200);
    expect((await call("GET", `/__emulator/jobs/${id}`)).status).toBe(404);
    expect((await call("GET", `/__emulator/requests?endpoint=${endpoint}`)).body.requests).toEqual(
      [],
    );
    expect((await call("GET", `/__emulator/endpoints/${endpoint}/config`)).body.failRate).toBe(0);
    expect((await jobState(keptId)).status).toBe("IN_QUEUE");
    await hook.close();
  });

  it("answers GET /health without auth", async () => {
    expect(await call("GET", "/health")).toEqual({ status: 200, body: { ok: true } });
  });
});

describe("rate limit, outage and workers", () => {
  it("rate-limits /run with a token bucket (runRateLimitPerS): 429 + Retry-After, no job", async () => {
    const endpoint = newEndpoint("bucket");
    expect(await runAnswers(endpoint)).toEqual({ 200: 0, 429: 0, 500: 0, 503: 0 });
    await configure(endpoint, { runRateLimitPerS: 3, runMs: 60_000 });
    const burst = [
      await run(endpoint),
      await run(endpoint),
      await run(endpoint),
      await run(endpoint),
    ];
    expect(burst.map((r) => r.status)).toEqual([200, 200, 200, 429]); // capacity 3
    expect(burst[3]).toEqual({ status: 429, retryAfter: "1", body: { error: "rate limited" } });
    await pause(400); // refilled 1.2 tokens
    expect((await run(endpoint)).status).toBe(200);
    expect((await run(endpoint)).status).toBe(429);
    expect(await jobCount(endpoint)).toBe(4);
    expect(await runAnswers(endpoint)).toEqual({ 200: 4, 429: 2, 500: 0, 503: 0 });

    const slow = newEndpoint("bucket-slow");
    await configure(slow, { runRateLimitPerS: 0.5, runMs: 60_000 }); // capacity 1
    expect((await run(slow)).status).toBe(200);
    expect(await run(slow)).toMatchObject({ status: 429, retryAfter: "2" });
    await configure(slow, { runRateLimitPerS: 0 });
    expect((await run(slow)).status).toBe(200);
  });

  it("answers outageStatus to /run, /status and /cancel during an outage; runs in flight finish", async () => {
    const endpoint = newEndpoint("outage");
    await configure(endpoint, { runMs: 300 });
    const hook = await receiver();
    const id = await submit(endpoint, { input: { output_video_key: "k" }, webhook: hook.url });
    await configure(endpoint, { outage: true });
    const down = { status: 503, body: { error: "service unavailable" } };
    expect(await runpod("POST", `/v2/${endpoint}/run`, { input: {} })).toEqual(down);
    expect(await runpod("GET", `/v2/${endpoint}/status/${id}`)).toEqual(down);
    expect(await runpod("POST", `/v2/${endpoint}/cancel/${id}`)).toEqual(down);
    expect((await runpod("GET", `/v2/${endpoint}/health`)).status).toBe(200);
    expect((await jobState(id)).status).not.toBe("CANCELLED");
    await waitFor(async () => hook.calls.length === 1, "the webhook during the outage");
    expect(hook.calls[0]?.body).toMatchObject({
      id,
      status: "COMPLETED",
      output: { output_video_key: "k" },
    });
    await configure(endpoint, { outageStatus: 500 });
    expect(await runpod("POST", `/v2/${endpoint}/run`, { input: {} })).toEqual({
      ...down,
      status: 500,
    });
    expect(await jobCount(endpoint)).toBe(1);
    await configure(endpoint, { outage: false });
    expect((await runpod("GET", `/v2/${endpoint}/status/${id}`)).body.status).toBe("COMPLETED");
    expect(await runAnswers(endpoint)).toEqual({ 200: 1, 429: 0, 500: 1, 503: 1 });
    await hook.close();
  });

  it("ends an outage by itself at outageUntilMs", async () => {
    const endpoint = newEndpoint("outage-until");
    const until = Date.now() + 150;
    await configure(endpoint, { outageUntilMs: until, runMs: 60_000 });
    expect((await run(endpoint)).status).toBe(503);
    await waitFor(async () => (await run(endpoint)).status === 200, "the outage to end");
    expect(Date.now()).toBeGreaterThanOrEqual(until);
    expect(await jobCount(endpoint)).toBe(1);
  });

  it("runs at most maxWorkers jobs at once; the rest start first in first out as workers free", async () => {
    const endpoint = newEndpoint("workers");
    await configure(endpoint, { maxWorkers: 2, queueMs: 0, runMs: 60_000 });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await submit(endpoint, { input: { i } }));
    const statuses = () => Promise.all(ids.map(async (id) => (await jobState(id)).status));
    await waitFor(async () => (await statuses())[1] === "IN_PROGRESS", "two running jobs");
    await pause(30);
    expect(await statuses()).toEqual([
      "IN_PROGRESS",
      "IN_PROGRESS",
      "IN_QUEUE",
      "IN_QUEUE",
      "IN_QUEUE",
    ]);
    expect((await runpod("GET", `/v2/${endpoint}/health`)).body).toMatchObject({
      jobs: { inProgress: 2, inQueue: 3 },
      workers: { idle: 0, running: 2 },
    });

    await runpod("POST", `/v2/${endpoint}/cancel/${ids[0]}`);
    expect(await statuses()).toEqual([
      "CANCELLED",
      "IN_PROGRESS",
      "IN_PROGRESS",
      "IN_QUEUE",
      "IN_QUEUE",
    ]);
    await call("POST", `/__emulator/jobs/${ids[1]}/finish`, { status: "FAILED" });
    expect((await statuses()).slice(1)).toEqual([
      "FAILED",
      "IN_PROGRESS",
      "IN_PROGRESS",
      "IN_QUEUE",
    ]);
    await call("POST", `/__emulator/jobs/${ids[2]}/finish`, { status: "COMPLETED" });
    expect((await statuses()).slice(2)).toEqual(["COMPLETED", "IN_PROGRESS", "IN_PROGRESS"]);

    const states = await Promise.all(ids.map(jobState));
    const started = states.map((s) => Date.parse(s.startedAt ?? ""));
    expect(started).toEqual([...started].sort((a, b) => a - b));
    expect(started[2]).toBeGreaterThanOrEqual(Date.parse(states[0]?.finishedAt ?? ""));
    expect(started[4]).toBeGreaterThanOrEqual(Date.parse(states[2]?.finishedAt ?? ""));
    expect(states[4]?.delayTime).toBeGreaterThanOrEqual(30);

    await configure(endpoint, { maxWorkers: 0 }); // unlimited again: the waiting job starts
    expect((await jobState(ids[4] as string)).status).toBe("IN_PROGRESS");
  });

  it("frees a worker when a run completes, fails or times out, one job at a time in order", async () => {
    const endpoint = newEndpoint("workers-timed");
    await configure(endpoint, {
      maxWorkers: 1,
      queueMs: 20,
      runMs: 40,
      outcomeScript: ["COMPLETED", "FAILED", "COMPLETED", "COMPLETED"],
    });
    const ids = [
      await submit(endpoint, { input: {} }),
      await submit(endpoint, { input: {} }),
      await submit(endpoint, { input: {}, policy: { executionTimeout: 10 } }),
      await submit(endpoint, { input: {} }),
    ];
    await waitForStatus(endpoint, ids[3] as string, "COMPLETED");
    const states = await Promise.all(ids.map(jobState));
    expect(states.map((s) => s.status)).toEqual(["COMPLETED", "FAILED", "TIMED_OUT", "COMPLETED"]);
    expect(states[0]?.delayTime).toBeGreaterThanOrEqual(20); // queueMs is still the minimum wait
    for (let i = 1; i < states.length; i++) {
      const started = Date.parse(states[i]?.startedAt ?? "");
      expect(started).toBeGreaterThanOrEqual(Date.parse(states[i - 1]?.finishedAt ?? ""));
    }
  });

  it("answers 429 to a /run while maxQueue jobs are IN_QUEUE", async () => {
    const endpoint = newEndpoint("max-queue");
    await configure(endpoint, { maxWorkers: 1, maxQueue: 2, queueMs: 0, runMs: 60_000 });
    const running = await submit(endpoint, { input: {} });
    await waitFor(async () => (await jobState(running)).status === "IN_PROGRESS", "the first run");
    const queued = [await submit(endpoint, { input: {} }), await submit(endpoint, { input: {} })];
    expect(await run(endpoint)).toMatchObject({ status: 429, body: { error: "queue full" } });
    expect(await jobCount(endpoint)).toBe(3);
    await runpod("POST", `/v2/${endpoint}/cancel/${queued[0]}`);
    expect((await run(endpoint)).status).toBe(200);
    expect(await runAnswers(endpoint)).toEqual({ 200: 4, 429: 1, 500: 0, 503: 0 });
  });

  it("validates the new settings and takes them as options", async () => {
    const endpoint = newEndpoint("config-new");
    for (const bad of [
      { runRateLimitPerS: -1 },
      { runRateLimitPerS: "5" },
      { outage: 1 },
      { outageStatus: 200 },
      { outageStatus: 503.5 },
      { outageUntilMs: -1 },
      { maxWorkers: 1.5 },
      { maxQueue: "2" },
      { onComplete: null },
    ]) {
      const res = await call("PUT", `/__emulator/endpoints/${endpoint}/config`, bad);
      expect(res.status, JSON.stringify(bad)).toBe(400);
      expect(res.body.error).toContain(Object.keys(bad)[0]);
    }
    expect((await call("GET", `/__emulator/endpoints/${endpoint}/config`)).body).toMatchObject({
      runRateLimitPerS: 0,
      outage: false,
      outageStatus: 503,
      outageUntilMs: 0,
      maxWorkers: 0,
      maxQueue: 0,
    });
    const other = createRunpodEmulator({ maxWorkers: 3, outage: true, onComplete: () => {} });
    const { url } = await other.listen(0);
    const config = await (await fetch(`${url}/__emulator/endpoints/e/config`)).json();
    expect(config).toMatchObject({ maxWorkers: 3, outage: true });
    await other.close();
  });
});

describe("autoscaling fleet (workersMax > 0)", () => {
  it("QUEUE_DELAY: the first request adds a worker, later ones after scalerValue s; cold starts show", async () => {
    const endpoint = newEndpoint("queue-delay");
    const hook = await receiver();
    await configure(endpoint, {
      ...FLEET,
      workersMax: 2,
      scalerType: "QUEUE_DELAY",
      scalerValue: 0.4,
      coldStartMs: 1000,
    });
    expect((await health(endpoint)).workers).toEqual({
      idle: 0,
      initializing: 0,
      ready: 0,
      running: 0,
      throttled: 0,
      unhealthy: 0,
    });

    // RunPod: "with zero workers initially, the first request adds one worker" (no waiting).
    const first = await submit(endpoint, { input: { output_video_key: "a" }, webhook: hook.url });
    const booting = await fleet(endpoint);
    expect(booting.workers).toHaveLength(1);
    const submittedAt = Date.parse((await jobState(first)).submittedAt);
    expect(booting.workers[0]?.startedAt).toBeLessThan(submittedAt + 400);
    await waitFor(async () => (await health(endpoint)).workers.initializing === 1, "a cold start");
    expect((await health(endpoint)).jobs.inQueue).toBe(1);
    const running = await waitForStatus(endpoint, first, "IN_PROGRESS");
    expect(running.delayTime).toBeGreaterThanOrEqual(1000); // the cold start

    // The second run waits scalerValue seconds before a worker is added, then its cold start.
    const second = await submit(endpoint, { input: {} });
    await waitFor(async () => {
      const { workers, jobs } = await health(endpoint);
      return workers.initializing === 1 && workers.running === 1 && jobs.inQueue === 1;
    }, "the second worker's cold start");
    await waitForStatus(endpoint, second, "IN_PROGRESS");
    const secondState = await jobState(second);
    const added = (await fleet(endpoint)).workers.find((w) => w.id === "worker-2");
    expect(added?.startedAt).toBeGreaterThanOrEqual(Date.parse(secondState.submittedAt) + 400);
    expect(secondState.delayTime).toBeGreaterThanOrEqual(1400);
    expect(secondState.workerId).toBe("worker-2");

    // At workersMax, a third run waits for a worker to be free.
    const third = await submit(endpoint, { input: {} });
    await pause(700); // past scalerValue, many checks
    expect((await fleet(endpoint)).workers.map((w) => w.state)).toEqual(["running", "running"]);
    expect((await jobState(third)).status).toBe("IN_QUEUE");
    await call("POST", `/__emulator/jobs/${first}/finish`, { status: "COMPLETED" });
    expect(await jobState(third)).toMatchObject({ status: "IN_PROGRESS", workerId: "worker-1" });

    // delayTime (queued, cold start included) and executionTime in /status and the webhook.
    await waitFor(async () => hook.calls.length === 1, "the webhook");
    const status = (await runpod("GET", `/v2/${endpoint}/status/${first}`)).body;
    expect(hook.calls[0]?.body).toEqual(status);
    expect(status).toEqual({
      id: first,
      status: "COMPLETED",
      delayTime: running.delayTime,
      executionTime: expect.any(Number),
      output: { output_video_key: "a" },
    });
    const report = await fleet(endpoint);
    expect(report.peakWorkers).toBe(2);
    expect(report.workersStarted).toBe(2);
    expect(report.workerMs.initializing).toBeGreaterThanOrEqual(2000); // two cold starts
    await hook.close();
  });

  it("REQUEST_COUNT: ceil((inQueue + inProgress) / scalerValue) workers, capped by workersMax", async () => {
    const endpoint = newEndpoint("request-count");
    await configure(endpoint, {
      ...FLEET,
      workersMax: 4,
      scalerType: "REQUEST_COUNT",
      scalerValue: 2,
      coldStartMs: 0,
    });
    for (let i = 0; i < 5; i++) await submit(endpoint, { input: { i } });
    await waitFor(async () => (await fleet(endpoint)).current.running === 3, "three workers");
    await pause(300); // six checks: still ceil(5 / 2)
    expect((await fleet(endpoint)).workers).toHaveLength(3);
    expect(await health(endpoint)).toMatchObject({
      jobs: { inProgress: 3, inQueue: 2 },
      workers: { idle: 0, running: 3, ready: 0 },
    });

    for (let i = 0; i < 3; i++) await submit(endpoint, { input: { i } });
    await waitFor(async () => (await fleet(endpoint)).workers.length === 4, "ceil(8 / 2) workers");
    for (let i = 0; i < 4; i++) await submit(endpoint, { input: { i } }); // ceil(12 / 2) = 6
    await pause(300);
    const report = await fleet(endpoint);
    expect(report.workers).toHaveLength(4);
    expect(report.peakWorkers).toBe(4);
    expect(report.current).toMatchObject({ running: 4, inQueue: 8, inProgress: 4 });
  });

  it("stops idle workers after idleTimeoutMs, down to workersMin, and never below", async () => {
    const endpoint = newEndpoint("scale-down");
    await configure(endpoint, {
      ...FLEET,
      workersMin: 1,
      workersMax: 3,
      scalerType: "REQUEST_COUNT",
      scalerValue: 1,
      coldStartMs: 0,
      idleTimeoutMs: 300,
    });
    expect((await health(endpoint)).workers).toMatchObject({ idle: 1, ready: 1, running: 0 });
    const ids = [];
    for (let i = 0; i < 3; i++) ids.push(await submit(endpoint, { input: {} }));
    await waitFor(async () => (await fleet(endpoint)).current.running === 3, "three running");
    for (const id of ids) await call("POST", `/__emulator/jobs/${id}/finish`, { status: "FAILED" });
    const finished = (await Promise.all(ids.map(jobState))).map((s) =>
      Date.parse(s.finishedAt ?? ""),
    );
    await waitFor(async () => (await fleet(endpoint)).workers.length === 1, "one worker left");
    await pause(450); // past another idle timeout: the last worker stays
    const report = await fleet(endpoint);
    expect(report.workers.map((w) => w.state)).toEqual(["idle"]);
    expect(report.workersStopped).toBe(2);
    expect((await health(endpoint)).workers).toMatchObject({ idle: 1, ready: 1, running: 0 });
    // The first stop came idleTimeoutMs after a worker went idle, not sooner.
    const total = (s: FleetSample) => s.idle + s.running + s.initializing + s.throttled;
    const peak = report.timeline.findLastIndex((s) => total(s) === 3);
    const firstStop = report.timeline[peak + 1];
    expect(firstStop?.at).toBeGreaterThanOrEqual(Math.min(...finished) + 300);
  });

  it("lowPriority runs trigger no scaling but run on free workers, first in first out", async () => {
    const endpoint = newEndpoint("low-priority");
    await configure(endpoint, {
      ...FLEET,
      workersMax: 2,
      scalerType: "QUEUE_DELAY",
      scalerValue: 0.2,
      coldStartMs: 0,
    });
    const low = await submit(endpoint, { input: {}, policy: { lowPriority: true } });
    await pause(500); // past scalerValue: still no worker
    expect((await fleet(endpoint)).workers).toEqual([]);
    expect((await health(endpoint)).jobs.inQueue).toBe(1);
    // A normal run adds a worker; the low-priority run, first in the queue, takes it.
    const normal = await submit(endpoint, { input: {} });
    await waitForStatus(endpoint, normal, "IN_PROGRESS");
    expect((await jobState(low)).workerId).toBe("worker-1");
    expect((await jobState(normal)).workerId).toBe("worker-2");

    const counted = newEndpoint("low-priority-count");
    await configure(counted, {
      ...FLEET,
      workersMin: 1,
      workersMax: 3,
      scalerType: "REQUEST_COUNT",
      scalerValue: 1,
      coldStartMs: 0,
      runMs: 100,
    });
    const lows = [];
    for (let i = 0; i < 3; i++) {
      lows.push(await submit(counted, { input: {}, policy: { lowPriority: true } }));
    }
    await waitForStatus(counted, lows[2] as string, "COMPLETED");
    const states = await Promise.all(lows.map(jobState));
    expect(states.map((s) => s.workerId)).toEqual(["worker-1", "worker-1", "worker-1"]);
    expect((await fleet(counted)).peakWorkers).toBe(1);
  });

  it("shows throttled workers, which hold a slot and never run a job until throttling ends", async () => {
    const endpoint = newEndpoint("throttled");
    await configure(endpoint, {
      ...FLEET,
      workersMax: 2,
      throttledWorkers: 1,
      scalerType: "QUEUE_DELAY",
      scalerValue: 0.2,
      coldStartMs: 0,
    });
    const first = await submit(endpoint, { input: {} });
    await waitForStatus(endpoint, first, "IN_PROGRESS"); // on a second worker, after the delay
    expect((await jobState(first)).workerId).toBe("worker-2");
    expect((await health(endpoint)).workers).toMatchObject({
      idle: 0,
      ready: 0,
      running: 1,
      throttled: 1,
    });
    const second = await submit(endpoint, { input: {} });
    await pause(500);
    expect((await jobState(second)).status).toBe("IN_QUEUE");
    expect((await fleet(endpoint)).workers).toMatchObject([
      { id: "worker-1", state: "throttled", jobId: null },
      { id: "worker-2", state: "running", jobId: first },
    ]);

    await configure(endpoint, { throttledWorkers: 0 }); // the GPU comes
    expect(await jobState(second)).toMatchObject({ status: "IN_PROGRESS", workerId: "worker-1" });
    const { workerMs, billedWorkerMs } = await fleet(endpoint);
    expect(workerMs.throttled).toBeGreaterThanOrEqual(500);
    expect(billedWorkerMs).toBe(workerMs.initializing + workerMs.idle + workerMs.running);
  });

  it("integrates worker time in GET /fleet, also for maxWorkers' fixed fleet", async () => {
    const fixed = newEndpoint("fleet-fixed");
    await configure(fixed, { maxWorkers: 2, queueMs: 200, runMs: 100 });
    const before = await fleet(fixed);
    expect(before).toMatchObject({ mode: "fixed", workers: [], current: { idle: 2, running: 0 } });
    const ids = [await submit(fixed, { input: {} }), await submit(fixed, { input: {} })];
    await waitForStatus(fixed, ids[1] as string, "COMPLETED");
    await waitForStatus(fixed, ids[0] as string, "COMPLETED");
    const states = await Promise.all(ids.map(jobState));
    const report = await fleet(fixed);
    const sum = (key: "delayTime" | "executionTime") =>
      states.reduce((total, s) => total + (s[key] ?? 0), 0);
    expect(report.workerMs.running).toBe(sum("executionTime"));
    // Two always-ready workers from the config change on (none before).
    const fixedFrom = report.timeline.find((s) => s.idle === 2)?.at ?? Number.NaN;
    expect(report.workerMs.idle + report.workerMs.running).toBe(2 * (report.at - fixedFrom));
    expect(report.billedWorkerMs).toBe(report.workerMs.idle + report.workerMs.running);
    // Two idle workers while each job sat out queueMs.
    expect(report.idleWhileQueuedMs).toBe(sum("delayTime"));
    expect(report.peakWorkers).toBe(2);
    expect(report.timeline[0]).toMatchObject({ at: report.since, running: 0, inQueue: 0 });
    expect(report.timeline.at(-1)).toMatchObject({ idle: 2, running: 0, inQueue: 0 });
    const at = report.timeline.map((s) => s.at);
    expect(at).toEqual([...at].sort((a, b) => a - b));
    expect(report.timeline.some((s) => s.running === 2)).toBe(true);

    const scaled = newEndpoint("fleet-scaled");
    await configure(scaled, {
      ...FLEET,
      workersMax: 2,
      scalerType: "REQUEST_COUNT",
      scalerValue: 1,
      coldStartMs: 100,
      runMs: 100,
    });
    const runs = [await submit(scaled, { input: {} }), await submit(scaled, { input: {} })];
    for (const id of runs) await waitForStatus(scaled, id, "COMPLETED");
    const figures = await fleet(scaled);
    const ran = await Promise.all(runs.map(jobState));
    expect(figures.mode).toBe("autoscaling");
    expect(figures.workerMs.running).toBe(ran.reduce((t, s) => t + (s.executionTime ?? 0), 0));
    expect(figures.workerMs.initializing).toBeGreaterThanOrEqual(200);
    expect(figures.billedWorkerMs).toBe(
      figures.workerMs.initializing + figures.workerMs.idle + figures.workerMs.running,
    );
    expect(figures.timeline.some((s) => s.initializing > 0 && s.inQueue > 0)).toBe(true);
    expect(figures.workers.map((w) => w.state)).toEqual(["idle", "idle"]);
  });

  it("switches at runtime: workersMin starts workers, workersMax 0 returns to maxWorkers", async () => {
    const endpoint = newEndpoint("fleet-runtime");
    await configure(endpoint, { ...FLEET, workersMax: 3, coldStartMs: 60_000 });
    expect((await fleet(endpoint)).workers).toEqual([]);
    await configure(endpoint, { workersMin: 2 });
    expect((await health(endpoint)).workers).toMatchObject({ initializing: 2, idle: 0 });
    await configure(endpoint, { workersMax: 1 }); // workersMin is capped by workersMax
    expect((await fleet(endpoint)).workers.map((w) => w.id)).toEqual(["worker-1"]);
    await configure(endpoint, { workersMax: 0, maxWorkers: 1 });
    expect(await fleet(endpoint)).toMatchObject({ mode: "fixed", workers: [] });
    const id = await submit(endpoint, { input: {} });
    await waitForStatus(endpoint, id, "IN_PROGRESS");
    expect((await jobState(id)).workerId).toBeNull();

    await configure(endpoint, { workersMax: 2, workersMin: 2, maxWorkers: 0 });
    expect((await fleet(endpoint)).workers).toHaveLength(2);
    expect((await call("POST", `/__emulator/reset?endpoint=${endpoint}`)).status).toBe(200);
    expect(await fleet(endpoint)).toMatchObject({ mode: "unlimited", workers: [] });
  });

  it("validates the fleet settings and takes them as options", async () => {
    const endpoint = newEndpoint("fleet-config");
    for (const bad of [
      { workersMax: -1 },
      { workersMin: 1.5 },
      { throttledWorkers: "1" },
      { scalerType: "QUEUE" },
      { scalerValue: 0 },
      { scalerIntervalMs: 0 },
      { coldStartMs: -5 },
      { idleTimeoutMs: "5s" },
    ]) {
      const res = await call("PUT", `/__emulator/endpoints/${endpoint}/config`, bad);
      expect(res.status, JSON.stringify(bad)).toBe(400);
      expect(res.body.error).toContain(Object.keys(bad)[0]);
    }
    expect((await call("GET", `/__emulator/endpoints/${endpoint}/config`)).body).toMatchObject({
      workersMax: 0,
      workersMin: 0,
      scalerType: "QUEUE_DELAY",
      scalerValue: 4,
      scalerIntervalMs: 1000,
      coldStartMs: 0,
      idleTimeoutMs: 5000,
      throttledWorkers: 0,
    });
    const other = createRunpodEmulator({
      apiKey: API_KEY,
      workersMin: 2,
      workersMax: 3,
      throttledWorkers: 1,
      coldStartMs: 60_000,
    });
    const { url } = await other.listen(0);
    const res = await fetch(`${url}/v2/e/health`, { headers: AUTH });
    expect(((await res.json()) as Health).workers).toMatchObject({ initializing: 1, throttled: 1 });
    await other.close(); // clears the cold start and idle timers
  });
});

describe("onComplete", () => {
  it("is awaited before COMPLETED; a throw ends the job FAILED; admin finish and cancel", async () => {
    const seen: { id: string; input: Record<string, unknown>; status: unknown }[] = [];
    let open: () => void = () => {};
    const other = createRunpodEmulator({
      apiKey: API_KEY,
      queueMs: 0,
      runMs: 10,
      onComplete: async ({ id, input }) => {
        const state = (await (
          await fetch(`${other.url}/__emulator/jobs/${id}`)
        ).json()) as JobState;
        seen.push({ id, input, status: state.status });
        if (input.hold) await new Promise<void>((resolve) => (open = resolve));
        if (input.fail) throw new Error("R2 down");
      },
    });
    const { url } = await other.listen(0);
    const at = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(`${url}${path}`, {
        method,
        headers: AUTH,
        body: JSON.stringify(body),
      });
      return (await res.json()) as Record<string, unknown>;
    };
    const start = async (endpoint: string, input: Record<string, unknown>, webhook?: string) =>
      (await at("POST", `/v2/${endpoint}/run`, { input, webhook })).id as string;
    const statusOf = async (id: string) => (await at("GET", `/v2/e/status/${id}`)).status;

    const held = await start("e", { output_video_key: "a.mp4", hold: true });
    await waitFor(async () => seen.length === 1, "the hook");
    expect(seen[0]).toEqual({
      id: held,
      input: { output_video_key: "a.mp4", hold: true },
      status: "IN_PROGRESS",
    });
    await pause(30);
    expect(await statusOf(held)).toBe("IN_PROGRESS");
    open();
    await waitFor(async () => (await statusOf(held)) === "COMPLETED", "COMPLETED after the hook");
    expect((await at("GET", `/v2/e/status/${held}`)).output).toEqual({ output_video_key: "a.mp4" });

    const hook = await receiver();
    const failing = await start("e", { fail: true }, hook.url);
    await waitFor(async () => hook.calls.length === 1, "the FAILED webhook");
    expect(hook.calls[0]?.body).toMatchObject({
      id: failing,
      status: "FAILED",
      error: "output upload failed: R2 down",
    });

    await at("PUT", "/__emulator/endpoints/e/config", { runMs: 60_000 });
    const manual = await start("e", { n: 1 });
    const finished = await at("POST", `/__emulator/jobs/${manual}/finish`, { status: "COMPLETED" });
    expect(finished.status).toBe("COMPLETED");
    expect(seen.map((s) => s.id)).toContain(manual);

    const cancelled = await start("e", { hold: true });
    const pending = at("POST", `/__emulator/jobs/${cancelled}/finish`, { status: "COMPLETED" });
    await waitFor(async () => seen.length === 4, "the held hook");
    expect((await at("POST", `/v2/e/cancel/${cancelled}`)).status).toBe("CANCELLED");
    open();
    expect((await pending).status).toBe("CANCELLED");
    expect(await statusOf(cancelled)).toBe("CANCELLED");
    await hook.close();
    await other.close();
  });
});

describe("CLI", () => {
  it("prints where it listens, serves, and exits on SIGTERM", async () => {
    const main = path.join(
      path.dirname(new URL(import.meta.url).pathname),
      "../../emulator/main.ts",
    );
    const child = spawn(process.execPath, [main], {
      env: {
        ...process.env,
        RUNPOD_EMULATOR_PORT: "0",
        RUNPOD_EMULATOR_RUN_MS: "5",
        RUNPOD_EMULATOR_LOG: "0",
      },
      stdio: ["ignore", "pipe", "inherit"],
    });
    const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
    const lines = createInterface({ input: child.stdout });
    const first = await new Promise<string>((resolve) => lines.once("line", resolve));
    expect(first).toMatch(/^runpod emulator listening on http:\/\/127\.0\.0\.1:\d+\/v2$/);
    const base = first.replace("runpod emulator listening on ", "");
    const config = await fetch(`${new URL(base).origin}/__emulator/endpoints/e/config`);
    expect(((await config.json()) as { runMs: number }).runMs).toBe(5);
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
  });

  it("reads the worker, rate limit and outage settings from RUNPOD_EMULATOR_* variables", async () => {
    const { child, exited, origin } = await startCli({
      RUNPOD_EMULATOR_RUN_RATE_LIMIT_PER_S: "0.5",
      RUNPOD_EMULATOR_OUTAGE: "true",
      RUNPOD_EMULATOR_OUTAGE_STATUS: "502",
      RUNPOD_EMULATOR_OUTAGE_UNTIL_MS: "1700000000000",
      RUNPOD_EMULATOR_MAX_WORKERS: "2",
      RUNPOD_EMULATOR_MAX_QUEUE: "5",
    });
    const config = await (await fetch(`${origin}/__emulator/endpoints/e/config`)).json();
    expect(config).toMatchObject({
      runRateLimitPerS: 0.5,
      outage: true,
      outageStatus: 502,
      outageUntilMs: 1_700_000_000_000,
      maxWorkers: 2,
      maxQueue: 5,
    });
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
  });
  it("reads the fleet settings from RUNPOD_EMULATOR_* variables", async () => {
    const { child, exited, origin } = await startCli({
      RUNPOD_EMULATOR_WORKERS_MAX: "3",
      RUNPOD_EMULATOR_WORKERS_MIN: "1",
      RUNPOD_EMULATOR_SCALER_TYPE: "REQUEST_COUNT",
      RUNPOD_EMULATOR_SCALER_VALUE: "0.5",
      RUNPOD_EMULATOR_SCALER_INTERVAL_MS: "250",
      RUNPOD_EMULATOR_COLD_START_MS: "1500",
      RUNPOD_EMULATOR_IDLE_TIMEOUT_MS: "2000",
      RUNPOD_EMULATOR_THROTTLED_WORKERS: "1",
    });
    const config = await (await fetch(`${origin}/__emulator/endpoints/e/config`)).json();
    expect(config).toMatchObject({
      workersMax: 3,
      workersMin: 1,
      scalerType: "REQUEST_COUNT",
      scalerValue: 0.5,
      scalerIntervalMs: 250,
      coldStartMs: 1500,
      idleTimeoutMs: 2000,
      throttledWorkers: 1,
    });
    const report = (await (await fetch(`${origin}/__emulator/endpoints/e/fleet`)).json()) as {
      workers: { state: string }[];
    };
    expect(report.workers.map((w) => w.state)).toEqual(["throttled"]);
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
  });
});

describe("webhook receiver", () => {
  let receiverCounter = 0;
  function newReceiver(name: string): string {
    receiverCounter += 1;
    return `${name}-${receiverCounter}`;
  }

  interface Received {
    method: string;
    headers: Record<string, string>;
    body: string;
    receivedAt: string;
    status: number | null;
  }

  async function received(name: string): Promise<Received[]> {
    const res = await call("GET", `/__receiver/${name}/requests`);
    expect(res.status).toBe(200);
    return res.body.requests as Received[];
  }

  async function deliver(name: string, body = "{}", signal?: AbortSignal) {
    const res = await fetch(`${origin}/__receiver/${name}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
      signal,
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  it("records a delivery's method, headers and exact body, and answers 200", async () => {
    const name = newReceiver("record");
    // Spacing and key order a JSON round trip would lose: a signature covers these bytes.
    const body = '{ "type":"export.completed",\n  "data": {"id":"exp_1", "é":1} }';
    const res = await fetch(`${origin}/__receiver/${name}`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "Webhook-Id": "msg_1",
        "webhook-timestamp": "1700000000",
        "Webhook-Signature": "v1,abc=",
      },
      body,
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ok: true });
    const [request, ...rest] = await received(name);
    expect(rest).toEqual([]);
    expect(request).toMatchObject({ method: "POST", body, status: 200 });
    expect(request?.headers).toMatchObject({
      "content-type": "application/json",
      "webhook-id": "msg_1",
      "webhook-timestamp": "1700000000",
      "webhook-signature": "v1,abc=",
    });
    expect(Number.isNaN(Date.parse(request?.receivedAt ?? ""))).toBe(false);
  });

  it("answers the configured sequence, then the configured status", async () => {
    const name = newReceiver("sequence");
    const config = await call("PUT", `/__receiver/${name}/config`, { answers: [500, 500] });
    expect(config).toEqual({ status: 200, body: { answers: [500, 500], status: 200, hangMs: 0 } });
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await deliver(name, `{"n":${i}}`)).status);
    expect(statuses).toEqual([500, 500, 200, 200]);
    expect((await deliver(newReceiver("other"))).status).toBe(200);
    const requests = await received(name);
    expect(requests.map((r) => r.status)).toEqual([500, 500, 200, 200]);
    expect(requests.map((r) => r.body)).toEqual(['{"n":0}', '{"n":1}', '{"n":2}', '{"n":3}']);

    await call("PUT", `/__receiver/${name}/config`, { status: 503 });
    const failed = await deliver(name);
    expect(failed).toEqual({ status: 503, body: { error: "receiver configured to answer 503" } });
  });

  it("hangs: the client times out, the delivery is recorded with status null", async () => {
    const name = newReceiver("hang");
    await call("PUT", `/__receiver/${name}/config`, { hangMs: 3_600_000 });
    await expect(deliver(name, '{"late":true}', AbortSignal.timeout(200))).rejects.toThrow();
    const [request] = await received(name);
    expect(request).toMatchObject({ method: "POST", body: '{"late":true}', status: null });
  });

  it("close() ends a pending hang", async () => {
    const own = createRunpodEmulator({ apiKey: API_KEY });
    const base = (await own.listen(0)).url;
    await fetch(`${base}/__receiver/hang/config`, {
      method: "PUT",
      body: JSON.stringify({ hangMs: 3_600_000 }),
    });
    const pending = fetch(`${base}/__receiver/hang`, { method: "POST", body: "{}" });
    await waitFor(async () => {
      const res = await fetch(`${base}/__receiver/hang/requests`);
      return ((await res.json()) as { requests: Received[] }).requests.length === 1;
    }, "the hanging delivery");
    await own.close();
    await expect(pending).rejects.toThrow();
  });

  it("DELETE forgets the receiver's config and requests", async () => {
    const name = newReceiver("reset");
    await call("PUT", `/__receiver/${name}/config`, { status: 500 });
    expect((await deliver(name)).status).toBe(500);
    const res = await fetch(`${origin}/__receiver/${name}`, { method: "DELETE" });
    expect(res.status).toBe(204);
    expect(await received(name)).toEqual([]);
    expect((await deliver(name)).status).toBe(200);
    expect((await received(name)).map((r) => r.status)).toEqual([200]);
  });

  it("rejects a bad config with 400 and keeps the previous one", async () => {
    const name = newReceiver("bad");
    await call("PUT", `/__receiver/${name}/config`, { status: 502 });
    for (const bad of [
      { answers: [200, 600] },
      { answers: "500" },
      { answers: [500.5] },
      { status: 99 },
      { hangMs: -1 },
      { hangMs: "10" },
      { unknown: 1 },
      [],
      "not json",
    ]) {
      const res = await call("PUT", `/__receiver/${name}/config`, bad);
      expect(res.status, JSON.stringify(bad)).toBe(400);
      expect(typeof res.body.error).toBe("string");
    }
    expect((await call("PUT", "/__receiver/bad name!/config", {})).status).toBe(400);
    expect((await deliver(name)).status).toBe(502);
  });
});
