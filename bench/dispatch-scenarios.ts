// `npm run scenarios`: the dispatch gate against a RunPod that pushes back, on one local stack
// (both Workers under `wrangler dev`, the RunPod emulator), with timings scaled down so that each
// scenario takes about a minute. One after the other on the stack's one endpoint:
//   1. burst:  200 POST /exports from 16 clients against a RunPod `/run` limit of 5 a second,
//              while the gate's pace is its default (RUNPOD_RUNS_PER_10S=900, above that limit);
//   2. outage: `/run` answers 503 for 30 s, then 100 POST /exports.
// Every job must end `complete`, no POST may answer 5xx; the figures go to the terminal and to
// bench/scenarios.json. Exits non-zero (saying why) otherwise.
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import os from "node:os";
import path from "node:path";
import { type LocalStack, startLocalStack } from "../scripts/local-stack.ts";
import { delta, pause, sleep, stripAnsi, writeResults } from "./support.ts";

const ENDPOINT = "scenarios-endpoint";
const PORTS = [36787, 36788, 36790, 36229, 36230] as const; // producer, consumer, emulator, inspectors
/** Ports the stack may take besides: emulator + 1 and consumer inspector + 1 (the local R2 writer). */
const MORE_PORTS = [36791, 36231] as const;
const SETTINGS: Record<string, string> = {
  RUNPOD_ENDPOINT_ID: ENDPOINT,
  RETRY_BASE_DELAY_S: "2",
  RETRY_MAX_DELAY_S: "8",
  BREAKER_COOLDOWN_S: "2",
  PENDING_GRACE_S: "5",
  CLAIM_TIMEOUT_S: "10",
  POLL_AFTER_S: "5",
};
/** The emulator's endpoint config before each scenario: quick runs, no faults. */
const BASELINE = {
  queueMs: 50,
  runMs: 300,
  runRateLimitPerS: 0,
  outage: false,
  outageUntilMs: 0,
  maxWorkers: 0,
};
const CLIENTS = 16;
const CRON_EVERY_MS = 5_000;
const GATE_POLL_MS = 500;
const JOB_POLL_MS = 1_000;
const DRAIN_TIMEOUT_MS = 5 * 60_000;
const OUTAGE_MS = 30_000;
const RESULTS_FILE = path.resolve(
  path.dirname(new URL(import.meta.url).pathname),
  "scenarios.json",
);

type JobStatus = "pending" | "processing" | "complete" | "error";
type GateMode = "running" | "paused" | "probing";

interface Job {
  id: string;
  project_id: number;
  status: JobStatus;
  error: string | null;
  retry_count: number;
  attempt: number;
  runpod_job_id: string | null;
  created_at: string;
  completed_at: string | null;
}
interface DispatchStatus {
  state: GateMode;
  reason: string | null;
  since: string;
  runs_last_10s: number;
}
interface StatsAnswer {
  jobs: Record<JobStatus, number>;
  dispatch: DispatchStatus | null;
}
interface RunAnswers {
  run_answers: Record<string, number>;
}

interface Scenario {
  name: string;
  jobs: number;
  /** Project ids projectBase + 1 … projectBase + jobs: one per job. */
  projectBase: number;
  /** What the emulator is set to, for the table. */
  describe: string;
  /** The emulator config of the scenario, put right before its first POST. */
  config: () => Record<string, number | boolean>;
}

interface GateTransition {
  /** ms since the scenario's first POST (negative: before it). */
  at_ms: number;
  from: GateMode | "?";
  to: GateMode;
  reason: string | null;
  /** The gate's own `since` of the new state. */
  since: string;
}

interface JobSummary {
  id: string;
  project_id: number;
  status: JobStatus | "missing";
  error: string | null;
  retry_count: number | null;
  attempt: number | null;
  runpod_job_id: string | null;
}

interface RunRecord {
  method: string;
  path: string;
  body: { input?: { export_job_id?: string } } | null;
  responseStatus: number | null;
}

interface ScenarioResult {
  name: string;
  jobs: number;
  emulator: string;
  drain_ms: number | null;
  post_phase_ms: number;
  timed_out: boolean;
  complete: number;
  error: number;
  left: Record<string, number>;
  post_answers: Record<string, number>;
  run_answers: Record<string, number>;
  retries_spent: number;
  jobs_retried: number;
  max_retry_count: number;
  runs_per_job: number;
  gate_states_seen: GateMode[];
  gate_transitions: GateTransition[];
  breaker_transitions: Record<string, number>;
  /**
   * A new `since` with the same state between two polls: a cycle too quick to see, or a pause
   * that ran out (reported as probing) becoming the real probe.
   */
  gate_unseen_cycles: number;
  stats_poll_failures: number;
  scheduled_calls: number;
  scheduled_5xx: number;
  scheduled_failures: number;
  get_retries: number;
  /** The `error` text left by failed attempts of jobs with retry_count > 0 (ids and UUIDs as …). */
  retry_reasons: Record<string, number>;
  /** The most `/run` 200s one job received. */
  max_runs_one_job: number;
  /** Jobs that ended `error` or were not terminal at the deadline (first 20). */
  problem_jobs: JobSummary[];
  /** GET /exports/{id}/events of the first few problem jobs, with their `/run` answers. */
  problem_timelines: { id: string; run_answers: Record<string, number>; events: unknown }[];
}

const logs: string[] = [];
const tmp = mkdtempSync(path.join(os.tmpdir(), "reel-scenarios-"));
let interrupted = false;
let stack: Promise<LocalStack> | null = null; // set as it starts, so SIGINT can stop it
process.env.WRANGLER_LOG ??= "log"; // the Workers' own log lines, for the dump on failure
const portFree = (port: number) =>
  new Promise<boolean>((resolve) => {
    const server = createServer().once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });

/** The emulator's routine lines per job, left out of the dump on failure. */
const ROUTINE = [/planned COMPLETED/, / COMPLETED$/, /webhook attempt 1: 200$/, /output written:/];
/** The Workers' lines for this script's own polling, left out too. */
const POLLING = [/GET \/stats 200/, /GET \/exports\?? ?200/, /GET \/exports 200/];

async function startStack(): Promise<LocalStack> {
  // Our ports are in the ephemeral range: one may sit in TIME_WAIT for up to a minute.
  const all = [...PORTS, ...MORE_PORTS];
  for (let i = 0; !(await Promise.all(all.map(portFree))).every(Boolean); i++) {
    if (i === 0) process.stdout.write(`(waiting for ports ${all.join(", ")}) `);
    if (i >= 90) throw new Error(`ports ${all.join(", ")} are not free`);
    await sleep(1000);
  }
  if (interrupted) throw new Error("interrupted");
  const [producerPort, consumerPort, emulatorPort, inspector1, inspector2] = PORTS;
  stack = startLocalStack({
    producerPort,
    consumerPort,
    emulatorPort,
    inspectorPorts: [inspector1, inspector2],
    persistTo: path.join(tmp, "state"),
    settings: SETTINGS,
    emulatorEnv: {
      RUNPOD_EMULATOR_RUN_MS: String(BASELINE.runMs),
      RUNPOD_EMULATOR_QUEUE_MS: String(BASELINE.queueMs),
    },
    onOutput: (name, raw) => {
      const line = stripAnsi(raw);
      if (name === "emulator" && ROUTINE.some((re) => re.test(line))) return;
      if (name === "producer" && POLLING.some((re) => re.test(line))) return;
      if (name === "r2-writer" && / 200 OK /.test(line)) return;
      logs.push(`${new Date().toISOString().slice(11, 23)} [${name}] ${line}`);
      if (logs.length > 3000) logs.shift();
    },
  });
  return stack;
}

async function stopStack(): Promise<void> {
  const running = stack;
  stack = null;
  await (await running?.catch(() => null))?.stop(); // a failed start has stopped itself
}

/** A GET (or an idempotent PUT) whose 5xx and network errors are tried again, counted in `retries`. */
async function readJson(url: string, init: RequestInit = {}, retries = { n: 0 }): Promise<unknown> {
  for (let i = 0; ; i++) {
    let res: Response | null = null;
    let failure = "";
    try {
      res = await fetch(url, { ...init, signal: AbortSignal.timeout(30_000) });
      if (res.ok) return res.json();
      failure = `${res.status} ${await res.text()}`;
    } catch (error) {
      failure = error instanceof Error ? error.message : String(error);
    }
    if ((res !== null && res.status < 500) || i >= 20) {
      throw new Error(`${init.method ?? "GET"} ${url}: ${failure}`);
    }
    retries.n++;
    await sleep(200);
  }
}

const authed = (token: string | undefined): Record<string, string> => ({
  authorization: `Bearer ${token ?? ""}`,
});

async function putConfig(s: LocalStack, config: Record<string, number | boolean>): Promise<void> {
  await readJson(`${s.emulatorUrl}/__emulator/endpoints/${ENDPOINT}/config`, {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(config),
  });
}

async function runAnswers(s: LocalStack): Promise<Record<string, number>> {
  const url = `${s.emulatorUrl}/__emulator/endpoints/${ENDPOINT}/stats`;
  return ((await readJson(url)) as RunAnswers).run_answers;
}

const bump = (counts: Record<string, number>, key: string, by = 1) => {
  counts[key] = (counts[key] ?? 0) + by;
};

/**
 * One POST /exports; a 5xx or a network error is counted and sent again with the same
 * Idempotency-Key (safe: the repeat answers the job the first one created, if it did).
 */
async function postJob(
  s: LocalStack,
  scenario: string,
  projectId: number,
  answers: Record<string, number>,
): Promise<string | null> {
  const body = JSON.stringify({
    project_id: projectId,
    type: "overlay",
    input_video_key: "uploads/demo/sample.mp4",
    // Distinct params: identical exports would be reused instead of run (GPU seconds).
    params: { highlight_regions: [{ start_time: 1, end_time: 3 }], n: crypto.randomUUID() },
  });
  for (let i = 0; i < 5; i++) {
    try {
      const res = await fetch(`${s.producerUrl}/exports`, {
        method: "POST",
        headers: {
          ...authed(s.settings.API_TOKEN),
          "content-type": "application/json",
          "idempotency-key": `${scenario}-${projectId}`,
        },
        body,
        signal: AbortSignal.timeout(30_000),
      });
      bump(answers, String(res.status));
      if (res.status === 200 || res.status === 202) {
        return ((await res.json()) as { job: Job }).job.id;
      }
      const text = await res.text();
      logs.push(`[scenarios] POST /exports (project ${projectId}): ${res.status} ${text}`);
      if (res.status < 500) return null;
    } catch (error) {
      bump(answers, "network error");
      logs.push(`[scenarios] POST /exports (project ${projectId}): ${String(error)}`);
    }
    await sleep(200);
  }
  return null;
}

/** Every job of the scenario's projects (one job per project), 100 projects a request. */
async function listJobs(s: LocalStack, ids: number[], retries: { n: number }): Promise<Job[]> {
  const jobs: Job[] = [];
  for (let i = 0; i < ids.length; i += 100) {
    const query = ids
      .slice(i, i + 100)
      .map((id) => `project_id=${id}`)
      .join("&");
    const url = `${s.producerUrl}/exports?${query}&limit=100`;
    const page = (await readJson(url, { headers: authed(s.settings.API_TOKEN) }, retries)) as {
      jobs: Job[];
    };
    jobs.push(...page.jobs);
  }
  return jobs;
}

/** The reconciler, as the cron would run it: every CRON_EVERY_MS, never two at once. */
async function cronLoop(s: LocalStack, signal: AbortSignal, result: ScenarioResult) {
  while (!signal.aborted) {
    const started = Date.now();
    result.scheduled_calls++;
    try {
      const res = await fetch(`${s.consumerUrl}/__scheduled`, {
        signal: AbortSignal.timeout(60_000),
      });
      const text = await res.text();
      if (res.status >= 500) {
        result.scheduled_5xx++;
        logs.push(`[scenarios] GET /__scheduled: ${res.status} ${text.slice(0, 300)}`);
      }
    } catch (error) {
      result.scheduled_failures++;
      logs.push(`[scenarios] GET /__scheduled failed: ${String(error)}`);
    }
    await pause(Math.max(0, CRON_EVERY_MS - (Date.now() - started)), signal);
  }
}

/** Polls the gate through GET /stats and records every change of `dispatch.state`. */
async function gateLoop(
  s: LocalStack,
  signal: AbortSignal,
  result: ScenarioResult,
  t0: () => number,
) {
  let last: DispatchStatus | null = null;
  while (!signal.aborted) {
    const started = Date.now();
    try {
      const res = await fetch(`${s.producerUrl}/stats`, {
        headers: authed(s.settings.ADMIN_TOKEN),
        signal: AbortSignal.timeout(10_000),
      });
      const gate = res.ok ? ((await res.json()) as StatsAnswer).dispatch : null;
      if (!res.ok) await res.text();
      if (gate === null) {
        result.stats_poll_failures++;
      } else {
        if (!result.gate_states_seen.includes(gate.state)) result.gate_states_seen.push(gate.state);
        if (last === null || gate.state !== last.state) {
          result.gate_transitions.push({
            at_ms: started - t0(),
            from: last?.state ?? "?",
            to: gate.state,
            reason: gate.reason,
            since: gate.since,
          });
          if (last !== null) bump(result.breaker_transitions, `${last.state}→${gate.state}`);
        } else if (gate.since !== last.since) {
          // Same state, new `since`: left and came back between two polls (e.g. a probe that
          // failed at once), or a pause that ran out (shown as probing) became the real probe.
          result.gate_unseen_cycles++;
          result.gate_transitions.push({
            at_ms: started - t0(),
            from: last.state,
            to: gate.state,
            reason: gate.reason,
            since: gate.since,
          });
        }
        last = gate;
      }
    } catch {
      result.stats_poll_failures++;
    }
    await pause(Math.max(0, GATE_POLL_MS - (Date.now() - started)), signal);
  }
}

/** A failure's text without what differs per job (keys, UUIDs), to count failures by kind. */
const reasonOf = (error: string | null) =>
  (error ?? "(no error text)")
    .replace(/exports\/\d+\/[^\s"]+/g, "exports/…")
    .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(-u1)?/g, "…")
    .slice(0, 120);
const sqlMs = (text: string) => Date.parse(`${text.replace(" ", "T")}Z`);
const summary = (job: Job): JobSummary => ({
  id: job.id,
  project_id: job.project_id,
  status: job.status,
  error: job.error,
  retry_count: job.retry_count,
  attempt: job.attempt,
  runpod_job_id: job.runpod_job_id,
});

async function runScenario(s: LocalStack, scenario: Scenario): Promise<ScenarioResult> {
  const result: ScenarioResult = {
    name: scenario.name,
    jobs: scenario.jobs,
    emulator: scenario.describe,
    drain_ms: null,
    post_phase_ms: 0,
    timed_out: false,
    complete: 0,
    error: 0,
    left: {},
    post_answers: {},
    run_answers: {},
    retries_spent: 0,
    jobs_retried: 0,
    max_retry_count: 0,
    runs_per_job: 0,
    gate_states_seen: [],
    gate_transitions: [],
    breaker_transitions: {},
    gate_unseen_cycles: 0,
    stats_poll_failures: 0,
    scheduled_calls: 0,
    scheduled_5xx: 0,
    scheduled_failures: 0,
    get_retries: 0,
    retry_reasons: {},
    max_runs_one_job: 0,
    problem_jobs: [],
    problem_timelines: [],
  };
  const projects = Array.from({ length: scenario.jobs }, (_, i) => scenario.projectBase + i + 1);
  await putConfig(s, BASELINE);
  const before = await runAnswers(s);
  let t0 = Date.now();
  const stopLoops = new AbortController();
  const loops = [
    cronLoop(s, stopLoops.signal, result),
    gateLoop(s, stopLoops.signal, result, () => t0),
  ];
  const retries = { n: 0 };
  let jobs: Job[] = [];
  const seenTerminal = new Map<string, number>(); // job id → when a poll first saw it terminal
  try {
    await putConfig(s, scenario.config());
    t0 = Date.now();
    let next = 0;
    const client = async () => {
      while (next < projects.length) {
        const projectId = projects[next++] as number;
        await postJob(s, scenario.name, projectId, result.post_answers);
      }
    };
    await Promise.all(Array.from({ length: CLIENTS }, client));
    result.post_phase_ms = Date.now() - t0;
    process.stdout.write(`posted in ${(result.post_phase_ms / 1000).toFixed(1)} s, draining… `);

    const deadline = t0 + DRAIN_TIMEOUT_MS;
    for (;;) {
      jobs = await listJobs(s, projects, retries);
      const now = Date.now();
      for (const job of jobs) {
        if ((job.status === "complete" || job.status === "error") && !seenTerminal.has(job.id)) {
          seenTerminal.set(job.id, now);
        }
      }
      if (jobs.length >= scenario.jobs && seenTerminal.size >= jobs.length) break;
      if (now > deadline) {
        result.timed_out = true;
        break;
      }
      await sleep(JOB_POLL_MS);
    }
  } finally {
    stopLoops.abort();
    await Promise.all(loops);
  }
  result.get_retries = retries.n;
  result.run_answers = delta(before, await runAnswers(s));
  const runsByJob = await runsPerJobOf(s, new Set(jobs.map((job) => job.id)));
  for (const answers of runsByJob.values()) {
    result.max_runs_one_job = Math.max(result.max_runs_one_job, answers["200"] ?? 0);
  }
  await putConfig(s, BASELINE);

  // Last terminal: a complete job's own completed_at; an error's first sighting (no timestamp).
  let last = 0;
  for (const job of jobs) {
    const seen = seenTerminal.get(job.id);
    if (job.status === "complete" && job.completed_at)
      last = Math.max(last, sqlMs(job.completed_at));
    else if (seen !== undefined) last = Math.max(last, seen);
  }
  result.drain_ms = result.timed_out || last === 0 ? null : last - t0;
  const byProject = new Set(jobs.map((job) => job.project_id));
  for (const job of jobs) {
    if (job.status === "complete") result.complete++;
    else if (job.status === "error") result.error++;
    else bump(result.left, job.status);
    result.retries_spent += job.retry_count;
    if (job.retry_count > 0) {
      result.jobs_retried++;
      bump(result.retry_reasons, reasonOf(job.error));
    }
    result.max_retry_count = Math.max(result.max_retry_count, job.retry_count);
  }
  const missing = projects.filter((id) => !byProject.has(id));
  if (missing.length > 0) result.left.missing = missing.length;
  result.runs_per_job = (result.run_answers["200"] ?? 0) / scenario.jobs;
  const problems = jobs.filter((job) => job.status !== "complete");
  result.problem_jobs = [
    ...problems.map(summary),
    ...missing.map(
      (id): JobSummary => ({
        id: "(no job)",
        project_id: id,
        status: "missing",
        error: null,
        retry_count: null,
        attempt: null,
        runpod_job_id: null,
      }),
    ),
  ].slice(0, 20);
  for (const job of problems.slice(0, 3)) {
    result.problem_timelines.push({
      id: job.id,
      run_answers: runsByJob.get(job.id) ?? {},
      events: await eventsOf(s, job.id),
    });
  }
  return result;
}

/** `/run` answers by status per export job, from the emulator's request log. */
async function runsPerJobOf(
  s: LocalStack,
  ids: Set<string>,
): Promise<Map<string, Record<string, number>>> {
  const url = `${s.emulatorUrl}/__emulator/requests?endpoint=${ENDPOINT}`;
  const { requests } = (await readJson(url)) as { requests: RunRecord[] };
  const byJob = new Map<string, Record<string, number>>();
  for (const r of requests) {
    const id = r.body?.input?.export_job_id;
    if (r.method !== "POST" || !r.path.endsWith("/run") || id === undefined || !ids.has(id)) {
      continue;
    }
    const answers = byJob.get(id) ?? {};
    bump(answers, String(r.responseStatus ?? "none"));
    byJob.set(id, answers);
  }
  return byJob;
}

/** A job's timeline (GET /exports/{id}/events), or what answered instead. */
async function eventsOf(s: LocalStack, id: string): Promise<unknown> {
  try {
    const res = await fetch(`${s.producerUrl}/exports/${id}/events`, {
      headers: authed(s.settings.API_TOKEN),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    if (!res.ok) return `${res.status} ${text.slice(0, 200)}`;
    return (JSON.parse(text) as { events?: unknown }).events ?? text;
  } catch (error) {
    return String(error);
  }
}

/** One line per event of a timeline, whatever its shape. */
function eventLines(events: unknown): string[] {
  if (!Array.isArray(events)) return [`    ${String(events)}`];
  return events.map((event: unknown) => {
    if (typeof event !== "object" || event === null) return `    ${JSON.stringify(event)}`;
    const { at, attempt, type, detail } = event as Record<string, unknown>;
    const rest = detail === undefined ? "" : ` ${String(detail)}`;
    return `    ${String(at)}  attempt ${String(attempt)}  ${String(type)}${rest}`;
  });
}

const SCENARIOS: Scenario[] = [
  {
    name: "burst",
    jobs: 200,
    projectBase: 960_000,
    describe: "runRateLimitPerS 5 (gate: RUNPOD_RUNS_PER_10S 900)",
    config: () => ({ runRateLimitPerS: 5 }),
  },
  {
    name: "outage",
    jobs: 100,
    projectBase: 970_000,
    describe: `outage ${OUTAGE_MS / 1000} s (503) from the first POST`,
    config: () => ({ outage: false, outageUntilMs: Date.now() + OUTAGE_MS }),
  },
];

const secs = (ms: number | null) => (ms === null ? "—" : `${(ms / 1000).toFixed(1)} s`);
const counts = (map: Record<string, number>) =>
  Object.keys(map).length === 0
    ? "none"
    : Object.entries(map)
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([k, n]) => `${k}: ${n}`)
        .join(", ");

function printTable(results: ScenarioResult[]): void {
  const rows: [string, ...string[]][] = [
    ["scenario", ...results.map((r) => r.name)],
    ["jobs", ...results.map((r) => String(r.jobs))],
    ["emulator", ...results.map((r) => r.emulator)],
    [
      "drain (first POST → last terminal)",
      ...results.map((r) => (r.timed_out ? "timed out" : secs(r.drain_ms))),
    ],
    ["POST phase (16 clients)", ...results.map((r) => secs(r.post_phase_ms))],
    ["complete / error", ...results.map((r) => `${r.complete} / ${r.error}`)],
    ["not terminal", ...results.map((r) => counts(r.left))],
    ["POST /exports answers", ...results.map((r) => counts(r.post_answers))],
    ["RunPod /run answers", ...results.map((r) => counts(r.run_answers))],
    [
      "retries spent (Σ retry_count)",
      ...results.map(
        (r) => `${r.retries_spent} (${r.jobs_retried} jobs, max ${r.max_retry_count})`,
      ),
    ],
    ["last error of retried jobs", ...results.map((r) => counts(r.retry_reasons))],
    [
      "runs per job (/run 200s ÷ jobs)",
      ...results.map((r) => `${r.runs_per_job.toFixed(2)} (max ${r.max_runs_one_job} for one job)`),
    ],
    ["gate states seen", ...results.map((r) => r.gate_states_seen.join(", ") || "none")],
    ["gate transitions", ...results.map((r) => counts(r.breaker_transitions))],
    ["gate: same state, new since", ...results.map((r) => String(r.gate_unseen_cycles))],
    [
      "/__scheduled calls / 5xx / failed",
      ...results.map((r) => `${r.scheduled_calls} / ${r.scheduled_5xx} / ${r.scheduled_failures}`),
    ],
    ["GET retried after 5xx", ...results.map((r) => String(r.get_retries))],
    ["/stats polls failed", ...results.map((r) => String(r.stats_poll_failures))],
  ];
  const columns = results.length + 1;
  const widths = Array.from({ length: columns }, (_, col) =>
    Math.max(...rows.map((row) => (row[col] ?? "").length)),
  );
  const line = (row: string[]) =>
    row
      .map((cell, col) => cell.padEnd(widths[col] ?? 0))
      .join("  ")
      .trimEnd();
  console.log();
  rows.forEach((row, i) => {
    console.log(line(row));
    if (i === 0) console.log(widths.map((w) => "-".repeat(w)).join("  "));
  });
  for (const r of results) {
    console.log(`\n${r.name}: gate transitions (ms after the first POST)`);
    if (r.gate_transitions.length === 0) console.log("  none seen");
    for (const t of r.gate_transitions) {
      const reason = t.reason ? ` (${t.reason})` : "";
      const how = t.from === t.to ? " (same state, new since)" : "";
      console.log(`  ${String(t.at_ms).padStart(7)}  ${t.from} → ${t.to}${how}${reason}`);
    }
  }
}

function failuresOf(r: ScenarioResult): string[] {
  const out: string[] = [];
  if (r.error > 0) out.push(`${r.name}: ${r.error} job(s) ended error`);
  const fivexx = Object.entries(r.post_answers).filter(([status]) => Number(status) >= 500);
  for (const [status, n] of fivexx) out.push(`${r.name}: POST /exports answered ${status} ×${n}`);
  if (r.post_answers["network error"]) {
    out.push(
      `${r.name}: POST /exports failed with a network error ×${r.post_answers["network error"]}`,
    );
  }
  if (r.timed_out) {
    out.push(`${r.name}: not drained after ${DRAIN_TIMEOUT_MS / 1000} s (left: ${counts(r.left)})`);
  }
  for (const job of r.problem_jobs) {
    out.push(
      `  job ${job.id} project ${job.project_id} ${job.status} retry_count=${job.retry_count} ` +
        `attempt=${job.attempt} runpod_job_id=${job.runpod_job_id} error=${JSON.stringify(job.error)}`,
    );
  }
  for (const t of r.problem_timelines) {
    out.push(`  timeline of ${t.id} (/run answers: ${counts(t.run_answers)}):`);
    out.push(...eventLines(t.events));
  }
  return out;
}

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
  console.log(`dispatch scenarios on ${ENDPOINT}; state in ${tmp}`);
  process.stdout.write("starting the stack… ");
  const s = await startStack();
  console.log("up");
  const results: ScenarioResult[] = [];
  for (const scenario of SCENARIOS) {
    process.stdout.write(`${scenario.name}: ${scenario.jobs} jobs, ${scenario.describe}: `);
    const result = await runScenario(s, scenario);
    results.push(result);
    console.log(result.timed_out ? "timed out" : `drained in ${secs(result.drain_ms)}`);
  }
  printTable(results);
  const failures = results.flatMap(failuresOf);
  writeResults(RESULTS_FILE, {
    generated_at: new Date().toISOString(),
    machine: `${os.cpus().length} CPUs, ${os.platform()} ${os.arch()}, node ${process.version}`,
    settings: SETTINGS,
    emulator_baseline: BASELINE,
    clients: CLIENTS,
    scenarios: results,
    failures,
  });
  console.log(`\nwritten to ${path.relative(process.cwd(), RESULTS_FILE)}`);
  if (failures.length > 0) {
    process.exitCode = 1;
    console.error(`\nFAILED:\n${failures.join("\n")}`);
    console.error(`--- last 60 lines of the stack's output ---\n${logs.slice(-60).join("\n")}`);
  }
} catch (error) {
  process.exitCode = 1;
  if (!interrupted) {
    // (after SIGINT, the handler is stopping the stack and will exit)
    console.error(`\nscenarios failed: ${error instanceof Error ? error.message : String(error)}`);
    console.error(`--- last 60 lines of the stack's output ---\n${logs.slice(-60).join("\n")}`);
  }
} finally {
  await stopStack();
  rmSync(tmp, { recursive: true, force: true });
}
