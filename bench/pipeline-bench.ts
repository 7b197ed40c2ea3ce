// `npm run bench`: measures the local pipeline (both Workers under `wrangler dev`, the RunPod
// emulator) in one run and prints the figures as ratios; see bench/README.md. No pass/fail.
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import os from "node:os";
import path from "node:path";
import { type LocalStack, startLocalStack } from "../scripts/local-stack.ts";

const ENDPOINT = "bench-endpoint";
const SUBMIT_JOBS = 40;
const RUN_DELAY_MS = 200; // every `/run` answer waits this long (RunPod's latency)
const LATENCY_JOBS = 10;
const LATENCY_CONFIG = { runDelayMs: 0, runMs: 500, queueMs: 50 };
const POLL_MS = 50;
const PROJECT = { c1: 910001, c6: 910006, latency: 910010 };
const PORTS = [38787, 38788, 38790, 39229, 39230] as const; // producer, consumer, emulator, inspectors

interface Job {
  id: string;
  status: string;
  runpod_job_id: string | null;
  error: string | null;
  completed_at: string | null;
}
interface RunRecord {
  method: string;
  path: string;
  body: { input?: { export_job_id?: string } } | null;
  responseStatus: number | null;
}

const logs: string[] = [];
const tmp = mkdtempSync(path.join(os.tmpdir(), "reel-bench-"));
let interrupted = false;
let stack: Promise<LocalStack> | null = null; // set as it starts, so SIGINT can stop it
let readRetries = 0; // GETs answered 5xx: local D1 is one SQLite file shared by two processes
process.env.WRANGLER_LOG ??= "log"; // the Workers' own log lines, for the dump on failure
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const portFree = (port: number) =>
  new Promise<boolean>((resolve) => {
    const server = createServer().once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });

async function startStack(concurrency: number): Promise<LocalStack> {
  // Our ports are in the ephemeral range: one may sit in TIME_WAIT for up to a minute.
  for (let i = 0; !(await Promise.all(PORTS.map(portFree))).every(Boolean); i++) {
    if (i === 0) process.stdout.write(`(waiting for ports ${PORTS.join(", ")}) `);
    if (i >= 90) throw new Error(`ports ${PORTS.join(", ")} are not free`);
    await sleep(1000);
  }
  const [producerPort, consumerPort, emulatorPort, inspector1, inspector2] = PORTS;
  if (interrupted) throw new Error("interrupted");
  stack = startLocalStack({
    producerPort,
    consumerPort,
    emulatorPort,
    inspectorPorts: [inspector1, inspector2],
    persistTo: path.join(tmp, `c${concurrency}`, "state"),
    settings: { RUNPOD_ENDPOINT_ID: ENDPOINT, SUBMIT_CONCURRENCY: String(concurrency) },
    emulatorEnv: {
      RUNPOD_EMULATOR_RUN_DELAY_MS: String(RUN_DELAY_MS),
      RUNPOD_EMULATOR_RUN_MS: "600000", // runs stay IN_PROGRESS while we measure
    },
    onOutput: (name, line) => {
      if (line.includes("planned COMPLETED")) return; // the emulator's line per job
      logs.push(`[${name}] ${line}`);
      if (logs.length > 2000) logs.shift();
    },
  });
  return stack;
}

async function stopStack(): Promise<void> {
  const running = stack;
  stack = null;
  await (await running?.catch(() => null))?.stop(); // a failed start has stopped itself
}

async function http(url: string, init: RequestInit = {}): Promise<unknown> {
  let res = await fetch(url, init);
  for (let i = 0; res.status >= 500 && (init.method ?? "GET") === "GET" && i < 20; i++) {
    readRetries++; // the API says a 5xx "may be retried"; reads are safe to repeat
    await sleep(100);
    res = await fetch(url, init);
  }
  if (!res.ok) throw new Error(`${init.method ?? "GET"} ${url}: ${res.status} ${await res.text()}`);
  return res.json();
}

function api(s: LocalStack, route: string, body?: unknown): Promise<unknown> {
  return http(`${s.producerUrl}${route}`, {
    method: body === undefined ? "GET" : "POST",
    headers: {
      authorization: `Bearer ${s.settings.API_TOKEN}`,
      "content-type": "application/json",
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

async function createJob(s: LocalStack, projectId: number): Promise<Job> {
  const answer = (await api(s, "/exports", {
    project_id: projectId,
    type: "overlay",
    input_video_key: "uploads/demo/sample.mp4",
    params: { highlight_regions: [{ start_time: 1, end_time: 3 }] },
  })) as { job: Job };
  return answer.job;
}

async function listJobs(s: LocalStack, projectId: number): Promise<Job[]> {
  return ((await api(s, `/exports?project_id=${projectId}&limit=100`)) as { jobs: Job[] }).jobs;
}

async function until(what: string, timeoutMs: number, done: () => Promise<boolean>) {
  const deadline = performance.now() + timeoutMs;
  while (!(await done())) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await sleep(POLL_MS);
  }
}

/** Every `POST …/run` the emulator received for the bench's endpoint. */
async function runRequests(s: LocalStack): Promise<RunRecord[]> {
  const url = `${s.emulatorUrl}/__emulator/requests?endpoint=${ENDPOINT}`;
  const { requests } = (await http(url)) as { requests: RunRecord[] };
  return requests.filter((r) => r.method === "POST" && r.path.endsWith("/run"));
}

/** Phase 1: wall time from the first POST until every job has a `runpod_job_id`. */
async function submission(s: LocalStack, projectId: number): Promise<number> {
  const t0 = performance.now();
  await Promise.all(Array.from({ length: SUBMIT_JOBS }, () => createJob(s, projectId)));
  // Watch the emulator while the consumer works (polling D1 now would contend with its writes)…
  await until("RunPod answered every /run", 120_000, async () => {
    const answered = (await runRequests(s)).filter((r) => r.responseStatus !== null);
    return answered.length >= SUBMIT_JOBS;
  });
  // …then the API, until every run is recorded.
  await until(`${SUBMIT_JOBS} runs recorded`, 60_000, async () => {
    const jobs = await listJobs(s, projectId);
    const failed = jobs.find((job) => job.error !== null);
    if (failed) throw new Error(`job ${failed.id} failed a submission: ${failed.error}`);
    return jobs.length === SUBMIT_JOBS && jobs.every((job) => job.runpod_job_id !== null);
  });
  return performance.now() - t0;
}

/** Phase 2: `POST …/run` per job, and the most any one job got. */
async function runsPerJob(s: LocalStack, jobs: number): Promise<{ perJob: number; max: number }> {
  const runs = await runRequests(s);
  const byJob = new Map<string, number>();
  for (const run of runs) {
    const id = run.body?.input?.export_job_id ?? "?";
    byJob.set(id, (byJob.get(id) ?? 0) + 1);
  }
  return { perJob: runs.length / jobs, max: Math.max(0, ...byJob.values()) };
}

/** Phase 3: POST → `complete` per job with a quick GPU, on the SUBMIT_CONCURRENCY=6 stack. */
async function latency(s: LocalStack, projectId: number): Promise<number[]> {
  await http(`${s.emulatorUrl}/__emulator/endpoints/${ENDPOINT}/config`, {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(LATENCY_CONFIG),
  });
  const posted = new Map<string, number>(); // job id → Date.now() as its POST was sent
  const post = async () => {
    const t = Date.now();
    posted.set((await createJob(s, projectId)).id, t);
  };
  await Promise.all(Array.from({ length: LATENCY_JOBS }, post));
  let jobs: Job[] = [];
  await until(`${LATENCY_JOBS} jobs complete`, 60_000, async () => {
    jobs = await listJobs(s, projectId);
    const failed = jobs.find((job) => job.status === "error");
    if (failed) throw new Error(`job ${failed.id} failed: ${failed.error}`);
    return jobs.length === LATENCY_JOBS && jobs.every((job) => job.status === "complete");
  });
  // `completed_at` (UTC with ms, written as the webhook is applied, same machine clock) rather than
  // the poll that saw it: the figure does not depend on the polling interval.
  const doneAt = (job: Job) => Date.parse(`${job.completed_at?.replace(" ", "T")}Z`);
  return jobs.map((job) => doneAt(job) - (posted.get(job.id) ?? 0)).sort((a, b) => a - b);
}

/** Nearest-rank quantile of sorted values. */
const quantile = (sorted: number[], q: number) =>
  sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)] ?? Number.NaN;
const secs = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const rate = (ms: number) => `${(SUBMIT_JOBS / (ms / 1000)).toFixed(1)} jobs/s`;

process.on("SIGINT", () => {
  if (interrupted) return;
  interrupted = true;
  console.error("\ninterrupted: stopping the stack…");
  void stopStack().finally(() => {
    rmSync(tmp, { recursive: true, force: true });
    process.exit(130);
  });
});

try {
  console.log(`bench: ${SUBMIT_JOBS} jobs, /run answers after ${RUN_DELAY_MS} ms; state in ${tmp}`);
  const results = new Map<number, { wallMs: number; runs: { perJob: number; max: number } }>();
  let latencies: number[] = [];
  for (const concurrency of [1, 6]) {
    process.stdout.write(`SUBMIT_CONCURRENCY=${concurrency}: starting a fresh stack… `);
    const s = await startStack(concurrency);
    const wallMs = await submission(s, concurrency === 1 ? PROJECT.c1 : PROJECT.c6);
    results.set(concurrency, { wallMs, runs: await runsPerJob(s, SUBMIT_JOBS) });
    console.log(`${SUBMIT_JOBS} jobs submitted in ${secs(wallMs)} (${rate(wallMs)})`);
    if (concurrency === 6) {
      process.stdout.write(`end to end: ${LATENCY_JOBS} jobs, runMs ${LATENCY_CONFIG.runMs}… `);
      latencies = await latency(s, PROJECT.latency);
      console.log(`POST -> complete ms: ${latencies.map((ms) => ms.toFixed(0)).join(", ")}`);
    }
    await stopStack();
  }

  const c1 = results.get(1);
  const c6 = results.get(6);
  if (!c1 || !c6) throw new Error("a phase produced no result");
  const median = quantile(latencies, 0.5);
  const busy = logs.filter((l) => l.startsWith("[consumer]") && l.includes("SQLITE_BUSY")).length;
  const rows: [string, string][] = [
    [`submit ${SUBMIT_JOBS} jobs, SUBMIT_CONCURRENCY=1`, `${secs(c1.wallMs)}  ${rate(c1.wallMs)}`],
    [`submit ${SUBMIT_JOBS} jobs, SUBMIT_CONCURRENCY=6`, `${secs(c6.wallMs)}  ${rate(c6.wallMs)}`],
    ["speed-up (c1 time / c6 time)", `${(c1.wallMs / c6.wallMs).toFixed(2)}x`],
    [
      "RunPod POST /run per job (max for one job)",
      `c1 ${c1.runs.perJob.toFixed(2)} (${c1.runs.max}), c6 ${c6.runs.perJob.toFixed(2)} (${c6.runs.max})`,
    ],
    [
      `POST -> complete, ${LATENCY_JOBS} jobs (c6)`,
      `median ${median.toFixed(0)} ms, p90 ${quantile(latencies, 0.9).toFixed(0)} ms`,
    ],
    [
      `median / emulator runMs (${LATENCY_CONFIG.runMs} ms)`,
      `${(median / LATENCY_CONFIG.runMs).toFixed(2)}x`,
    ],
    [
      "D1 statements, consumer hot path (DESIGN)",
      "claim: 1 statement per batch; record: 1 per job; failure: 1 per failed attempt",
    ],
    ["local D1 contention", `${readRetries} GETs retried after 5xx, ${busy} consumer SQLITE_BUSY`],
    ["machine", `${os.cpus().length} CPUs, ${os.platform()} ${os.arch()}, node ${process.version}`],
  ];
  const width = Math.max(...rows.map(([label]) => label.length));
  console.log(`\n${"figure".padEnd(width)}  value\n${"-".repeat(width)}  ${"-".repeat(40)}`);
  for (const [label, value] of rows) console.log(`${label.padEnd(width)}  ${value}`);
} catch (error) {
  process.exitCode = 1;
  if (!interrupted) {
    // (after SIGINT, the handler is stopping the stack and will exit)
    console.error(`\nbench failed: ${error instanceof Error ? error.message : String(error)}`);
    console.error(`--- last 40 lines of the stack's output ---\n${logs.slice(-40).join("\n")}`);
  }
} finally {
  await stopStack();
  rmSync(tmp, { recursive: true, force: true });
}
