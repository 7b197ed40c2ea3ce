// End to end: both Workers under `wrangler dev` (the same scripts/local-stack.ts as `npm start`),
// sharing local D1, R2 and the queue, with the RunPod emulator over real HTTP. The reconciler is
// driven through the consumer's `GET /__scheduled`, as the cron would run it. The emulator plays
// the GPU handler's storage side too: a run it completes has first copied its input to its
// output_video_key in the shared local R2 (through scripts/local-r2/), since a COMPLETED run
// counts only with its output there.
import { execFile } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type LocalStack, startLocalStack } from "../../scripts/local-stack.ts";

interface Job {
  id: string;
  status: string;
  progress: number;
  retry_count: number;
  runpod_job_id: string | null;
  output_video_key: string | null;
  error: string | null;
}

const ENDPOINT = "e2e-endpoint";
const logs: string[] = [];
let stack: LocalStack;
let persistTo: string;

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../..");

beforeAll(async () => {
  // A checkout of its own (wrangler.toml and migrations/), whose default local state
  // `.wrangler/state` is where this stack keeps D1, R2 and the queue: the design note's wrangler
  // commands, run verbatim in that checkout, must see what the stack did.
  persistTo = mkdtempSync(path.join(os.tmpdir(), "reel-e2e-"));
  cpSync(path.join(root, "wrangler.toml"), path.join(persistTo, "wrangler.toml"));
  cpSync(path.join(root, "migrations"), path.join(persistTo, "migrations"), { recursive: true });
  stack = await startStack();
});

function startStack(): Promise<LocalStack> {
  return startLocalStack({
    producerPort: 18787,
    consumerPort: 18788,
    emulatorPort: 18790,
    inspectorPorts: [19229, 19230],
    persistTo: path.join(persistTo, ".wrangler/state"),
    settings: {
      RUNPOD_ENDPOINT_ID: ENDPOINT,
      CLAIM_TIMEOUT_S: "1",
      POLL_AFTER_S: "1",
      PENDING_GRACE_S: "3",
      RETRY_BASE_DELAY_S: "1",
      RETRY_MAX_DELAY_S: "2",
    },
    emulatorEnv: { RUNPOD_EMULATOR_WEBHOOK_RETRY_DELAY_MS: "200" },
    onOutput: (name, line) => logs.push(`[${name}] ${line}`),
  }).catch((error: unknown) => {
    console.error(logs.slice(-40).join("\n"));
    throw error;
  });
}

afterAll(async () => {
  await stack?.stop();
  rmSync(persistTo, { recursive: true, force: true });
});

beforeEach(async () => {
  // Each test states its own timings and faults; the defaults are a quick, healthy GPU.
  await emulator("POST", `/__emulator/reset?endpoint=${ENDPOINT}`);
  await configure({ queueMs: 50, runMs: 1500, progressSteps: [25, 50, 75] });
});

async function emulator(method: string, route: string, body?: unknown): Promise<unknown> {
  const res = await fetch(`${stack.emulatorUrl}${route}`, {
    method,
    headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`emulator ${route}: ${res.status} ${await res.text()}`);
  return res.json();
}

const configure = (config: Record<string, unknown>) =>
  emulator("PUT", `/__emulator/endpoints/${ENDPOINT}/config`, config);

async function api(route: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  headers.set("authorization", `Bearer ${stack.settings.API_TOKEN}`);
  if (init.body) headers.set("content-type", "application/json");
  return fetch(`${stack.producerUrl}${route}`, { ...init, headers });
}

async function createJob(): Promise<Job> {
  const res = await api("/exports", {
    method: "POST",
    body: JSON.stringify({
      project_id: 7,
      type: "framing",
      input_video_key: "uploads/demo/sample.mp4",
      // Distinct params: an identical export would reuse an earlier one's output instead of running.
      params: {
        crop_keyframes: [{ time: 0, x: 0, y: 0, width: 1080, height: 1920 }],
        n: crypto.randomUUID(),
      },
    }),
  });
  expect(res.status).toBe(202);
  return ((await res.json()) as { job: Job }).job;
}

async function getJob(id: string): Promise<Job> {
  for (let i = 0; ; i++) {
    const res = await api(`/exports/${id}`);
    // Right after a crash, local D1 (one SQLite file shared by both wrangler dev processes) can
    // answer SQLITE_BUSY for a moment; a client retries a 5xx read.
    if (res.status < 500 || i >= 20) return ((await res.json()) as { job: Job }).job;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/** Polls the API until `done(job)`; optionally runs the reconciler between polls. */
async function waitForJob(
  id: string,
  done: (job: Job) => boolean,
  options: { reconcile?: boolean; seen?: Job[] } = {},
): Promise<Job> {
  const deadline = Date.now() + 45_000;
  while (Date.now() < deadline) {
    const job = await getJob(id);
    options.seen?.push(job);
    if (done(job)) return job;
    if (options.reconcile) await fetch(`${stack.consumerUrl}/__scheduled`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  console.error(logs.slice(-60).join("\n"));
  throw new Error(
    `job ${id} never satisfied the condition; last: ${JSON.stringify(await getJob(id))}`,
  );
}

const finished = (job: Job) => job.status === "complete" || job.status === "error";

describe("the pipeline end to end", () => {
  it("takes a job pending → processing → complete with progress rising and the webhook", async () => {
    const job = await createJob();
    expect(job.status).toBe("pending");
    const seen: Job[] = [];
    const done = await waitForJob(job.id, finished, { seen });
    expect(done).toMatchObject({
      status: "complete",
      progress: 100,
      retry_count: 0,
      output_video_key: `exports/7/${job.id}.mp4`,
    });
    const statuses = [...new Set(seen.map((j) => j.status))];
    expect(statuses).toEqual(expect.arrayContaining(["processing", "complete"]));
    const progress = seen.map((j) => j.progress);
    expect(progress).toEqual([...progress].sort((a, b) => a - b));
    expect(progress.some((p) => p > 0 && p < 100)).toBe(true);

    // The job is complete as soon as the webhook's statement commits, which can be before the
    // emulator has read the webhook's answer: wait until it has recorded it.
    type Run = {
      webhookDeliveries: { status: number | null }[];
      progressCalls: { status: number }[];
    };
    let run = (await emulator("GET", `/__emulator/jobs/${done.runpod_job_id}`)) as Run;
    for (let i = 0; i < 50 && run.webhookDeliveries.some((d) => d.status === null); i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      run = (await emulator("GET", `/__emulator/jobs/${done.runpod_job_id}`)) as Run;
    }
    expect(run.webhookDeliveries.map((d) => d.status)).toEqual([200]);
    expect(run.progressCalls.map((c) => c.status)).toEqual([204, 204, 204]);

    // The output the emulator wrote through the local R2 writer, read back through the producer:
    // one local bucket for the three wrangler dev processes. The "render" is the sample itself.
    const sample = readFileSync(stack.sampleFile);
    const output = await api(`/exports/${job.id}/output`);
    expect(output.status).toBe(200);
    expect(output.headers.get("content-type")).toBe("video/mp4");
    expect(output.headers.get("accept-ranges")).toBe("bytes");
    expect(Buffer.from(await output.arrayBuffer())).toEqual(sample);
    const head = await api(`/exports/${job.id}/output`, { headers: { range: "bytes=0-3" } });
    expect(head.status).toBe(206);
    expect(head.headers.get("content-range")).toBe(`bytes 0-3/${sample.length}`);
    expect(Buffer.from(await head.arrayBuffer())).toEqual(sample.subarray(0, 4));
  });

  it("retries a run that ends FAILED and completes on the next attempt", async () => {
    await configure({ outcomeScript: ["FAILED"], runMs: 300 });
    const job = await createJob();
    const done = await waitForJob(job.id, finished);
    expect(done).toMatchObject({ status: "complete", retry_count: 1 });
    expect(done.error).toMatch(/RunPod FAILED/);
  });

  it("ends in error with retry_count 4 after four failed runs", async () => {
    await configure({ outcomeScript: ["FAILED", "TIMED_OUT", "FAILED", "FAILED"], runMs: 200 });
    const job = await createJob();
    const done = await waitForJob(job.id, finished);
    expect(done).toMatchObject({ status: "error", retry_count: 4 });
    const runs = (await emulator("GET", `/__emulator/jobs?endpoint=${ENDPOINT}`)) as {
      jobs: unknown[];
    };
    expect(runs.jobs).toHaveLength(4);
    // No run completed, so nothing was written and there is nothing to download.
    expect((await api(`/exports/${job.id}/output`)).status).toBe(409);
  });

  it("recovers a dropped webhook with the reconciler's poll", async () => {
    await configure({ webhookScript: ["drop"], runMs: 300 });
    const job = await createJob();
    const run = await waitForJob(job.id, (j) => j.runpod_job_id !== null);
    // Wait until RunPod finished and dropped the webhook: only a poll can tell us now.
    for (let i = 0; i < 100; i++) {
      const state = (await emulator("GET", `/__emulator/jobs/${run.runpod_job_id}`)) as {
        status: string;
      };
      if (state.status === "COMPLETED") break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect((await getJob(job.id)).status).toBe("processing");
    const done = await waitForJob(job.id, finished, { reconcile: true });
    expect(done).toMatchObject({ status: "complete", retry_count: 0, progress: 100 });
  });

  it("cancel stops a running job and its RunPod run", async () => {
    await configure({ runMs: 60_000 });
    const job = await createJob();
    const running = await waitForJob(job.id, (j) => j.runpod_job_id !== null);
    const res = await api(`/exports/${job.id}/cancel`, { method: "POST" });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { job: Job }).job).toMatchObject({
      status: "error",
      error: "cancelled",
    });
    const run = (await emulator("GET", `/__emulator/jobs/${running.runpod_job_id}`)) as {
      status: string;
    };
    expect(run.status).toBe("CANCELLED");
    const again = await api(`/exports/${job.id}/cancel`, { method: "POST" });
    expect(again.status).toBe(409);
  });
  it("recovers a consumer that crashed between claim and record", async () => {
    // RunPod accepts the run but answers slowly; the consumer is killed while it waits.
    await configure({ runDelayMs: 4000, runMs: 60_000 });
    const job = await createJob();
    await waitForJob(job.id, (j) => j.status === "processing");
    await stack.crashConsumer();
    expect(await getJob(job.id)).toMatchObject({ status: "processing", runpod_job_id: null });

    await configure({ runDelayMs: 0, runMs: 300 });
    await stack.restartConsumer();
    const done = await waitForJob(job.id, finished, { reconcile: true });
    expect(done.status).toBe("complete");
    // Either the reconciler's claim timeout retried the attempt (retry_count 1), or the run that
    // RunPod had accepted reported first and was adopted by its attempt (retry_count 0, that run's
    // id): both finish the job once, and no third run is started.
    const runs = (await emulator("GET", `/__emulator/jobs?endpoint=${ENDPOINT}`)) as {
      jobs: { id: string; input: { export_job_id?: string } }[];
    };
    const runsOfJob = runs.jobs.filter((run) => run.input.export_job_id === job.id);
    if (done.retry_count === 1) {
      expect(done.error).toMatch(/no RunPod run recorded/);
      // The first run exists only if RunPod received it before the kill.
      expect(runsOfJob.length).toBeLessThanOrEqual(2);
      expect(runsOfJob.map((run) => run.id)).toContain(done.runpod_job_id);
    } else {
      expect(done.retry_count).toBe(0);
      expect(runsOfJob.map((run) => run.id)).toContain(done.runpod_job_id);
    }

    // A job created after the restart reaches the new consumer (npm start's restart removes the
    // killed consumer's dev-registry entry); a send lost meanwhile would be re-enqueued by the
    // reconciler once the job has been pending for PENDING_GRACE_S.
    const next = await createJob();
    const recovered = await waitForJob(next.id, finished, { reconcile: true });
    expect(recovered).toMatchObject({ status: "complete", retry_count: 0 });
  });

  it("the design note's wrangler commands, run verbatim in the checkout, see the stack's D1", async () => {
    const job = await createJob();
    const wrangler = (...args: string[]) =>
      new Promise<string>((resolve, reject) => {
        execFile(
          process.execPath,
          [path.join(root, "node_modules/wrangler/bin/wrangler.js"), ...args],
          {
            cwd: persistTo,
            env: { ...process.env, WRANGLER_SEND_METRICS: "false", NO_COLOR: "1" },
          },
          (error, stdout, stderr) =>
            error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(stdout),
        );
      });
    // npm start applied them already: the same database, nothing left to apply.
    expect(await wrangler("d1", "migrations", "apply", "reel-ballers", "--local")).toMatch(
      /No migrations to apply/i,
    );
    const tables = await wrangler(
      "d1",
      "execute",
      "reel-ballers",
      "--local",
      "--command",
      "SELECT name FROM sqlite_master WHERE type='table';",
    );
    for (const table of ["export_jobs", "dead_letters", "d1_migrations"]) {
      expect(tables).toContain(table);
    }
    const rows = await wrangler(
      "d1",
      "execute",
      "reel-ballers",
      "--local",
      "--json",
      "--command",
      `SELECT id FROM export_jobs WHERE id = '${job.id}'`,
    );
    expect(rows).toContain(job.id);
  }, 60_000);
});
