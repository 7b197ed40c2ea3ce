import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  devServerFlags,
  type LocalStack,
  type StackOptions,
  startLocalStack,
} from "../scripts/local-stack.ts";
import { signText } from "../shared/signing.ts";
import { STATS_SQL } from "../shared/sql/stats.ts";
import { type CostInputs, costPerMillion, readPrices } from "./cost.ts";
import {
  type LifeRows,
  type PlanFigure,
  plansAt1M,
  rowsPerJob,
  SEED_JOBS,
  Seeder,
  startBenchWorker,
} from "./d1-figures.ts";
import {
  type Guarded,
  guarded,
  jsonInit,
  machine,
  median,
  quantile,
  readJson,
  root,
  round,
  sleep,
  sqlMs,
  stripAnsi,
  waitForPorts,
  waitUntilUp,
  wranglerEnv,
  wranglerJs,
  writeResults,
} from "./support.ts";

// ---- settings ----------------------------------------------------------------------------------

const R = 20; // the emulator's /run limit per second (runRateLimitPerS)
const BURST_JOBS = 1000;
const CLIENTS = 32;
const FANOUT_JOBS = 100;
const FANOUT_RUN_DELAY_MS = 100;
const DEPLOYED_SUBMIT_CONCURRENCY = 6;
const LATENCY_JOBS = 20;
const LATENCY_SPACING_MS = 300;
const LIVE_CLIENTS = 100;
const LIVE_TRANSITIONS = 40;
const OVERHEAD_ROUNDS = 4;
const OVERHEAD_ROUND_MS = 2000;
const LONG_RUN_MS = 3_600_000; // runs that never finish while we measure

// Below Linux's ephemeral range (32768–60999): no outgoing connection ever holds one of them.
const PORTS = {
  producer: 31100,
  consumer: 31101,
  emulator: 31102, // + 1: the local R2 writer
  producerInspector: 31110,
  consumerInspector: 31111, // + 1: the local R2 writer's inspector
  benchWorker: 31140,
  benchInspector: 31141,
  bare: 31142,
  bareInspector: 31143,
};
/** The consumers the bench starts itself, one port and inspector each. */
const SWAP_PORTS = [31121, 31122, 31123, 31124] as const;
const SWAP_INSPECTORS = [31131, 31132, 31133, 31134] as const;
const ALL_PORTS = [
  ...Object.values(PORTS),
  PORTS.emulator + 1,
  PORTS.consumerInspector + 1,
  PORTS.producer + 5, // the frontend example's default port, if this stack version starts one
  ...SWAP_PORTS,
  ...SWAP_INSPECTORS,
];

const ENDPOINTS = {
  paced: "bench-paced",
  open: "bench-open",
  fanout1: "bench-fanout-c1",
  fanout6: "bench-fanout-c6",
  hold: "bench-hold",
};
const INPUT = "uploads/demo/sample.mp4";
const RESULTS_FILE = path.join(root, "bench/results.json");
/** The stack's notable lines of the last run (*.log is ignored by git). */
const LOG_FILE = path.join(root, "bench/last-run.log");

// ---- process bookkeeping ------------------------------------------------------------------------

const tmp = mkdtempSync(path.join(os.tmpdir(), "reel-bench-"));
const stateDir = path.join(tmp, "stack", "state");
/** The Workers the bench started itself (the stack stops its own children). */
const consumers: Guarded[] = [];
/** The stack's producer, once it is up. */
const producer = { url: "" };
let benchWorker: Guarded | null = null;
let stack: Promise<LocalStack> | null = null;
let interrupted = false;
const logs: string[] = [];
/** `QUEUE export-jobs a/b (ms)` lines of the consumers: one per delivered batch. */
const batches: { at: number; consumer: string; acked: number; size: number; ms: number }[] = [];
process.env.WRANGLER_LOG ??= "info"; // the consumers' per-batch QUEUE lines are info

const ROUTINE = [
  /planned (COMPLETED|FAILED|TIMED_OUT)/,
  / (IN_PROGRESS|COMPLETED)$/,
  /webhook attempt 1: 200$/,
  /output written:/,
  /\[wrangler:info\] (GET|POST|PUT|HEAD|DELETE) \S+ \d{3}/,
  /progress \d+: 204/,
];

function onLine(name: string, raw: string): void {
  const line = stripAnsi(raw);
  const queue = /QUEUE export-jobs (\d+)\/(\d+)(?: \((\d+)ms\))?/.exec(line);
  if (queue) {
    batches.push({
      at: Date.now(),
      consumer: name,
      acked: Number(queue[1]),
      size: Number(queue[2]),
      ms: Number(queue[3] ?? Number.NaN),
    });
    return;
  }
  if (ROUTINE.some((re) => re.test(line))) return;
  logs.push(`${new Date().toISOString().slice(11, 23)} [${name}] ${line}`);
  if (logs.length > 3000) logs.shift();
}

const note = (text: string) => process.stdout.write(text);
/** The 1-minute load average as each phase starts: the machine is shared. */
const loads: Record<string, number> = {};
const load = (phase: string) => {
  loads[phase] = round(os.loadavg()[0] ?? 0, 2);
};

/** Stops the stack and the consumers the bench started. */
async function stopStack(): Promise<void> {
  const running = stack;
  stack = null;
  await Promise.all([
    ...consumers.map((child) => child.stop()),
    (async () => (await running?.catch(() => null))?.stop())(),
  ]);
}

async function stopAll(): Promise<void> {
  await Promise.all([stopStack(), benchWorker?.stop()]);
}

process.on("SIGINT", () => {
  if (interrupted) return;
  interrupted = true;
  console.error("\ninterrupted: stopping every process the bench started…");
  void stopAll().finally(() => {
    rmSync(tmp, { recursive: true, force: true });
    process.exit(130);
  });
});

// ---- HTTP against the stack -----------------------------------------------------------------

interface Job {
  id: string;
  project_id: number;
  status: string;
  error: string | null;
  retry_count: number;
  attempt: number;
  runpod_job_id: string | null;
  progress: number;
  version: number;
  completed_at: string | null;
}
interface RunRecord {
  method: string;
  path: string;
  body: { input?: { export_job_id?: string } } | null;
  receivedAt: string;
  responseStatus: number | null;
}
interface EmulatorJob {
  id: string;
  status: string;
  input: { export_job_id?: string; progress_url?: string };
  webhookDeliveries: { status: number | null }[];
  progressCalls: { status: number | null }[];
}
interface Posted {
  status: number;
  sentAt: number;
  answeredAt: number;
  id: string | null;
}

const exportBody = (projectId: number) => ({
  project_id: projectId,
  user_id: projectId,
  type: "overlay",
  input_video_key: INPUT,
  params: { highlight_regions: [{ start_time: 1, end_time: 3 }] },
});

async function postExport(
  base: string,
  token: string,
  projectId: number,
  query = "",
  idempotencyKey?: string,
): Promise<Posted> {
  const sentAt = Date.now();
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  if (idempotencyKey) headers["idempotency-key"] = idempotencyKey;
  try {
    const res = await fetch(`${base}/exports${query}`, {
      ...jsonInit("POST", exportBody(projectId), headers),
      signal: AbortSignal.timeout(30_000),
    });
    const text = await res.text();
    const answeredAt = Date.now();
    let id: string | null = null;
    if (res.status === 202 || res.status === 200) {
      id = (JSON.parse(text) as { job: { id: string } }).job.id;
    } else {
      logs.push(`[bench] POST ${base}/exports: ${res.status} ${text.slice(0, 300)}`);
    }
    return { status: res.status, sentAt, answeredAt, id };
  } catch (error) {
    logs.push(`[bench] POST ${base}/exports: ${String(error)}`);
    return { status: 0, sentAt, answeredAt: Date.now(), id: null };
  }
}

/**
 * `n` POSTs from `clients` concurrent clients; project of the i-th: `project(i)`. With `keys`,
 * each carries the Idempotency-Key `<keys>-<i>` and a 5xx or network error is sent again (up to
 * 3 times; safe with the key): every answer is in `posts`, the job ids in `ids`.
 */
async function postMany(
  base: string,
  token: string,
  n: number,
  clients: number,
  project: (i: number) => number,
  keys?: string,
): Promise<{ posts: Posted[]; ids: Set<string>; ms: number }> {
  const posts: Posted[] = [];
  const ids = new Set<string>();
  let next = 0;
  const t0 = Date.now();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (next < n) {
        const i = next++;
        for (let attempt = 0; attempt < (keys ? 4 : 1); attempt++) {
          const posted = await postExport(base, token, project(i), "", keys && `${keys}-${i}`);
          posts.push(posted);
          if (posted.id) ids.add(posted.id);
          if (posted.status !== 0 && posted.status < 500) break;
          await sleep(200);
        }
      }
    }),
  );
  return { posts, ids, ms: Date.now() - t0 };
}

const countBy = (values: (string | number)[]) => {
  const out: Record<string, number> = {};
  for (const v of values) out[String(v)] = (out[String(v)] ?? 0) + 1;
  return out;
};

async function emulatorConfig(s: LocalStack, endpoint: string, config: Record<string, unknown>) {
  await readJson(
    `${s.emulatorUrl}/__emulator/endpoints/${endpoint}/config`,
    jsonInit("PUT", config),
  );
}
async function runAnswers(s: LocalStack, endpoint: string): Promise<Record<string, number>> {
  const url = `${s.emulatorUrl}/__emulator/endpoints/${endpoint}/stats`;
  return (await readJson<{ run_answers: Record<string, number> }>(url)).run_answers;
}
async function runRequests(s: LocalStack, endpoint: string): Promise<RunRecord[]> {
  const url = `${s.emulatorUrl}/__emulator/requests?endpoint=${endpoint}`;
  const { requests } = await readJson<{ requests: RunRecord[] }>(url);
  return requests.filter((r) => r.method === "POST" && r.path.endsWith("/run"));
}
async function emulatorJobs(s: LocalStack, endpoint: string): Promise<EmulatorJob[]> {
  const url = `${s.emulatorUrl}/__emulator/jobs?endpoint=${endpoint}`;
  return (await readJson<{ jobs: EmulatorJob[] }>(url)).jobs;
}
function delta(before: Record<string, number>, after: Record<string, number>) {
  const out: Record<string, number> = {};
  for (const key of new Set([...Object.keys(before), ...Object.keys(after)])) {
    const n = (after[key] ?? 0) - (before[key] ?? 0);
    if (n !== 0) out[key] = n;
  }
  return out;
}

/** Every job of these projects (at most 100), through GET /exports, page by page. */
async function listJobs(s: LocalStack, projects: number[]): Promise<Job[]> {
  const jobs: Job[] = [];
  const query = projects.map((id) => `project_id=${id}`).join("&");
  let cursor: string | null = null;
  do {
    const url = `${producer.url}/exports?${query}&limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
    const page: { jobs: Job[]; next_cursor: string | null } = await readJson(url, {
      headers: { authorization: `Bearer ${s.settings.API_TOKEN}` },
    });
    jobs.push(...page.jobs);
    cursor = page.next_cursor;
  } while (cursor);
  return jobs;
}

/** Waits until `done()`; false after `timeoutMs`. */
async function until(timeoutMs: number, everyMs: number, done: () => Promise<boolean>) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await done()) return true;
    await sleep(everyMs);
  }
  return done();
}

// ---- the stack and its consumers --------------------------------------------------------------

interface Consumer {
  name: string;
  /** Its own HTTP port: GET /__scheduled runs the reconciler (wrangler dev --test-scheduled). */
  url: string;
  stop(): Promise<void>;
}

const varFlags = (vars: Record<string, string>) =>
  Object.entries(vars).flatMap(([key, value]) => ["--var", `${key}:${value}`]);

/** wrangler.toml with the export-jobs consumer's batch changed and every path absolute. */
function fanoutConfig(maxBatchSize: number, maxBatchTimeoutS: number): string {
  const text = readFileSync(path.join(root, "wrangler.toml"), "utf8");
  const consumerBlock =
    /(\[\[env\.consumer\.queues\.consumers\]\]\s*\nqueue = "export-jobs"\s*\n)max_batch_size = \d+\s*\nmax_batch_timeout = \d+/;
  if (!consumerBlock.test(text)) {
    throw new Error("wrangler.toml: the export-jobs consumer block is not as the bench expects");
  }
  const abs = (p: string) => JSON.stringify(path.join(root, p));
  const out = text
    .replace(
      consumerBlock,
      `$1max_batch_size = ${maxBatchSize}\nmax_batch_timeout = ${maxBatchTimeoutS}`,
    )
    .replace(/^(main\s*=\s*)"([^"]+)"/gm, (_, k: string, p: string) => `${k}${abs(p)}`)
    .replace(/^(directory\s*=\s*)"([^"]+)"/gm, (_, k: string, p: string) => `${k}${abs(p)}`)
    .replace(/^(migrations_dir\s*=\s*)"([^"]+)"/gm, (_, k: string, p: string) => `${k}${abs(p)}`)
    .replace(/^("module"\s*=\s*)"([^"]+)"/gm, (_, k: string, p: string) => `${k}${abs(p)}`);
  const dir = path.join(tmp, "fanout");
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, "wrangler.toml");
  writeFileSync(file, out);
  return file;
}

/** A Worker of wrangler.toml (`--env`) started by the bench on the stack's state and registry. */
async function startWorker(
  s: LocalStack,
  name: string,
  env: "consumer" | "producer",
  port: number,
  inspector: number,
  vars: Record<string, string>,
  config?: string,
): Promise<Guarded> {
  const proc = guarded(
    name,
    [
      wranglerJs,
      "dev",
      ...(config ? ["--config", config] : []),
      "--env",
      env,
      ...devServerFlags(port, inspector),
      "--persist-to",
      s.persistTo,
      ...varFlags(vars),
      ...(env === "consumer" ? ["--test-scheduled"] : []),
    ],
    wranglerEnv(path.join(s.persistTo, "..", "registry")),
    onLine,
  );
  consumers.push(proc);
  await waitUntilUp(`http://127.0.0.1:${port}/${env === "producer" ? "health" : ""}`, name, proc);
  return proc;
}

/**
 * Replaces the running consumer with one started here: same state directory, dev registry and
 * bindings (the producer's Durable Object and queue bindings find it through the registry); its
 * own vars on top of the stack's settings, maybe another config. The stack's own consumer can
 * only be killed (SIGKILL), which leaves its registry entry behind: miniflare would not register
 * the new consumer until that entry is 90 s stale (WORKER_STALE_MS), so it is removed here.
 */
async function swapConsumer(
  s: LocalStack,
  current: Consumer,
  name: string,
  slot: number,
  vars: Record<string, string>,
  config?: string,
): Promise<Consumer> {
  await current.stop();
  const entry = path.join(s.persistTo, "..", "registry", "reel-exports-consumer");
  if (!(await until(3000, 100, async () => !existsSync(entry)))) rmSync(entry, { force: true });
  const proc = await startWorker(
    s,
    name,
    "consumer",
    SWAP_PORTS[slot] as number,
    SWAP_INSPECTORS[slot] as number,
    { ...s.settings, ...vars },
    config,
  );
  return { name, url: `http://127.0.0.1:${SWAP_PORTS[slot]}`, stop: () => proc.stop() };
}

/**
 * A job through the new consumer, so that its isolate is warm and the producer's dev registry has
 * found it (a queue message sent before that is dropped): POSTs until one reaches `/run`.
 */
async function warmUp(s: LocalStack, endpoint: string, project: number): Promise<string> {
  for (let attempt = 0; attempt < 8; attempt++) {
    const posted = await postExport(producer.url, s.settings.API_TOKEN as string, project);
    if (!posted.id) continue;
    const arrived = await until(6000, 100, async () =>
      (await runRequests(s, endpoint)).some((r) => r.body?.input?.export_job_id === posted.id),
    );
    if (arrived) return posted.id;
  }
  throw new Error(`no warm-up job reached RunPod's /run on ${endpoint}`);
}

// ---- figures ------------------------------------------------------------------------------------

interface Figure {
  value: number | string | null;
  unit: string;
  target: string;
  pass: boolean | null;
  note: string;
}
const results: Record<string, Figure | unknown> = {};
const table: [string, string, string, string][] = [];

function figure(key: string, label: string, f: Figure): void {
  results[key] = f;
  const value =
    typeof f.value === "number" ? `${round(f.value, f.value < 10 ? 2 : 1)} ${f.unit}` : f.value;
  table.push([
    label,
    String(value ?? "—"),
    f.target,
    f.pass === null ? "info" : f.pass ? "PASS" : "FAIL",
  ]);
}

/** The sustained rate of 200 answers, excluding the first second after the first one. */
function sustained(runs: RunRecord[], from: number) {
  const ok = runs
    .filter((r) => r.responseStatus === 200 && Date.parse(r.receivedAt) >= from)
    .map((r) => Date.parse(r.receivedAt))
    .sort((a, b) => a - b);
  const first = ok[0] ?? Number.NaN;
  const last = ok.at(-1) ?? Number.NaN;
  const inWindow = ok.filter((t) => t > first + 1000).length;
  const windowS = (last - first - 1000) / 1000;
  // Pauses of more than 2 s between two accepted runs (a stall), within the window.
  let gapsS = 0;
  for (let i = 1; i < ok.length; i++) {
    const gap = ((ok[i] as number) - (ok[i - 1] as number)) / 1000;
    if (gap > 2 && (ok[i] as number) > first + 1000) gapsS += gap;
  }
  const perSecond: number[] = [];
  for (const t of ok) {
    const bucket = Math.floor((t - first) / 1000);
    perSecond[bucket] = (perSecond[bucket] ?? 0) + 1;
  }
  return {
    accepted: ok.length,
    rate: windowS > 0 ? inWindow / windowS : Number.NaN,
    rateWithoutGaps: windowS - gapsS > 0 ? inWindow / (windowS - gapsS) : Number.NaN,
    gapsS,
    spanS: (last - first) / 1000,
    firstSecond: perSecond[0] ?? 0,
    maxSecond: Math.max(0, ...perSecond.map((n) => n ?? 0)),
    minSecond: Math.min(...perSecond.slice(1, -1).map((n) => n ?? 0)),
  };
}

interface BurstResult {
  posts: number;
  post_answers: Record<string, number>;
  post_ms: number;
  post_per_s: number;
  drained: boolean;
  drain_s: number;
  run_answers: Record<string, number>;
  sustained_per_s: number;
  sustained_without_gaps_per_s: number;
  gaps_s: number;
  accepted: number;
  first_second: number;
  max_second: number;
  min_second: number;
  statuses: Record<string, number>;
  retries_spent: number;
  jobs_retried: number;
  runs_per_job: number;
  batches: number;
  mean_batch: number;
  timeline: TimelinePoint[];
  recoveries: Recovery[];
  /** Consumer batches (and their messages) in the last 10 s of the burst's window. */
  stallBatches: number;
  stallMessages: number;
}

/** 1,000 POSTs from 32 clients, then until RunPod accepted them all or `capMs` passed. */
async function burst(
  s: LocalStack,
  consumer: Consumer,
  endpoint: string,
  projectBase: number,
  capMs: number,
): Promise<BurstResult> {
  const projects = Array.from({ length: 50 }, (_, i) => projectBase + i);
  const before = await runAnswers(s, endpoint);
  const batchesBefore = batches.length;
  const t0 = Date.now();
  const { posts, ids, ms } = await postMany(
    producer.url,
    s.settings.API_TOKEN as string,
    BURST_JOBS,
    CLIENTS,
    (i) => projects[i % projects.length] as number,
    `burst-${endpoint}`,
  );
  note(`posted ${ids.size} in ${(ms / 1000).toFixed(1)} s, submitting… `);
  const timeline: TimelinePoint[] = [];
  const recoveries: Recovery[] = [];
  let polls = 0;
  let seen = -1;
  let progressAt = Date.now();
  const drained = await until(capMs, 500, async () => {
    const now = delta(before, await runAnswers(s, endpoint));
    if (polls++ % 4 === 0) timeline.push(await timelinePoint(s, t0, now));
    const calls = (now["200"] ?? 0) + (now["429"] ?? 0);
    if (calls !== seen) {
      seen = calls;
      progressAt = Date.now();
    } else if (Date.now() - progressAt > STALL_MS && (now["200"] ?? 0) < ids.size) {
      // No /run for a while with jobs left: messages lost on the way (see README), or not.
      recoveries.push(await recoverLost(s, consumer, projects, ids, t0));
      progressAt = Date.now();
    }
    return (now["200"] ?? 0) >= ids.size;
  });
  const drainS = (Date.now() - t0) / 1000;
  const runs = (await runRequests(s, endpoint)).filter((r) =>
    ids.has(r.body?.input?.export_job_id ?? ""),
  );
  const rate = sustained(runs, t0);
  const jobs = (
    await Promise.all([0, 1].map((h) => listJobs(s, projects.slice(h * 25, h * 25 + 25))))
  )
    .flat()
    .filter((job) => ids.has(job.id));
  const own = batches.slice(batchesBefore);
  return {
    posts: posts.length,
    post_answers: countBy(posts.map((p) => p.status)),
    post_ms: ms,
    post_per_s: (posts.length / ms) * 1000,
    drained,
    drain_s: drainS,
    run_answers: delta(before, await runAnswers(s, endpoint)),
    sustained_per_s: rate.rate,
    sustained_without_gaps_per_s: rate.rateWithoutGaps,
    gaps_s: rate.gapsS,
    accepted: rate.accepted,
    first_second: rate.firstSecond,
    max_second: rate.maxSecond,
    min_second: rate.minSecond,
    statuses: countBy(jobs.map((j) => j.status)),
    retries_spent: jobs.reduce((n, j) => n + j.retry_count, 0),
    jobs_retried: jobs.filter((j) => j.retry_count > 0).length,
    runs_per_job: runs.filter((r) => r.responseStatus === 200).length / Math.max(1, ids.size),
    batches: own.length,
    mean_batch: own.reduce((n, b) => n + b.size, 0) / Math.max(1, own.length),
    timeline,
    recoveries,
    stallBatches: own.filter((b) => b.at > Date.now() - 10_000).length,
    stallMessages: own.filter((b) => b.at > Date.now() - 10_000).reduce((n, b) => n + b.size, 0),
  };
}

interface Recovery {
  /** s after the first POST. */
  at_s: number;
  /** Jobs of the burst still pending that were never claimed (attempt 0). */
  never_claimed: number;
  pending: number;
  /** The dispatcher's backlog and slots then. */
  waiting: number | null;
  in_flight: number | null;
}

/** No /run for this long while jobs are left: look why, and run the reconciler once. */
const STALL_MS = 8000;

/**
 * A stall: counts the burst's jobs that were never claimed, then runs the consumer's reconciler
 * (GET /__scheduled), whose lost-message step re-enqueues pending jobs due for longer than
 * PENDING_GRACE_S (10 s in the bench), as the cron would.
 */
async function recoverLost(
  s: LocalStack,
  consumer: Consumer,
  projects: number[],
  ids: Set<string>,
  t0: number,
): Promise<Recovery> {
  const jobs = (
    await Promise.all([0, 1].map((h) => listJobs(s, projects.slice(h * 25, h * 25 + 25))))
  )
    .flat()
    .filter((job) => ids.has(job.id));
  const point = await timelinePoint(s, t0, {});
  const recovery: Recovery = {
    at_s: point.s,
    never_claimed: jobs.filter((j) => j.status === "pending" && j.attempt === 0).length,
    pending: jobs.filter((j) => j.status === "pending").length,
    waiting: point.waiting,
    in_flight: point.in_flight,
  };
  logs.push(`[bench] stall at ${recovery.at_s} s: ${JSON.stringify(recovery)}; reconciling`);
  const res = await fetch(`${consumer.url}/__scheduled`, { signal: AbortSignal.timeout(60_000) });
  await res.arrayBuffer();
  return recovery;
}

interface TimelinePoint {
  s: number;
  run_200: number;
  run_429: number;
  d1_pending: number | null;
  d1_processing: number | null;
  in_flight: number | null;
  waiting: number | null;
  gate: string | null;
}

/** Where a burst stands: RunPod's answers so far, D1's counts and the dispatcher (GET /stats). */
async function timelinePoint(
  s: LocalStack,
  t0: number,
  answers: Record<string, number>,
): Promise<TimelinePoint> {
  const point: TimelinePoint = {
    s: Math.round((Date.now() - t0) / 100) / 10,
    run_200: answers["200"] ?? 0,
    run_429: answers["429"] ?? 0,
    d1_pending: null,
    d1_processing: null,
    in_flight: null,
    waiting: null,
    gate: null,
  };
  try {
    const stats = await readJson<{
      jobs: Record<string, number>;
      dispatch: { state: string; in_flight: number; waiting: number } | null;
    }>(`${producer.url}/stats`, { headers: { authorization: `Bearer ${s.settings.ADMIN_TOKEN}` } });
    point.d1_pending = stats.jobs.pending ?? null;
    point.d1_processing = stats.jobs.processing ?? null;
    point.in_flight = stats.dispatch?.in_flight ?? null;
    point.waiting = stats.dispatch?.waiting ?? null;
    point.gate = stats.dispatch?.state ?? null;
  } catch {}
  return point;
}

/** What the stalls of a burst were, if it had any. */
function lostNote(b: BurstResult): string {
  if (b.recoveries.length === 0) return "";
  const stalls = b.recoveries
    .map(
      (r) =>
        `at ${r.at_s} s ${r.never_claimed} of ${r.pending} pending jobs never claimed, dispatcher waiting ${r.waiting}, in flight ${r.in_flight}`,
    )
    .join("; ");
  return (
    `. STALLED ${b.recoveries.length}× (no /run for ${STALL_MS / 1000} s): ${stalls}; jobs never ` +
    "claimed that the dispatcher does not hold were never delivered to the consumer (their queue " +
    "message was lost between the two wrangler dev processes); the bench ran the reconciler, which " +
    `re-enqueued them. Rate without the ${b.gaps_s.toFixed(1)} s of pauses: ${b.sustained_without_gaps_per_s.toFixed(1)}/s`
  );
}

/** A burst that stopped making progress: when, and what D1 and the dispatcher said then. */
function stallOf(b: BurstResult): { at_s: number; note: string } | null {
  if (b.drained) return null;
  const last = b.timeline.at(-1);
  const stuckSince = b.timeline.find(
    (p) => p.run_200 === last?.run_200 && p.run_429 === last?.run_429,
  );
  if (!last || !stuckSince || last.s - stuckSince.s < 10) return null;
  return {
    at_s: stuckSince.s,
    note:
      `no /run at all from ${stuckSince.s} s to ${last.s} s with ${last.run_200} accepted and ` +
      `${last.run_429} × 429: D1 pending ${last.d1_pending}, processing ${last.d1_processing}; ` +
      `dispatcher in_flight ${last.in_flight}, waiting ${last.waiting}, gate ${last.gate}; consumer ` +
      `batches meanwhile ${b.stallBatches} (${b.stallMessages} messages) — see phases.gate_off.timeline`,
  };
}

/** Figure 4 (and the per-job counts of the cost): sparse POSTs that run to completion. */
async function dispatchLatency(s: LocalStack, endpoint: string, projectBase: number) {
  await emulatorConfig(s, endpoint, { queueMs: 50, runMs: 400 });
  const batchesBefore = batches.length;
  const posted: Posted[] = [];
  for (let i = 0; i < LATENCY_JOBS; i++) {
    const started = Date.now();
    posted.push(await postExport(producer.url, s.settings.API_TOKEN as string, projectBase + i));
    await sleep(Math.max(0, LATENCY_SPACING_MS - (Date.now() - started)));
  }
  const byId = new Map(posted.flatMap((p) => (p.id ? [[p.id, p] as const] : [])));
  const projects = Array.from({ length: LATENCY_JOBS }, (_, i) => projectBase + i);
  let jobs: Job[] = [];
  await until(30_000, 250, async () => {
    jobs = (await listJobs(s, projects)).filter((j) => byId.has(j.id));
    return jobs.length === byId.size && jobs.every((j) => j.status === "complete");
  });
  const runs = await runRequests(s, endpoint);
  const firstRun = new Map<string, number>();
  for (const r of runs) {
    const id = r.body?.input?.export_job_id;
    if (id && byId.has(id) && !firstRun.has(id)) firstRun.set(id, Date.parse(r.receivedAt));
  }
  const latencies = [...byId].flatMap(([id, p]) => {
    const at = firstRun.get(id);
    return at === undefined ? [] : [at - p.answeredAt];
  });
  const toComplete = jobs.flatMap((j) => {
    const p = byId.get(j.id);
    return p && j.completed_at ? [sqlMs(j.completed_at) - p.answeredAt] : [];
  });
  const emu = (await emulatorJobs(s, endpoint)).filter((j) =>
    byId.has(j.input.export_job_id ?? ""),
  );
  const own = batches.slice(batchesBefore);
  return {
    jobs: byId.size,
    complete: jobs.filter((j) => j.status === "complete").length,
    latencies,
    toComplete,
    webhooksPerJob: emu.reduce((n, j) => n + j.webhookDeliveries.length, 0) / emu.length,
    progressPerJob: emu.reduce((n, j) => n + j.progressCalls.length, 0) / emu.length,
    runsPerJob: runs.filter((r) => byId.has(r.body?.input?.export_job_id ?? "")).length / byId.size,
    messagesPerJob: own.reduce((n, b) => n + b.size, 0) / byId.size,
    batchesPerJob: own.length / byId.size,
  };
}

/** Figure 2: one batch of FANOUT_JOBS messages against a /run that answers after 100 ms. */
async function fanout(
  s: LocalStack,
  endpoint: string,
  consumer: string,
  concurrency: number,
  projectBase: number,
) {
  const batchesBefore = batches.length;
  const before = (await runRequests(s, endpoint)).length;
  const { ids, ms } = await postMany(
    producer.url,
    s.settings.API_TOKEN as string,
    FANOUT_JOBS,
    CLIENTS,
    (i) => projectBase + (i % 50),
  );
  const expectMs = (FANOUT_JOBS * FANOUT_RUN_DELAY_MS * 2) / concurrency + 10_000;
  await until(
    expectMs,
    200,
    async () => (await runRequests(s, endpoint)).length - before >= ids.size,
  );
  await sleep(FANOUT_RUN_DELAY_MS + 300); // the last answers, and the batch's QUEUE line
  await until(10_000, 100, async () =>
    batches.slice(batchesBefore).some((b) => b.consumer === consumer),
  );
  const records = (await runRequests(s, endpoint)).filter((r) =>
    ids.has(r.body?.input?.export_job_id ?? ""),
  );
  // Answers other than 200 (a 429) come at once: only accepted runs took runDelayMs.
  const runs = records
    .filter((r) => r.responseStatus === 200)
    .map((r) => Date.parse(r.receivedAt))
    .sort((a, b) => a - b);
  const own = batches.slice(batchesBefore).filter((b) => b.consumer === consumer);
  const largest = own.reduce((a, b) => (b.size > (a?.size ?? 0) ? b : a), own[0]);
  // Each answer takes runDelayMs: runs received less than that apart were in flight together.
  const concurrent = Math.max(
    0,
    ...runs.map((t) => runs.filter((u) => u <= t && u > t - FANOUT_RUN_DELAY_MS).length),
  );
  // The batch's own times: its start (its QUEUE line, less its ms) to the first /run, the /run
  // span, and from the last answer to its end.
  const end = largest?.at ?? Number.NaN;
  const start = end - (largest?.ms ?? Number.NaN);
  const lastAnswer = (runs.at(-1) ?? Number.NaN) + FANOUT_RUN_DELAY_MS;
  return {
    before_first_run_ms: (runs[0] ?? Number.NaN) - start,
    after_last_answer_ms: end - lastAnswer,
    run_answers: countBy(records.map((r) => r.responseStatus ?? "none")),
    max_concurrent_runs: concurrent,
    run_offsets_ms: runs.map((t) => t - (runs[0] ?? t)),
    post_ms: ms,
    posted: ids.size,
    batches: own.map((b) => ({ size: b.size, acked: b.acked, ms: b.ms })),
    batch_size: largest?.size ?? 0,
    batch_ms: largest?.ms ?? Number.NaN,
    run_span_ms: (runs.at(-1) ?? Number.NaN) - (runs[0] ?? Number.NaN) + FANOUT_RUN_DELAY_MS,
  };
}

/** Figure 7: LIVE_CLIENTS operators' sockets, LIVE_TRANSITIONS progress reports of one job. */
async function liveLatency(s: LocalStack, endpoint: string, jobId: string) {
  const job = (await emulatorJobs(s, endpoint)).find((j) => j.input.export_job_id === jobId);
  const progressUrl = job?.input.progress_url;
  if (!progressUrl) throw new Error("the live job has no progress_url at the emulator");
  const attempt = Number(new URL(progressUrl).searchParams.get("attempt"));
  const sig = await signText(s.settings.WEBHOOK_SECRET as string, `progress:${jobId}:${attempt}`);
  const signedHere = new URL(progressUrl).searchParams.get("sig") === sig;
  const wsBase = producer.url.replace(/^http/, "ws");
  const arrivals = new Map<number, number[]>(); // progress → arrival times
  const sockets: WebSocket[] = [];
  let snapshots = 0;
  await Promise.all(
    Array.from({ length: LIVE_CLIENTS }, async () => {
      const { ticket } = await readJson<{ ticket: string }>(
        `${producer.url}/live-tickets`,
        jsonInit(
          "POST",
          { all_projects: true },
          {
            authorization: `Bearer ${s.settings.ADMIN_TOKEN}`,
          },
        ),
      );
      const ws = new WebSocket(`${wsBase}/live?ticket=${encodeURIComponent(ticket)}`);
      sockets.push(ws);
      ws.addEventListener("message", (event) => {
        const at = Date.now();
        const message = JSON.parse(String(event.data)) as {
          type: string;
          job?: { id: string; progress: number };
        };
        if (message.type === "snapshot") snapshots++;
        if (message.type === "job" && message.job?.id === jobId) {
          const list = arrivals.get(message.job.progress) ?? [];
          list.push(at);
          arrivals.set(message.job.progress, list);
        }
      });
      await new Promise<void>((resolve, reject) => {
        ws.addEventListener("open", () => resolve(), { once: true });
        ws.addEventListener("error", () => reject(new Error("a live socket failed")), {
          once: true,
        });
      });
    }),
  );
  await until(20_000, 50, async () => snapshots >= LIVE_CLIENTS);
  const sent: { progress: number; sentAt: number; answeredAt: number; status: number }[] = [];
  for (let p = 1; p <= LIVE_TRANSITIONS; p++) {
    const sentAt = Date.now();
    const res = await fetch(progressUrl, jsonInit("POST", { progress: p }));
    await res.arrayBuffer();
    sent.push({ progress: p, sentAt, answeredAt: Date.now(), status: res.status });
    await sleep(100);
  }
  await until(5000, 50, async () =>
    sent.every((t) => (arrivals.get(t.progress)?.length ?? 0) >= LIVE_CLIENTS),
  );
  const fromAnswer: number[] = [];
  const fromSend: number[] = [];
  let missing = 0;
  for (const t of sent) {
    const got = arrivals.get(t.progress) ?? [];
    missing += Math.max(0, LIVE_CLIENTS - got.length);
    for (const at of got) {
      fromAnswer.push(at - t.answeredAt);
      fromSend.push(at - t.sentAt);
    }
  }
  for (const ws of sockets) ws.close();
  await sleep(300);
  return {
    clients: LIVE_CLIENTS,
    snapshots,
    transitions: sent.length,
    answers: countBy(sent.map((t) => t.status)),
    fromAnswer,
    fromSend,
    missing,
    signedHere,
  };
}

/** The bare producer (bench/worker/bare.toml) on the stack's state and registry. */
async function startBare(s: LocalStack): Promise<string> {
  const product = readFileSync(path.join(root, "wrangler.toml"), "utf8");
  const id = /\[\[env\.producer\.d1_databases\]\][^[]*?database_id\s*=\s*"([^"]+)"/.exec(
    product,
  )?.[1];
  if (!id) throw new Error("wrangler.toml: no database_id for the producer's D1");
  const text = readFileSync(path.join(root, "bench/worker/bare.toml"), "utf8")
    .replace(/^database_id\s*=\s*"[^"]*"/m, `database_id = ${JSON.stringify(id)}`)
    .replace(
      /^main\s*=\s*"([^"]+)"/m,
      (_, p: string) => `main = ${JSON.stringify(path.join(root, "bench/worker", p))}`,
    );
  const dir = path.join(tmp, "bare");
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, "wrangler.toml"), text);
  const proc = guarded(
    "bare",
    [
      wranglerJs,
      "dev",
      "--config",
      path.join(dir, "wrangler.toml"),
      ...devServerFlags(PORTS.bare, PORTS.bareInspector),
      "--persist-to",
      s.persistTo,
    ],
    wranglerEnv(path.join(s.persistTo, "..", "registry")),
    onLine,
  );
  consumers.push(proc);
  const url = `http://127.0.0.1:${PORTS.bare}`;
  await waitUntilUp(`${url}/health`, "the bare producer", proc);
  return url;
}

/** The variants of figure 3, each measured in every round, one after the other. */
const OVERHEAD_VARIANTS = [
  { key: "bare", label: "bare (insert + send)", path: "/exports" },
  { key: "bare_r2", label: "bare + R2 HEAD", path: "/exports?with=r2" },
  {
    key: "bare_r2_live",
    label: "bare + R2 HEAD + 2 live publications",
    path: "/exports?with=r2,live",
  },
  { key: "producer", label: "the producer", path: "" },
] as const;

interface OverheadSummary {
  requests: number;
  answers: Record<string, number>;
  per_s: number;
  p50_ms: number;
  p99_ms: number;
}

/**
 * Figure 3: the producer against the bare producer and its variants, round after round, the same
 * clients and body; both write the stack's D1 and send to its queue.
 */
async function producerOverhead(s: LocalStack, bareUrl: string, projectBase: number) {
  const posts = new Map<string, { posts: Posted[]; ms: number }>();
  for (let round = 0; round < OVERHEAD_ROUNDS; round++) {
    for (const [v, variant] of OVERHEAD_VARIANTS.entries()) {
      const r = await postForVariant(
        variant.key === "producer" ? producer.url : bareUrl,
        variant.key === "producer" ? "" : variant.path.replace("/exports", ""),
        s.settings.API_TOKEN as string,
        OVERHEAD_ROUND_MS,
        (i) => projectBase + v * 100 + (i % 50),
      );
      const acc = posts.get(variant.key) ?? { posts: [], ms: 0 };
      acc.posts.push(...r.posts);
      acc.ms += r.ms;
      posts.set(variant.key, acc);
      await sleep(300);
    }
  }
  const out: Record<string, OverheadSummary> = {};
  for (const [key, { posts: list, ms }] of posts) {
    const ok = list.filter((p) => p.status === 202);
    const lat = ok.map((p) => p.answeredAt - p.sentAt);
    out[key] = {
      requests: list.length,
      answers: countBy(list.map((p) => p.status)),
      per_s: (ok.length / ms) * 1000,
      p50_ms: median(lat),
      p99_ms: quantile(lat, 0.99),
    };
  }
  return out;
}

/** Like postFor, against `${base}/exports${query}`. */
async function postForVariant(
  base: string,
  query: string,
  token: string,
  ms: number,
  project: (i: number) => number,
): Promise<{ posts: Posted[]; ms: number }> {
  const posts: Posted[] = [];
  let i = 0;
  const t0 = Date.now();
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      while (Date.now() - t0 < ms) posts.push(await postExport(base, token, project(i++), query));
    }),
  );
  return { posts, ms: Date.now() - t0 };
}

// ---- the run ----------------------------------------------------------------------------------

const mach = machine();
const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(0)} s`;

async function main(): Promise<void> {
  console.log(
    `bench on ${mach.nproc} CPUs (${mach.cpu_model}), ${mach.memory_gb} GB, load ${mach.load_avg_1m_at_start}; ` +
      `node ${mach.node}; state in ${tmp}`,
  );
  await waitForPorts(ALL_PORTS, (s) => note(`(${s}) `));
  if (interrupted) return;
  const settings: Record<string, string> = {
    RUNPOD_ENDPOINT_ID: ENDPOINTS.paced,
    RUNPOD_RUNS_PER_10S: String(10 * R),
    RUNPOD_MAX_IN_FLIGHT: "2000",
    SUBMIT_CONCURRENCY: String(DEPLOYED_SUBMIT_CONCURRENCY),
    // The reconciler runs only when the bench calls it (a stall, see burst()): then it re-enqueues
    // pending jobs whose message was lost once they are 10 s due.
    PENDING_GRACE_S: "10",
  };
  // Not an object literal: a version of local-stack without the frontend example ignores it.
  const noExample = { exampleFrontendPort: null };
  const options: StackOptions = {
    producerPort: PORTS.producer,
    consumerPort: PORTS.consumer,
    emulatorPort: PORTS.emulator,
    inspectorPorts: [PORTS.producerInspector, PORTS.consumerInspector],
    persistTo: stateDir,
    settings,
    // Every endpoint's settings are put through the admin API (a CLI setting would be every
    // endpoint's default: a rate limit there would also throttle the fan-out's endpoints).
    emulatorEnv: { RUNPOD_EMULATOR_RUN_MS: String(LONG_RUN_MS) },
    onOutput: onLine,
    ...noExample,
  };
  note("starting the stack and the bench Worker… ");
  stack = startLocalStack(options);
  const workerUp = startBenchWorker(
    path.join(tmp, "bench-worker", "state"),
    PORTS.benchWorker,
    PORTS.benchInspector,
    onLine,
    (proc) => {
      benchWorker = proc;
    },
  );
  const worker = await workerUp;
  const lives = await rowsPerJob(worker);
  const seeder = new Seeder(worker);
  seeder.release(); // seeds while the stack starts
  const s = await stack;
  producer.url = s.producerUrl;
  await seeder.hold();
  console.log(`up (${elapsed()}; ${seeder.seeded.toLocaleString()} jobs seeded)`);

  // Phase A: the stack's own consumer, gate at 10·R per 10 s.
  let consumer: Consumer = {
    name: "consumer",
    url: s.consumerUrl,
    stop: () => s.crashConsumer(),
  };
  await emulatorConfig(s, ENDPOINTS.paced, { runRateLimitPerS: R, queueMs: 50, runMs: 400 });
  await warmUp(s, ENDPOINTS.paced, 700_000);
  load("dispatch_latency");
  note("dispatch latency… ");
  const lat = await dispatchLatency(s, ENDPOINTS.paced, 700_100);
  console.log(`p50 ${median(lat.latencies)} ms`);
  await emulatorConfig(s, ENDPOINTS.paced, { runMs: LONG_RUN_MS });
  load("gate_on");
  note(`burst, gate on (RUNPOD_RUNS_PER_10S=${10 * R}): `);
  const paced = await burst(s, consumer, ENDPOINTS.paced, 710_000, 120_000);
  console.log(`${paced.sustained_per_s.toFixed(1)}/s sustained (${elapsed()})`);

  // Phase B: the gate effectively off.
  seeder.release();
  consumer = await swapConsumer(s, consumer, "consumer-open", 0, {
    RUNPOD_ENDPOINT_ID: ENDPOINTS.open,
    RUNPOD_RUNS_PER_10S: "100000",
    RUNPOD_MAX_IN_FLIGHT: "2000",
  });
  await emulatorConfig(s, ENDPOINTS.open, { runRateLimitPerS: R, runMs: LONG_RUN_MS });
  await warmUp(s, ENDPOINTS.open, 720_999);
  await seeder.hold();
  await sleep(1500); // the emulator's bucket refills after the warm-up
  load("gate_off");
  note("burst, gate off (RUNPOD_RUNS_PER_10S=100000): ");
  const open = await burst(
    s,
    consumer,
    ENDPOINTS.open,
    720_000,
    Math.min(120_000, Math.max(60_000, paced.drain_s * 1000 * 1.5)),
  );
  console.log(
    `${open.run_answers["429"] ?? 0} × 429, ${open.sustained_per_s.toFixed(1)}/s (${elapsed()})`,
  );

  // Phase C: one batch of 100 messages, SUBMIT_CONCURRENCY 1 then 6.
  const fanoutToml = fanoutConfig(FANOUT_JOBS, 3);
  const fan: Record<number, Awaited<ReturnType<typeof fanout>>> = {};
  for (const [slot, c, endpoint] of [
    [1, 1, ENDPOINTS.fanout1],
    [2, DEPLOYED_SUBMIT_CONCURRENCY, ENDPOINTS.fanout6],
  ] as const) {
    seeder.release();
    const name = `consumer-fanout-c${c}`;
    consumer = await swapConsumer(
      s,
      consumer,
      name,
      slot,
      {
        RUNPOD_ENDPOINT_ID: endpoint,
        RUNPOD_RUNS_PER_10S: "100000",
        RUNPOD_MAX_IN_FLIGHT: "2000",
        SUBMIT_CONCURRENCY: String(c),
      },
      fanoutToml,
    );
    await emulatorConfig(s, endpoint, {
      runDelayMs: FANOUT_RUN_DELAY_MS,
      runMs: LONG_RUN_MS,
      runRateLimitPerS: 0,
    });
    await warmUp(s, endpoint, 730_000 + c * 100);
    await seeder.hold();
    load(`fanout_c${c}`);
    note(`fan-out, SUBMIT_CONCURRENCY=${c}: `);
    fan[c] = await fanout(s, endpoint, name, c, 730_000 + c * 100);
    console.log(`batch of ${fan[c]?.batch_size} in ${fan[c]?.batch_ms} ms (${elapsed()})`);
  }

  // Phase D: one run in flight (every other job waits in the dispatcher): live status, then the
  // producer against the bare Worker while the consumer has next to nothing to do.
  seeder.release();
  consumer = await swapConsumer(s, consumer, "consumer-hold", 3, {
    RUNPOD_ENDPOINT_ID: ENDPOINTS.hold,
    RUNPOD_RUNS_PER_10S: "100000",
    RUNPOD_MAX_IN_FLIGHT: "1",
  });
  await emulatorConfig(s, ENDPOINTS.hold, { runMs: LONG_RUN_MS, runRateLimitPerS: 0 });
  const liveJob = await warmUp(s, ENDPOINTS.hold, 740_000);
  const bareUrl = await startBare(s);
  await seeder.hold();
  load("live");
  note("live status: ");
  const live = await liveLatency(s, ENDPOINTS.hold, liveJob);
  console.log(`p99 ${quantile(live.fromAnswer, 0.99)} ms after the answer`);
  load("producer_overhead");
  note("producer vs bare producer: ");
  const overhead = await producerOverhead(s, bareUrl, 750_000);
  console.log(
    `${overhead.producer?.per_s.toFixed(0)}/s vs ${overhead.bare?.per_s.toFixed(0)}/s (${elapsed()})`,
  );

  // The rest of the seeding, alone, then the plans.
  seeder.release();
  const stopping = consumer.stop().then(() => stopStack());
  note(`seeding the rest of ${SEED_JOBS.toLocaleString()} jobs… `);
  const seeded = await seeder.done;
  await stopping;
  console.log(`done (${seeded.seconds.toFixed(0)} s of seeding in all; ${elapsed()})`);
  load("plans");
  note("plans at 1M rows… ");
  const plans = await plansAt1M(worker);
  console.log(`${plans.plans.length} statements (${elapsed()})`);

  report({ lives, lat, paced, open, fan, live, overhead, plans, seeded });
}

// ---- the report ---------------------------------------------------------------------------------

interface Measured {
  lives: LifeRows[];
  lat: Awaited<ReturnType<typeof dispatchLatency>>;
  paced: BurstResult;
  open: BurstResult;
  fan: Record<number, Awaited<ReturnType<typeof fanout>>>;
  live: Awaited<ReturnType<typeof liveLatency>>;
  overhead: Awaited<ReturnType<typeof producerOverhead>>;
  plans: { plans: PlanFigure[]; missingBinds: string[] };
  seeded: { seconds: number; rows_written: number };
}

function report(m: Measured): void {
  // 1. Dispatch pacing.
  const p = m.paced;
  const o = m.open;
  const pacedErrors = p.statuses.error ?? 0;
  figure("dispatch_pacing_sustained_rate", "1. /run accepted per s, gate at 10·R (R = 20)", {
    value: p.sustained_per_s,
    unit: "/s",
    target: `≥ ${0.9 * R}/s, 0 × 429, 0 error`,
    pass: p.sustained_per_s >= 0.9 * R && (p.run_answers["429"] ?? 0) === 0 && pacedErrors === 0,
    note:
      `${BURST_JOBS} POSTs (${CLIENTS} clients, an Idempotency-Key each, 5xx sent again) in ${(p.post_ms / 1000).toFixed(1)} s, ` +
      `answers ${JSON.stringify(p.post_answers)}; RunPod accepted ${p.accepted} ` +
      `in ${p.drain_s.toFixed(1)} s${p.drained ? "" : " (not all: cap reached)"}; ` +
      `rate from the emulator's receivedAt of 200 answers after the first second ` +
      `(first second ${p.first_second}, busiest ${p.max_second}, quietest ${p.min_second}); ` +
      `/run answers ${JSON.stringify(p.run_answers)}; jobs ${JSON.stringify(p.statuses)}; ` +
      `retry_count spent ${p.retries_spent}; /run 200s per job ${p.runs_per_job.toFixed(2)}; ` +
      `${p.batches} consumer batches (mean ${p.mean_batch.toFixed(1)} messages)${lostNote(p)}`,
  });
  figure("dispatch_pacing_429", "1. /run answered 429, gate at 10·R", {
    value: p.run_answers["429"] ?? 0,
    unit: "",
    target: "0",
    pass: (p.run_answers["429"] ?? 0) === 0,
    note: `jobs in error: ${pacedErrors}`,
  });
  figure("dispatch_pacing_errors", "1. jobs in error, gate at 10·R", {
    value: pacedErrors,
    unit: "",
    target: "0",
    pass: pacedErrors === 0,
    note: `retry_count spent ${p.retries_spent} over ${p.jobs_retried} jobs`,
  });
  figure("dispatch_gate_off_429", "1'. /run answered 429, gate off (100000/10 s)", {
    value: o.run_answers["429"] ?? 0,
    unit: "",
    target: "(what the gate saves)",
    pass: null,
    note:
      `same burst; RunPod accepted ${o.accepted} in ${o.drain_s.toFixed(1)} s${o.drained ? "" : " (cap reached)"}, ` +
      `sustained ${o.sustained_per_s.toFixed(1)}/s; /run answers ${JSON.stringify(o.run_answers)} ` +
      `(${((o.run_answers["429"] ?? 0) / Math.max(1, o.accepted)).toFixed(2)} × 429 per accepted run); ` +
      `jobs ${JSON.stringify(o.statuses)}; retry_count spent ${o.retries_spent}${lostNote(o)}`,
  });
  const stall = stallOf(o);
  if (stall) {
    figure("dispatch_gate_off_stall", "1'. gate off: submissions stopped (s after first POST)", {
      value: stall.at_s,
      unit: "s",
      target: "(none expected)",
      pass: null,
      note: stall.note,
    });
  }
  figure("dispatch_gate_off_errors", "1'. jobs in error, gate off", {
    value: o.statuses.error ?? 0,
    unit: "",
    target: "(what the gate saves)",
    pass: null,
    note: "429s release the job (retry_count unchanged); only submissions that failed otherwise count",
  });

  // 2. Fan-out.
  const c1 = m.fan[1];
  const c6 = m.fan[DEPLOYED_SUBMIT_CONCURRENCY];
  const rounds = Math.ceil(FANOUT_JOBS / DEPLOYED_SUBMIT_CONCURRENCY);
  const floor = rounds * FANOUT_RUN_DELAY_MS;
  const c6Ms = c6?.batch_ms ?? Number.NaN;
  // What one invocation sustains, from the figure: 6 submissions per measured round.
  const roundMs = (c6?.run_span_ms ?? Number.NaN) / rounds;
  const perInvocation = (DEPLOYED_SUBMIT_CONCURRENCY * 1000) / roundMs;
  const defaultPace = 90; // RUNPOD_RUNS_PER_10S = 900
  const concurrency = Math.ceil(defaultPace / perInvocation) + 1;
  const recommendation =
    `One invocation sustains ${perInvocation.toFixed(0)} submissions/s at this /run latency ` +
    `(${roundMs.toFixed(0)} ms per round of ${DEPLOYED_SUBMIT_CONCURRENCY}); the default pace (900 per 10 s = ${defaultPace}/s) ` +
    `needs ${Math.ceil(defaultPace / perInvocation)} at once, so max_concurrency ≥ ${concurrency}; ` +
    `a batch of B waits ≈ ceil(B/6) rounds for its last job, so max_batch_size 30 (5 rounds, ≈ ${(roundMs * 5).toFixed(0)} ms) ` +
    "rather than 100 keeps the dispatch latency of a batch's last job under a second at the same throughput";
  figure(
    "fanout_batch_c6_vs_floor",
    `2. one batch of ${FANOUT_JOBS}, SUBMIT_CONCURRENCY=6 ÷ floor`,
    {
      value: c6Ms / floor,
      unit: "× floor",
      target: `≤ 1.25 × ${floor} ms`,
      pass: c6Ms / floor <= 1.25 && c6?.batch_size === FANOUT_JOBS,
      note:
        `batch wall time (miniflare's QUEUE line) ${c6Ms} ms for ${c6?.batch_size} messages ` +
        `(batches seen ${JSON.stringify(c6?.batches)}), /run answers ${JSON.stringify(c6?.run_answers)}: ` +
        `≈${c6?.before_first_run_ms} ms before the first /run (pending read, dispatcher, claim and its ` +
        `live publications), ${c6?.run_span_ms} ms from the first /run to the last answer ` +
        `(${roundMs.toFixed(0)} ms per round of 6 against ${FANOUT_RUN_DELAY_MS} ms), ≈${c6?.after_last_answer_ms} ms ` +
        "after it (the last record, the gate's report); " +
        `at most ${c6?.max_concurrent_runs} /run in flight at once; SUBMIT_CONCURRENCY=1: ${c1?.batch_ms} ms ` +
        `(${c1?.batch_size} messages, floor ${FANOUT_JOBS * FANOUT_RUN_DELAY_MS} ms, at most ${c1?.max_concurrent_runs} in flight); speed-up ` +
        `${((c1?.batch_ms ?? Number.NaN) / c6Ms).toFixed(2)}× (ceiling ${(FANOUT_JOBS / rounds).toFixed(2)}×). ` +
        `Measured with a copy of wrangler.toml whose export-jobs consumer has max_batch_size = ${FANOUT_JOBS} ` +
        `(max_batch_timeout 3 s), /run answering after ${FANOUT_RUN_DELAY_MS} ms. ${recommendation}.`,
    },
  );
  figure("fanout_batch_c1", `2. one batch of ${FANOUT_JOBS}, SUBMIT_CONCURRENCY=1`, {
    value: c1?.batch_ms ?? null,
    unit: "ms",
    target: `(floor ${FANOUT_JOBS * FANOUT_RUN_DELAY_MS} ms)`,
    pass: null,
    note: `first /run to last answer ${c1?.run_span_ms} ms`,
  });
  figure("fanout_max_concurrent", "2. most /run in flight at once, SUBMIT_CONCURRENCY=6", {
    value: c6?.max_concurrent_runs ?? null,
    unit: "",
    target: `≤ ${DEPLOYED_SUBMIT_CONCURRENCY}`,
    pass: (c6?.max_concurrent_runs ?? 0) <= DEPLOYED_SUBMIT_CONCURRENCY,
    note:
      "from the emulator's receivedAt: runs received less than runDelayMs apart were in flight together " +
      "(a Worker invocation holds at most 6 connections waiting for headers)",
  });

  // 3. Producer overhead.
  const ov = m.overhead;
  const real = ov.producer;
  const bare = ov.bare;
  const ratio = (real?.per_s ?? Number.NaN) / (bare?.per_s ?? Number.NaN);
  const variants = OVERHEAD_VARIANTS.map((v) => {
    const o = ov[v.key];
    return `${v.label} ${o?.per_s.toFixed(0)}/s (p50 ${o?.p50_ms} ms, p99 ${o?.p99_ms} ms)`;
  }).join("; ");
  figure("producer_throughput_ratio", "3. POST /exports throughput ÷ bare producer", {
    value: ratio,
    unit: "×",
    target: "≥ 0.8",
    pass: ratio >= 0.8,
    note:
      `${CLIENTS} clients, ${OVERHEAD_ROUNDS} rounds of ${OVERHEAD_ROUND_MS / 1000} s per variant, interleaved: ${variants}. ` +
      "The bare producer (bench/worker/, bare.toml) runs as a third Worker on the stack's state: " +
      "the producer's own insert into the same D1 file and one send to the same queue, whose " +
      "consumer (its one slot taken) only offers the jobs to the dispatcher, for both",
  });
  figure("producer_latency", "3. POST /exports p50 / p99 (32 clients)", {
    value: `${real?.p50_ms} / ${real?.p99_ms} ms`,
    unit: "",
    target: `(bare ${bare?.p50_ms} / ${bare?.p99_ms} ms)`,
    pass: null,
    note: `answers: producer ${JSON.stringify(real?.answers)}, bare ${JSON.stringify(bare?.answers)}`,
  });

  // 4. Dispatch latency.
  const l = m.lat;
  figure("dispatch_latency", "4. POST answered → RunPod /run received, p50 / p99", {
    value: `${median(l.latencies)} / ${quantile(l.latencies, 0.99)} ms`,
    unit: "",
    target: "(max_batch_timeout 1000 ms)",
    pass: null,
    note:
      `${l.jobs} jobs POSTed ${LATENCY_SPACING_MS} ms apart by one client; a lone message waits for the ` +
      `queue's max_batch_timeout; POST answered → complete (400 ms run) p50 ${median(l.toComplete)} ms`,
  });

  // 5. D1 rows.
  for (const life of m.lives) {
    const key = life.name.includes("failure") ? "d1_rows_fail_once" : "d1_rows_happy";
    figure(`${key}_written`, `5. D1 rows written, ${life.name}`, {
      value: life.rows_written,
      unit: "rows",
      target: `≤ 1.25 × ${life.min_written} (${(life.min_written * 1.25).toFixed(0)})`,
      pass: life.rows_written <= life.min_written * 1.25,
      note: `${(life.rows_written / life.min_written).toFixed(2)}× the schema's minimum; per step: ${life.steps
        .map((s) => `${s.step} ${s.rows_written} (min ${s.min_written})`)
        .join("; ")}`,
    });
    figure(`${key}_read`, `5. D1 rows read, ${life.name}`, {
      value: life.rows_read,
      unit: "rows",
      target: `(${life.min_read} looked at; info)`,
      pass: null,
      note:
        `${(life.rows_read / life.min_read).toFixed(2)}× the rows the statements must look at (the job's row, ` +
        "the job_counts rows the triggers move): D1 also counts json_each's elements, uniqueness probes of " +
        "ON CONFLICT / INSERT OR IGNORE and the triggers' lookups; not held to the target, since reads cost " +
        `$${((life.rows_read * 0.001) / 1).toFixed(3)} per million jobs; per step: ` +
        life.steps.map((s) => `${s.step} ${s.rows_read} (min ${s.min_read})`).join("; "),
    });
  }
  results.d1_rows_detail = m.lives;

  // 6. Plans at 1M rows.
  const all = m.plans.plans;
  const plans = all.filter((pl) => !pl.statement.includes("["));
  const rare = all.filter((pl) => pl.statement.includes("["));
  const scanning = all.filter((pl) => pl.scans.length > 0);
  const failed = all.filter((pl) => pl.error);
  const medians = plans.filter((pl) => !pl.error).map((pl) => pl.median_ms);
  const slowest = [...plans].sort((a, b) => (b.median_ms || 0) - (a.median_ms || 0)).slice(0, 3);
  figure("plans_no_scan", `6. statements scanning a big table at ${SEED_JOBS / 1e6}M jobs`, {
    value: scanning.length,
    unit: `of ${all.length}`,
    target: "0",
    pass: scanning.length === 0 && failed.length === 0,
    note:
      (scanning.map((pl) => `${pl.statement}: ${pl.plan.join(" | ")}`).join("; ") || "none") +
      (failed.length
        ? `; failed: ${failed.map((pl) => `${pl.statement} (${pl.error})`).join("; ")}`
        : "") +
      (m.plans.missingBinds.length
        ? `; parameters guessed for ${m.plans.missingBinds.join(", ")}`
        : ""),
  });
  figure("plans_median_ms", "6. median time per statement at 1M (worst)", {
    value: Math.max(...medians),
    unit: "ms",
    target: "< 5 ms each",
    pass: medians.every((ms) => ms < 5),
    note:
      `${plans.length} statements of shared/sql/ with sample parameters after the query-plans test; ` +
      `median of the statements' medians ${median(medians)} ms; slowest ${slowest
        .map((pl) => `${pl.statement} ${pl.median_ms} ms (${pl.rows_read} rows read)`)
        .join(
          ", ",
        )}; each run ${plans[0]?.runs ?? 0} times through the bench Worker's D1 binding ` +
      "(ms resolution: workerd's clock moves on I/O only); statements that change many rows per run: " +
      (plans
        .filter((pl) => pl.rows_written > 50)
        .map((pl) => `${pl.statement} ${pl.rows_written} rows written, ${pl.median_ms} ms`)
        .join(", ") || "none"),
  });
  for (const pl of rare) {
    figure(`plans_${pl.statement.replace(/\W+/g, "_")}`, `6. ${pl.statement} at 1M (rare status)`, {
      value: pl.median_ms,
      unit: "ms",
      target: "< 5 ms",
      pass: pl.median_ms < 5,
      note:
        `${pl.rows_read} rows read for a page of a status only 20 of the 1M jobs have (a filter that ` +
        `walks an index newest first until its page is full would read them all); plan ${pl.plan.join(" | ")}`,
    });
  }
  const statsNames = ["counts", "oldestPending", "processingWithoutRun", "deadLetters", "archived"]
    .filter((name) => name in STATS_SQL)
    .map((name) => `stats.${name}`);
  const statsRows = plans
    .filter((pl) => statsNames.includes(pl.statement))
    .reduce((n, pl) => n + pl.rows_read, 0);
  figure("plans_stats_rows_read", "6. GET /stats rows read at 1M jobs", {
    value: statsRows,
    unit: "rows",
    target: "bounded (not ∝ jobs)",
    pass: statsRows < 5000,
    note: `${statsNames.map((n) => `${n} ${plans.find((pl) => pl.statement === n)?.rows_read}`).join(", ")}: the 4 counters, the oldest pending by index, the processing jobs (20 seeded) and the dead letters (500 seeded; the inbox is counted in full)`,
  });
  const heavy = all.filter((pl) => pl.rows_read > 1000);
  figure("plans_rows_read_over_1000", "6. statements reading > 1,000 rows at 1M", {
    value: heavy.length,
    unit: "",
    target: "(info)",
    pass: null,
    note:
      heavy.map((pl) => `${pl.statement} ${pl.rows_read} rows, ${pl.median_ms} ms`).join("; ") ||
      "none",
  });
  results.plans_detail = all;
  results.seeding = {
    jobs: SEED_JOBS,
    seconds: round(m.seeded.seconds, 1),
    rows_written: m.seeded.rows_written,
  };

  // 7. Live latency.
  const lv = m.live;
  figure(
    "live_latency_p99",
    `7. live message after the transition's answer, p50 / p99 (${lv.clients} sockets)`,
    {
      value: quantile(lv.fromAnswer, 0.99),
      unit: "ms",
      target: "p99 < 100 ms",
      pass: quantile(lv.fromAnswer, 0.99) < 100 && lv.missing === 0,
      note:
        `p50 ${median(lv.fromAnswer)} ms after the 204 (negative: the message came before the answer); ` +
        `from the request sent p50 ${median(lv.fromSend)} ms, p99 ${quantile(lv.fromSend, 0.99)} ms; ` +
        `${lv.transitions} progress reports through the signed progress URL (answers ${JSON.stringify(lv.answers)}), ` +
        `${lv.clients} operators' sockets, ${lv.missing} messages missing`,
    },
  );

  // 8. Cost per million exports.
  const prices = readPrices();
  const batch = Math.max(1, l.messagesPerJob / Math.max(1e-9, l.batchesPerJob));
  const progress = l.progressPerJob;
  const happy = m.lives[0] as LifeRows;
  // D1: the happy path measured with 3 progress reports; others cost 3 rows each (measured).
  const progressRow = happy.steps.find((st) => st.step.startsWith("progress"));
  const rowsWritten = happy.rows_written + (progress - 3) * (progressRow?.rows_written ?? 3);
  const rowsRead = happy.rows_read + (progress - 3) * (progressRow?.rows_read ?? 2);
  const doRequests = 2 + 2 / batch + 2 + 2 + 2 * progress + 2 + 1;
  const inputs: CostInputs = {
    workerRequests: 1 + l.webhooksPerJob + progress + l.batchesPerJob,
    workerRequestsDetail: `POST 1 + webhook ${l.webhooksPerJob.toFixed(2)} + progress ${progress.toFixed(2)} + consumer invocations ${l.batchesPerJob.toFixed(2)} per job (measured, dispatch-latency phase)`,
    cpuMsPerRequest: 3,
    queueMessages: l.messagesPerJob,
    d1RowsRead: rowsRead,
    d1RowsWritten: rowsWritten,
    doRequests,
    doRequestsDetail: `${doRequests.toFixed(2)} per job, counted from the code with the measured progress reports: live publication 2 per change (created, claimed, submitted, ${progress.toFixed(0)} progress, completed), dispatcher dispatch + report per batch of ${batch.toFixed(1)}, free 1`,
    doActiveSPerRequest: 0.01,
    doSqliteRowsWritten: 15,
    r2ClassA: 1,
    r2ClassB: 4,
    outputGbMonth: 0.05,
    gpuSeconds: 60,
  };
  const cost = costPerMillion(prices, inputs);
  results.cost_per_million_exports = { prices_as_of: prices.as_of, inputs, ...cost };
  figure("cost_pipeline_per_million", "8. pipeline cost per million exports", {
    value: cost.summary.pipeline_usd_per_million,
    unit: "USD",
    target: "(info)",
    pass: null,
    note:
      `${cost.lines.map((c) => `${c.item} $${c.usd_per_million_exports}`).join(", ")}; ` +
      `R2 storage $${cost.summary.r2_storage_usd_per_million_per_month}/month (${cost.summary.storage_basis}); ` +
      `prices of ${prices.as_of} (bench/prices.json)`,
  });
  figure("cost_gpu_per_million", "8. RunPod GPU per million exports", {
    value: cost.summary.gpu_usd_per_million,
    unit: "USD",
    target: "(info)",
    pass: null,
    note: `${cost.summary.gpu_basis}; the pipeline is ${(cost.summary.pipeline_share_of_pipeline_plus_gpu * 100).toFixed(2)} % of pipeline + GPU`,
  });

  // Print.
  const header: [string, string, string, string] = ["figure", "value", "target", "result"];
  const widths = [0, 1, 2, 3].map((i) =>
    Math.min(i === 0 ? 64 : 44, Math.max(...[header, ...table].map((row) => row[i]?.length ?? 0))),
  );
  const line = (row: string[]) =>
    row
      .map((cell, i) => cell.padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd();
  console.log(`\n${line(header)}\n${widths.map((w) => "-".repeat(w)).join("  ")}`);
  for (const row of table) console.log(line(row));
  console.log(
    `\nmachine: ${mach.nproc} × ${mach.cpu_model}, ${mach.memory_gb} GB, ${mach.platform}, node ${mach.node}; ` +
      `load average ${mach.load_avg_1m_at_start} at start, by phase ${JSON.stringify(loads)}; ${elapsed()} in all`,
  );
  results.phases = {
    dispatch_latency: { ...m.lat, latencies: m.lat.latencies, toComplete: m.lat.toComplete },
    gate_on: m.paced,
    gate_off: m.open,
    fanout: m.fan,
    live: {
      ...m.live,
      fromAnswer: undefined,
      fromSend: undefined,
      from_answer_ms: { p50: median(m.live.fromAnswer), p99: quantile(m.live.fromAnswer, 0.99) },
      from_send_ms: { p50: median(m.live.fromSend), p99: quantile(m.live.fromSend, 0.99) },
    },
    producer_overhead: m.overhead,
  };
  results.machine = { ...mach, load_avg_1m_by_phase: loads };
  results.generated_at = new Date().toISOString();
  results.duration_s = Math.round((Date.now() - started) / 1000);
  writeResults(RESULTS_FILE, results);
  writeFileSync(LOG_FILE, `${logs.join("\n")}\n`);
  console.log(`written to ${path.relative(process.cwd(), RESULTS_FILE)}`);
}

try {
  await main();
} catch (error) {
  process.exitCode = 1;
  if (!interrupted) {
    console.error(`\nbench failed: ${error instanceof Error ? error.stack : String(error)}`);
    console.error(`--- last 60 lines of output ---\n${logs.slice(-60).join("\n")}`);
    writeFileSync(LOG_FILE, `${logs.join("\n")}\n`);
  }
} finally {
  if (!interrupted) {
    await stopAll();
    rmSync(tmp, { recursive: true, force: true });
  }
}
