// Load and outages never turn into failed exports. The consumer's real queue() handler, the real
// dispatch gate Durable Object and D1, against the RunPod emulator's rate limit and outage switch.
// The test plays the queue: each round delivers, in batches of 10, one message per pending job
// that is due (held-back and released jobs wait for their delay, as Queues would make them).
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import {
  ADMIN_TOKEN,
  configureEndpoint,
  deliver,
  dispatchConfig,
  emulatorOrigin,
  emulatorRequests,
  freshProjectId,
  insertPendingJob,
  producerFetch,
  uniqueEndpoint,
} from "./helpers.ts";

type TestEnv = typeof env;

function loadEnv(endpoint: string, extra: Record<string, string> = {}): TestEnv {
  return {
    ...env,
    RUNPOD_ENDPOINT_ID: endpoint,
    RETRY_BASE_DELAY_S: "1",
    RETRY_MAX_DELAY_S: "1",
    BREAKER_COOLDOWN_S: "1",
    // Runs never finish here: the slots are not what these tests are about.
    RUNPOD_MAX_IN_FLIGHT: "1000",
    ...extra,
  };
}

interface Row {
  id: string;
  status: string;
  retry_count: number;
  runpod_job_id: string | null;
}

async function rowsOf(projectId: number): Promise<Row[]> {
  const { results } = await env.DB.prepare(
    "SELECT id, status, retry_count, runpod_job_id FROM export_jobs WHERE project_id = ?",
  )
    .bind(projectId)
    .all<Row>();
  return results;
}

async function dueIds(projectId: number): Promise<string[]> {
  const { results } = await env.DB.prepare(
    `SELECT id FROM export_jobs WHERE project_id = ? AND status = 'pending'
       AND (due_at IS NULL OR due_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))`,
  )
    .bind(projectId)
    .all<{ id: string }>();
  return results.map((row) => row.id);
}

/** Delivers one message per job id, 10 per batch, all batches at once; every message is acked. */
async function deliverRound(ids: string[], testEnv: TestEnv) {
  const batches: string[][] = [];
  for (let i = 0; i < ids.length; i += 10) batches.push(ids.slice(i, i + 10));
  const results = await Promise.all(batches.map((chunk) => deliver(chunk, { env: testEnv })));
  return {
    acked: results.reduce((n, r) => n + r.explicitAcks.length, 0),
    retried: results.reduce((n, r) => n + r.retryMessages.length + (r.retryBatch.retry ? 1 : 0), 0),
  };
}

/** Plays the queue (a round every 100 ms) until every job of the project has a run. */
async function drain(projectId: number, testEnv: TestEnv, onRound?: (round: number) => unknown) {
  const wasted = { retried: 0, rounds: 0 };
  for (let round = 0; round < 600; round++) {
    const rows = await rowsOf(projectId);
    if (rows.every((row) => row.status !== "pending")) return wasted;
    // Held back by the gate: not claimed, still pending, due or held by the dispatcher (due_at
    // NULL; the dispatcher's own messages go to the test queue's recorder, so this loop plays them).
    const ids = await dueIds(projectId);
    if (ids.length > 0) {
      const result = await deliverRound(ids, testEnv);
      wasted.retried += result.retried;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
    wasted.rounds = round;
    await onRound?.(round);
  }
  return wasted;
}

async function runAnswers(endpoint: string): Promise<Record<string, number>> {
  const res = await fetch(`${emulatorOrigin}/__emulator/endpoints/${endpoint}/stats`);
  return ((await res.json()) as { run_answers: Record<string, number> }).run_answers;
}

async function dispatchState(testEnv: TestEnv) {
  const res = await producerFetch("/stats", {
    token: ADMIN_TOKEN,
    vars: { RUNPOD_ENDPOINT_ID: testEnv.RUNPOD_ENDPOINT_ID as string },
  });
  return ((await res.json()) as { dispatch: { state: string; reason: string | null } }).dispatch;
}

describe("dispatch under load", () => {
  it("a burst against RunPod's rate limit: paced by the gate, no job errs, no retry is spent", async () => {
    const endpoint = uniqueEndpoint("burst");
    await configureEndpoint(endpoint, { runRateLimitPerS: 10, runMs: 600_000 });
    const projectId = freshProjectId();
    await Promise.all(Array.from({ length: 40 }, () => insertPendingJob(projectId)));
    // The gate's pace is RunPod's limit, 100 per 10 s.
    const testEnv = loadEnv(endpoint, { RUNPOD_RUNS_PER_10S: "100" });

    const { retried } = await drain(projectId, testEnv);
    const rows = await rowsOf(projectId);
    expect(rows.filter((row) => row.status === "processing" && row.runpod_job_id)).toHaveLength(40);
    expect(rows.map((row) => row.retry_count)).toEqual(Array(40).fill(0));
    expect(retried).toBe(0); // no message.retry(): nothing counts toward max_retries
    const answers = await runAnswers(endpoint);
    expect(answers["200"]).toBe(40);
    expect(answers["429"] ?? 0).toBe(0);
  }, 60_000);

  it("jobs admitted earlier whose messages come back in one batch are sent at the gate's pace, not at once", async () => {
    const endpoint = uniqueEndpoint("bunched");
    // RunPod allows 5 /run a second (a bucket of 5); the gate's pace is the same.
    await configureEndpoint(endpoint, { runRateLimitPerS: 5, runMs: 600_000 });
    const projectId = freshProjectId();
    const jobs = await Promise.all(Array.from({ length: 12 }, () => insertPendingJob(projectId)));
    // The dispatcher admitted all twelve earlier (their permits spent then) and sent their
    // messages, which the queue now delivers together.
    const dispatcher = env.DISPATCHER.get(env.DISPATCHER.idFromName(endpoint));
    const earlier = await dispatcher.dispatch(
      jobs.map((job) => ({ id: job.id, key: `project:${projectId}`, createdAt: job.created_at })),
      dispatchConfig({ runsPer10s: 100_000, maxInFlight: 1000 }),
    );
    expect(earlier.admitted).toHaveLength(12);
    await deliver(
      jobs.map((job) => job.id),
      { env: loadEnv(endpoint, { RUNPOD_RUNS_PER_10S: "50" }) },
    );
    const answers = await runAnswers(endpoint);
    expect(answers["429"] ?? 0).toBe(0);
    expect(answers["200"]).toBe(12);
    const rows = await rowsOf(projectId);
    expect(rows.filter((row) => row.status === "processing" && row.runpod_job_id)).toHaveLength(12);
  });

  it("a RunPod that allows less than configured: 429s release jobs and slow the gate; none errs", async () => {
    const endpoint = uniqueEndpoint("limit");
    await configureEndpoint(endpoint, { runRateLimitPerS: 4, runMs: 600_000 });
    const projectId = freshProjectId();
    await Promise.all(Array.from({ length: 30 }, () => insertPendingJob(projectId)));
    const testEnv = loadEnv(endpoint, { RUNPOD_RUNS_PER_10S: "400" });

    const { retried } = await drain(projectId, testEnv);
    const rows = await rowsOf(projectId);
    expect(rows.every((row) => row.status === "processing" && row.runpod_job_id)).toBe(true);
    expect(rows.every((row) => row.retry_count === 0)).toBe(true);
    expect(retried).toBe(0);
    const answers = await runAnswers(endpoint);
    expect(answers["200"]).toBe(30);
    expect(answers["429"]).toBeGreaterThan(0);
  }, 90_000);

  it("an outage of several cooldowns: the breaker pauses and probes, and every job runs after recovery", async () => {
    const endpoint = uniqueEndpoint("outage");
    await configureEndpoint(endpoint, { outage: true, runMs: 600_000 });
    const projectId = freshProjectId();
    await Promise.all(Array.from({ length: 20 }, () => insertPendingJob(projectId)));
    const testEnv = loadEnv(endpoint, { BREAKER_THRESHOLD: "3", SUBMIT_CONCURRENCY: "1" });

    const seen = new Set<string>();
    let lifted = false;
    await drain(projectId, testEnv, async (round) => {
      seen.add((await dispatchState(testEnv)).state);
      if (!lifted && round >= 30 && seen.has("paused")) {
        lifted = true;
        await configureEndpoint(endpoint, { outage: false });
      }
    });
    expect([...seen], JSON.stringify(await rowsOf(projectId))).toContain("paused");
    expect(lifted).toBe(true);
    const rows = await rowsOf(projectId);
    expect(rows.filter((row) => row.status === "error")).toEqual([]);
    expect(rows.filter((row) => !(row.status === "processing" && row.runpod_job_id))).toEqual([]);
    // An outage is nobody's fault: the submissions that met it (those that opened the breaker,
    // and failed probes) were released, and no job spent a retry.
    expect(rows.map((row) => row.retry_count)).toEqual(rows.map(() => 0));
    expect((await dispatchState(testEnv)).state).toBe("running");
    const answers = await runAnswers(endpoint);
    expect(answers["503"]).toBeLessThan(20); // most jobs were never sent into the outage
  }, 90_000);

  it("a bad RunPod key pauses dispatch at once and spends no job's retry", async () => {
    const endpoint = uniqueEndpoint("badkey");
    await configureEndpoint(endpoint, { runMs: 600_000 });
    const projectId = freshProjectId();
    const jobs = await Promise.all(Array.from({ length: 5 }, () => insertPendingJob(projectId)));
    const testEnv = loadEnv(endpoint, {
      RUNPOD_API_KEY: "wrong-key",
      BREAKER_COOLDOWN_S: "60",
      SUBMIT_CONCURRENCY: "1",
    });

    const result = await deliverRound(
      jobs.map((job) => job.id),
      testEnv,
    );
    expect(result).toEqual({ acked: 5, retried: 0 });
    const rows = await rowsOf(projectId);
    expect(rows.every((row) => row.status === "pending" && row.retry_count === 0)).toBe(true);
    const state = await dispatchState(testEnv);
    expect(state.state).toBe("paused");
    expect(state.reason).toMatch(/API key/);
    // One request met the 401; the other four were held back without a call.
    const runs = (await emulatorRequests(endpoint)).filter((r) => r.path.endsWith("/run"));
    expect(runs.map((r) => r.responseStatus)).toEqual([401]);
  });
});
