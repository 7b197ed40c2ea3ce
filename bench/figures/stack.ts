// What the pipeline bench's figures share: the settings, the ports and endpoints, the bookkeeping
// of the processes the bench starts and of their output (the consumers' `QUEUE` lines), HTTP
// against the stack (POST /exports, GET /exports, the emulator's admin API), and the consumers
// the bench swaps in between phases.
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { devServerFlags, type LocalStack } from "../../scripts/local-stack.ts";
import type { Seeder } from "../d1-figures.ts";
import {
  type Guarded,
  guarded,
  jsonInit,
  readJson,
  round,
  sleep,
  stripAnsi,
  waitUntilUp,
  wranglerEnv,
  wranglerJs,
} from "../support.ts";

// ---- settings ----------------------------------------------------------------------------------

export const R = 20; // the emulator's /run limit per second (runRateLimitPerS)
export const CLIENTS = 32;
export const DEPLOYED_SUBMIT_CONCURRENCY = 6;
export const LONG_RUN_MS = 3_600_000; // runs that never finish while we measure

// Below Linux's ephemeral range (32768–60999): no outgoing connection ever holds one of them.
export const PORTS = {
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
export const ALL_PORTS = [
  ...Object.values(PORTS),
  PORTS.emulator + 1,
  PORTS.consumerInspector + 1,
  PORTS.producer + 5, // the frontend example's default port, if this stack version starts one
  ...SWAP_PORTS,
  ...SWAP_INSPECTORS,
];

export const ENDPOINTS = {
  paced: "bench-paced",
  open: "bench-open",
  fanout1: "bench-fanout-c1",
  fanout6: "bench-fanout-c6",
  hold: "bench-hold",
};
const INPUT = "uploads/demo/sample.mp4";

// ---- process bookkeeping ------------------------------------------------------------------------

export const tmp = mkdtempSync(path.join(os.tmpdir(), "reel-bench-"));
/** The Workers the bench started itself (the stack stops its own children). */
export const consumers: Guarded[] = [];
/** The stack's producer, once it is up. */
export const producer = { url: "" };
export const logs: string[] = [];
interface QueueBatch {
  at: number;
  consumer: string;
  acked: number;
  size: number;
  ms: number;
}
/** `QUEUE export-jobs a/b (ms)` lines of the consumers: one per delivered batch. */
export const batches: QueueBatch[] = [];
process.env.WRANGLER_LOG ??= "info"; // the consumers' per-batch QUEUE lines are info

const ROUTINE = [
  /planned (COMPLETED|FAILED|TIMED_OUT)/,
  / (IN_PROGRESS|COMPLETED)$/,
  /webhook attempt 1: 200$/,
  /output written:/,
  /\[wrangler:info\] (GET|POST|PUT|HEAD|DELETE) \S+ \d{3}/,
  /progress \d+: 204/,
];

export function onLine(name: string, raw: string): void {
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

/** When the bench started: its progress lines give the time since. */
export const started = Date.now();
export const elapsed = () => `${((Date.now() - started) / 1000).toFixed(0)} s`;
export const note = (text: string) => process.stdout.write(text);
/** The 1-minute load average as each phase starts: the machine is shared. */
export const loads: Record<string, number> = {};
export const load = (phase: string) => {
  loads[phase] = round(os.loadavg()[0] ?? 0, 2);
};

// ---- HTTP against the stack -----------------------------------------------------------------

export interface Job {
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
export interface RunRecord {
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
export interface Posted {
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
  // Distinct params: identical exports would be reused instead of run (GPU seconds).
  params: { highlight_regions: [{ start_time: 1, end_time: 3 }], n: crypto.randomUUID() },
});

export async function postExport(
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
export async function postMany(
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

export const countBy = (values: (string | number)[]) => {
  const out: Record<string, number> = {};
  for (const v of values) out[String(v)] = (out[String(v)] ?? 0) + 1;
  return out;
};

export async function emulatorConfig(
  s: LocalStack,
  endpoint: string,
  config: Record<string, unknown>,
) {
  await readJson(
    `${s.emulatorUrl}/__emulator/endpoints/${endpoint}/config`,
    jsonInit("PUT", config),
  );
}
export async function runAnswers(s: LocalStack, endpoint: string): Promise<Record<string, number>> {
  const url = `${s.emulatorUrl}/__emulator/endpoints/${endpoint}/stats`;
  return (await readJson<{ run_answers: Record<string, number> }>(url)).run_answers;
}
export async function runRequests(s: LocalStack, endpoint: string): Promise<RunRecord[]> {
  const url = `${s.emulatorUrl}/__emulator/requests?endpoint=${endpoint}`;
  const { requests } = await readJson<{ requests: RunRecord[] }>(url);
  return requests.filter((r) => r.method === "POST" && r.path.endsWith("/run"));
}
export async function emulatorJobs(s: LocalStack, endpoint: string): Promise<EmulatorJob[]> {
  const url = `${s.emulatorUrl}/__emulator/jobs?endpoint=${endpoint}`;
  return (await readJson<{ jobs: EmulatorJob[] }>(url)).jobs;
}
/** Every job of these projects (at most 100), through GET /exports, page by page. */
export async function listJobs(s: LocalStack, projects: number[]): Promise<Job[]> {
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
export async function until(timeoutMs: number, everyMs: number, done: () => Promise<boolean>) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await done()) return true;
    await sleep(everyMs);
  }
  return done();
}

// ---- the stack and its consumers --------------------------------------------------------------

export interface Consumer {
  name: string;
  /** Its own HTTP port: GET /__scheduled runs the reconciler (wrangler dev --test-scheduled). */
  url: string;
  stop(): Promise<void>;
}

/** What the figures of one run share: the stack, its seeding and the consumer now running. */
export interface Run {
  s: LocalStack;
  /** Seeds the 1M jobs of the plans while nothing is timed: held during every timed phase. */
  seeder: Seeder;
  /** The consumer now running; a figure that swaps in another one sets it. */
  consumer: Consumer;
}

const varFlags = (vars: Record<string, string>) =>
  Object.entries(vars).flatMap(([key, value]) => ["--var", `${key}:${value}`]);

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
export async function swapConsumer(
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
export async function warmUp(s: LocalStack, endpoint: string, project: number): Promise<string> {
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
