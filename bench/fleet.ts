// `npm run fleet`: figures of the fleet-following dispatcher (RUNPOD_MAX_IN_FLIGHT=auto) on the
// local stack, each configuration side by side with another in the same run (a fresh stack and
// state directory per configuration), then the dispatcher's cost per admission on a bench Worker:
//
//   1. an autoscaling fleet (32 workers at most, none at rest, QUEUE_DELAY 1 s, 2 s cold starts,
//      3 s runs), 320 jobs of 4 users at once, then one job of a 5th user once the fleet is grown:
//      `auto` against every job submitted at once (RUNPOD_MAX_IN_FLIGHT=100000): drain time,
//      RunPod's queue once the fleet is at 32, the late user's wait, peak and billed workers;
//   2. a fixed fleet (3 always-ready workers, 1 s runs), 150 jobs of 2 users at once: `auto`
//      against a fixed cap of 4: GPU idle while jobs wait, drain time;
//   3. on those runs, the refill latency: a run's webhook to the next /run at RunPod;
//   4. on the `auto` fixed fleet, once run lengths are learned: the ETA a pending job shows
//      (GET /exports/{id}'s `queue.eta_s`) against when it started;
//   5. the fair queue's rows and time per admission at 100 and at 100,000 waiting.
// Prints a table (value, target, PASS / FAIL / info) and writes bench/fleet.json; the stack's
// warnings and errors go to bench/fleet-last-run.log. About 10 minutes on a 2-CPU machine.
import { writeFileSync } from "node:fs";
import path from "node:path";
import { measureAdmissionCost } from "./admission-cost.ts";
import { figure, printTable, results } from "./figures/results.ts";
import {
  compactSamples,
  type EmulatorRequest,
  type EmulatorRun,
  Fleet,
  type FleetReport,
  type FleetSample,
  ms,
  type Posted,
  say,
  timeWeighted,
  webhookAt,
} from "./fleet-stack.ts";
import {
  machine,
  median,
  quantile,
  readJson,
  root,
  round,
  sleep,
  writeResults,
} from "./support.ts";

const POST_CONCURRENCY = 16;
/** Settings of every configuration: the reconciler's leases short enough for a bench. */
const COMMON: Record<string, string> = { POLL_AFTER_S: "60", PENDING_GRACE_S: "60" };

// ---- 1. the autoscaling fleet ----
const AUTO_RUN_MS = 3000;
const AUTO_WORKERS = 32;
const AUTO_JOBS = 320;
const AUTO_USERS = 4;
const AUTOSCALING_EMULATOR: Record<string, string> = {
  RUNPOD_EMULATOR_WORKERS_MAX: String(AUTO_WORKERS),
  RUNPOD_EMULATOR_WORKERS_MIN: "0",
  RUNPOD_EMULATOR_SCALER_TYPE: "QUEUE_DELAY",
  RUNPOD_EMULATOR_SCALER_VALUE: "1",
  RUNPOD_EMULATOR_SCALER_INTERVAL_MS: "500",
  RUNPOD_EMULATOR_COLD_START_MS: "2000",
  RUNPOD_EMULATOR_IDLE_TIMEOUT_MS: "5000",
  RUNPOD_EMULATOR_RUN_MS: String(AUTO_RUN_MS),
  // A run starts as soon as a worker is free: with a pickup time, every burst of refills (runs
  // that ended together) would read as a queue at RunPod for that long.
  RUNPOD_EMULATOR_QUEUE_MS: "0",
  RUNPOD_EMULATOR_PROGRESS_STEPS: "50",
};
const AUTOSCALING_CONFIGS = {
  auto: { RUNPOD_MAX_IN_FLIGHT: "auto", RUNPOD_MAX_WORKERS: "32", FLEET_POLL_S: "1" },
  uncapped: { RUNPOD_MAX_IN_FLIGHT: "100000", RUNPOD_MAX_WORKERS: "32", FLEET_POLL_S: "1" },
};
/** The late job is posted once this many workers are warm, or this long after the first POST. */
const LATE_FALLBACK_MS = 60_000;

// ---- 2–4. the fixed fleet ----
const FIXED_RUN_MS = 1000;
const FIXED_WORKERS = 3;
const FIXED_JOBS = 150;
const FIXED_EMULATOR: Record<string, string> = {
  RUNPOD_EMULATOR_MAX_WORKERS: String(FIXED_WORKERS),
  RUNPOD_EMULATOR_RUN_MS: String(FIXED_RUN_MS),
  RUNPOD_EMULATOR_QUEUE_MS: "20",
  RUNPOD_EMULATOR_PROGRESS_STEPS: "50",
};
/** `auto` as shipped (FLEET_POLL_S 5, no RUNPOD_MAX_WORKERS) against a fixed cap of 4. */
const FIXED_CONFIGS = {
  auto: { RUNPOD_MAX_IN_FLIGHT: "auto" },
  cap4: { RUNPOD_MAX_IN_FLIGHT: "4" },
};
const ETA_WARMUP = 10;
const ETA_JOBS = 90;
const ETA_MIN_WAIT_RUNS = 5;

/** FLEET_ONLY=autoscaling,fixed,cost: only these scenarios (a partial run writes no results). */
const ONLY = process.env.FLEET_ONLY ? new Set(process.env.FLEET_ONLY.split(",")) : null;

const fleet = new Fleet();
const failures: string[] = [];

/** Users 1..users, one job each in turn. */
const usersOf = (jobs: number, users: number, first = 1) =>
  Array.from({ length: jobs }, (_, i) => first + (i % users));

const runRequests = (requests: readonly EmulatorRequest[]) =>
  requests
    .filter((r) => r.method === "POST" && r.path.endsWith("/run"))
    .map((r) => ({ at: ms(r.receivedAt), status: r.responseStatus }));

const answersByStatus = (runs: { status: number | null }[]) => {
  const out: Record<string, number> = {};
  for (const r of runs) out[String(r.status)] = (out[String(r.status)] ?? 0) + 1;
  return out;
};

/** The first run of each export job (by its input's export_job_id). */
function firstRuns(runs: readonly EmulatorRun[]): Map<string, EmulatorRun> {
  const out = new Map<string, EmulatorRun>();
  for (const run of [...runs].sort((a, b) => ms(a.submittedAt) - ms(b.submittedAt))) {
    const id = run.input.export_job_id;
    if (id && !out.has(id)) out.set(id, run);
  }
  return out;
}

interface Refill {
  n: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
  /** Latencies over 250 ms: [the webhook's time since the first POST, the latency] (ms). */
  slow: [number, number][];
}

/**
 * Refill latency: from each run's successful webhook delivery (the one that ended it) to the first
 * /run the emulator received after it, for runs that ended before the last /run (while jobs were
 * still to be submitted).
 */
function refillLatency(
  runs: readonly EmulatorRun[],
  runAts: readonly { at: number }[],
  t0: number,
): Refill {
  const times = runAts.map((r) => r.at).sort((a, b) => a - b);
  const last = times.at(-1) ?? Number.NaN;
  const latencies: number[] = [];
  const slow: [number, number][] = [];
  for (const run of runs) {
    const t = webhookAt(run);
    if (!Number.isFinite(t) || !(t < last)) continue;
    const next = times.find((at) => at > t);
    if (next === undefined) continue;
    latencies.push(next - t);
    if (next - t > 250) slow.push([t - t0, next - t]);
  }
  return {
    n: latencies.length,
    p50_ms: quantile(latencies, 0.5),
    p99_ms: quantile(latencies, 0.99),
    max_ms: latencies.length > 0 ? Math.max(...latencies) : Number.NaN,
    slow: slow.sort((a, b) => a[0] - b[0]),
  };
}

/** Waits (at most `limitMs`) until the autoscaling fleet has no worker left: billing ends. */
async function fleetAtRest(limitMs: number): Promise<FleetReport> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const report = await fleet.fleet();
    const c = report.current;
    if (c.idle + c.running + c.initializing + c.throttled === 0 || Date.now() > deadline) {
      return report;
    }
    await sleep(1000);
  }
}

// ---------------------------------------------------------------------------------------------
// 1. The autoscaling fleet
// ---------------------------------------------------------------------------------------------

interface AutoscalingResult {
  config: string;
  jobs: number;
  drain_ms: number;
  post_ms: number;
  grown_at_ms: number | null;
  last_run_at_ms: number;
  queue_at_full_fleet: { max: number; p95: number; window_ms: number };
  queue_when_grown: number | null;
  /** The same once every worker is warm (running + idle = 32): the cold start left out. */
  warm_at_ms: number | null;
  queue_when_warm: { max: number; p95: number; window_ms: number };
  /** Idle workers while runs were still to start, once the fleet is warm: ∫ idle ÷ (32 × time). */
  idle_while_waiting: { share: number; idle_worker_s: number; window_ms: number };
  refill: Refill;
  /** Seconds of /stats samples whose cap_reason was a back-off, and the first such reason. */
  backoff: { s: number; first: string | null; at_ms: number | null };
  late: { trigger: string; posted_at_ms: number; wait_ms: number; wait_runs: number };
  peak_workers: number;
  billed_worker_s: number;
  worker_s: { idle: number; running: number; initializing: number };
  idle_while_queued_s: number;
  run_answers: Record<string, number>;
  jobs_in_error: number;
  refill_failed_lines: number;
  /** export-jobs messages the consumer's queue batches carried (one per job when refills work). */
  queue_messages: { batches: number; messages: number };
  cap_samples: ReturnType<typeof compactSamples>;
  timeline: { columns: string[]; rows: number[][]; dropped: number };
}

async function autoscaling(config: keyof typeof AUTOSCALING_CONFIGS): Promise<AutoscalingResult> {
  const name = `autoscaling-${config}`;
  say(`${name}: starting the stack (${JSON.stringify(AUTOSCALING_CONFIGS[config])})`);
  await fleet.start(name, { ...COMMON, ...AUTOSCALING_CONFIGS[config] }, AUTOSCALING_EMULATOR);
  const t0 = Date.now();
  let postedAll = false;
  let late: Posted | null = null;
  let trigger = "";
  let stopWatch = false;
  // Posts the late user's one job once the fleet is grown (and the backlog posted).
  const watch = (async () => {
    while (!stopWatch && late === null) {
      const health = await fleet.health().catch(() => null);
      const warm = health ? health.workers.ready + health.workers.running : 0;
      const overdue = Date.now() - t0 > LATE_FALLBACK_MS;
      if (postedAll && (warm >= AUTO_WORKERS || overdue)) {
        trigger =
          warm >= AUTO_WORKERS
            ? `${warm} workers warm, ${health?.jobs.inQueue} runs in RunPod's queue`
            : `fallback: only ${warm} workers warm ${Math.round((Date.now() - t0) / 1000)} s after the first POST`;
        const [job] = await fleet.post([AUTO_USERS + 1], 1);
        late = job ?? null;
        say(`  late user's job posted (${trigger})`);
        return;
      }
      await sleep(250);
    }
  })();
  say(`${name}: posting ${AUTO_JOBS} jobs of ${AUTO_USERS} users, ${POST_CONCURRENCY} at a time`);
  const posted = await fleet.post(usersOf(AUTO_JOBS, AUTO_USERS), POST_CONCURRENCY);
  const postMs = Math.max(...posted.map((p) => p.answeredAt)) - t0;
  postedAll = true;
  say(`  posted in ${(postMs / 1000).toFixed(1)} s; draining`);
  const { samples, stats } = await fleet.drain(AUTO_JOBS + 1, t0, 240_000).finally(() => {
    stopWatch = true;
  });
  await watch;
  const lateJob = late as Posted | null;
  if (!lateJob) throw new Error("the late user's job was never posted");
  say(`  drained; waiting for the fleet to stop (billing)`);
  const report = await fleetAtRest(15_000);
  const runs = await fleet.runs();
  const runRequestsAll = runRequests(await fleet.requests());
  const first = firstRuns(runs);

  const drainEnd = Math.max(...runs.map(webhookAt).filter(Number.isFinite));
  const lastRunAt = Math.max(...runRequestsAll.map((r) => r.at));
  const total = (s: FleetSample) => s.idle + s.running + s.initializing;
  // Runs waiting at RunPod for a worker: the emulator's timeline has a sample at every change,
  // and runs that arrive while workers are idle show as queued until the emulator starts them
  // (the same millisecond); only runs beyond the idle workers wait.
  const waitingForWorkers = (s: FleetSample) => Math.max(0, s.inQueue - s.idle);
  const grown = report.timeline.find((s) => total(s) >= AUTO_WORKERS && s.at >= t0);
  const atFull = grown
    ? timeWeighted(
        report.timeline,
        grown.at,
        lastRunAt,
        waitingForWorkers,
        0.95,
        (s) => total(s) >= AUTO_WORKERS,
      )
    : { max: Number.NaN, quantile: Number.NaN, ms: 0 };
  const warm = report.timeline.find((s) => s.idle + s.running >= AUTO_WORKERS && s.at >= t0);
  const isWarm = (s: FleetSample) => s.idle + s.running >= AUTO_WORKERS;
  const whenWarm = warm
    ? timeWeighted(report.timeline, warm.at, lastRunAt, waitingForWorkers, 0.95, isWarm)
    : { max: Number.NaN, quantile: Number.NaN, ms: 0 };
  const lastStart = Math.max(...runs.map((r) => ms(r.startedAt)).filter(Number.isFinite));
  const idle = warm
    ? timeWeighted(report.timeline, warm.at, lastStart, (s) => s.idle, 0.5, isWarm)
    : { max: Number.NaN, quantile: Number.NaN, ms: 0 };
  let idleMs = 0;
  if (warm) {
    report.timeline.forEach((s, i) => {
      const start = Math.max(warm.at, s.at);
      const end = Math.min(lastStart, report.timeline[i + 1]?.at ?? lastStart);
      if (end > start && isWarm(s)) idleMs += s.idle * (end - start);
    });
  }
  const backoffs = samples.filter((s) => s.reason.startsWith("backing off"));
  const lateRun = first.get(lateJob.id);
  const lateWait = lateRun?.startedAt ? ms(lateRun.startedAt) - lateJob.answeredAt : Number.NaN;
  const samplesAt = (s: FleetSample) => [
    s.at - t0,
    s.idle,
    s.running,
    s.initializing,
    s.throttled,
    s.inQueue,
  ];
  const result: AutoscalingResult = {
    config,
    jobs: posted.length + 1,
    drain_ms: drainEnd - t0,
    post_ms: postMs,
    grown_at_ms: grown ? grown.at - t0 : null,
    last_run_at_ms: lastRunAt - t0,
    queue_at_full_fleet: { max: atFull.max, p95: atFull.quantile, window_ms: atFull.ms },
    queue_when_grown: grown?.inQueue ?? null,
    warm_at_ms: warm ? warm.at - t0 : null,
    queue_when_warm: { max: whenWarm.max, p95: whenWarm.quantile, window_ms: whenWarm.ms },
    idle_while_waiting: {
      share: round(idleMs / (AUTO_WORKERS * idle.ms), 4),
      idle_worker_s: round(idleMs / 1000, 1),
      window_ms: idle.ms,
    },
    refill: refillLatency(runs, runRequestsAll, t0),
    backoff: {
      s: backoffs.length,
      first: backoffs[0]?.reason ?? null,
      at_ms: backoffs[0]?.t ?? null,
    },
    late: {
      trigger,
      posted_at_ms: lateJob.answeredAt - t0,
      wait_ms: lateWait,
      wait_runs: round(lateWait / AUTO_RUN_MS, 2),
    },
    peak_workers: report.peakWorkers,
    billed_worker_s: round(report.billedWorkerMs / 1000, 1),
    worker_s: {
      idle: round(report.workerMs.idle / 1000, 1),
      running: round(report.workerMs.running / 1000, 1),
      initializing: round(report.workerMs.initializing / 1000, 1),
    },
    idle_while_queued_s: round(report.idleWhileQueuedMs / 1000, 1),
    run_answers: answersByStatus(runRequestsAll),
    jobs_in_error: stats.jobs.error,
    refill_failed_lines: fleet.count(/refill failed/),
    queue_messages: fleet.queueBatches(),
    cap_samples: compactSamples(samples),
    timeline: {
      columns: ["t_ms", "idle", "running", "initializing", "throttled", "in_queue"],
      rows: report.timeline.map(samplesAt),
      dropped: report.timelineDropped,
    },
  };
  say(
    `${name}: drain ${(result.drain_ms / 1000).toFixed(1)} s, fleet at ${AUTO_WORKERS} from ${
      result.grown_at_ms === null ? "never" : `${(result.grown_at_ms / 1000).toFixed(1)} s`
    }, RunPod queue there max ${atFull.max} p95 ${atFull.quantile}, late wait ${result.late.wait_runs} runs, peak ${result.peak_workers} workers, billed ${result.billed_worker_s} worker-s`,
  );
  await fleet.stop();
  return result;
}

// ---------------------------------------------------------------------------------------------
// 2–4. The fixed fleet
// ---------------------------------------------------------------------------------------------

interface EtaResult {
  available: boolean;
  reason: string | null;
  jobs: number;
  shown: number;
  counted: number;
  median_relative_error: number;
  p90_relative_error: number;
  /** Per job with an ETA: [GET's time, eta_s, position, actual start] (ms since the backlog's first POST). */
  rows: (number | null)[][];
}

interface FixedResult {
  config: string;
  jobs: number;
  drain_ms: number;
  ideal_ms: number;
  post_ms: number;
  /** From the first POST to the last job's /run received. */
  waiting_period_ms: number;
  idle_share: number;
  idle_share_timeline: number;
  max_queued_at_runpod: number;
  refill: Refill;
  run_answers: Record<string, number>;
  jobs_in_error: number;
  refill_failed_lines: number;
  queue_messages: { batches: number; messages: number };
  cap_samples: ReturnType<typeof compactSamples>;
  eta?: EtaResult;
}

async function fixed(config: keyof typeof FIXED_CONFIGS, withEta: boolean): Promise<FixedResult> {
  const name = `fixed-${config}`;
  say(`${name}: starting the stack (${JSON.stringify(FIXED_CONFIGS[config])})`);
  await fleet.start(name, { ...COMMON, ...FIXED_CONFIGS[config] }, FIXED_EMULATOR);
  const t0 = Date.now();
  say(`${name}: posting ${FIXED_JOBS} jobs of 2 users, ${POST_CONCURRENCY} at a time`);
  const posted = await fleet.post(usersOf(FIXED_JOBS, 2), POST_CONCURRENCY);
  const postMs = Math.max(...posted.map((p) => p.answeredAt)) - t0;
  say(`  posted in ${(postMs / 1000).toFixed(1)} s; draining`);
  const { samples, stats } = await fleet.drain(FIXED_JOBS, t0, 180_000);
  const ids = new Set(posted.map((p) => p.id));
  const runs = (await fleet.runs()).filter((r) => ids.has(r.input.export_job_id ?? ""));
  const report = await fleet.fleet();
  const runAts = runRequests(await fleet.requests());
  const lastRunAt = Math.max(...runAts.map((r) => r.at));
  const drainEnd = Math.max(...runs.map(webhookAt).filter(Number.isFinite));
  const period = lastRunAt - t0;

  // GPU idle while jobs wait: from the runs' start and end (a worker is busy from a run's
  // startedAt to its finishedAt), over the period from the first POST to the last /run.
  const busy = runs.reduce((sum, r) => {
    const start = Math.max(t0, ms(r.startedAt));
    const end = Math.min(lastRunAt, ms(r.finishedAt ?? new Date().toISOString()));
    return sum + (Number.isFinite(start) && end > start ? end - start : 0);
  }, 0);
  const idleShare = 1 - busy / (FIXED_WORKERS * period);
  // The same from the emulator's timeline (idle = maxWorkers − running; all idle before the
  // endpoint's first sample).
  const timeline = report.timeline;
  const firstAt = timeline[0]?.at ?? lastRunAt;
  const idleTimeline =
    Math.max(0, Math.min(firstAt, lastRunAt) - t0) * FIXED_WORKERS +
    timeline.reduce((sum, s, i) => {
      const start = Math.max(t0, s.at);
      const end = Math.min(lastRunAt, timeline[i + 1]?.at ?? lastRunAt);
      return sum + (end > start ? s.idle * (end - start) : 0);
    }, 0);
  const queued = timeWeighted(timeline, t0, lastRunAt, (s) => s.inQueue, 1);

  const refill = refillLatency(runs, runAts, t0);
  const result: FixedResult = {
    config,
    jobs: posted.length,
    drain_ms: drainEnd - t0,
    ideal_ms: (FIXED_JOBS * FIXED_RUN_MS) / FIXED_WORKERS,
    post_ms: postMs,
    waiting_period_ms: period,
    idle_share: round(idleShare, 4),
    idle_share_timeline: round(idleTimeline / (FIXED_WORKERS * period), 4),
    max_queued_at_runpod: queued.max,
    refill,
    run_answers: answersByStatus(runAts),
    jobs_in_error: stats.jobs.error,
    refill_failed_lines: fleet.count(/refill failed/),
    queue_messages: fleet.queueBatches(),
    cap_samples: compactSamples(samples),
  };
  say(
    `${name}: drain ${(result.drain_ms / 1000).toFixed(1)} s (ideal ${result.ideal_ms / 1000} s), GPU idle while jobs wait ${(idleShare * 100).toFixed(1)} %, refill p50 ${result.refill.p50_ms} ms p99 ${result.refill.p99_ms} ms`,
  );
  if (withEta) result.eta = await eta(FIXED_JOBS);
  await fleet.stop();
  return result;
}

/** The queue estimate of a pending job, wherever GET /exports/{id} puts it; undefined: none. */
type QueueInfo = { position: number; eta_s: number; lane?: string; at?: string } | null;

/**
 * Figure 4, on the running `auto` fixed-fleet stack after its backlog drained: warm-up jobs to
 * completion (run lengths learned), then a backlog at once; each job's ETA as GET /exports/{id}
 * shows it right after, against its run's start at RunPod.
 */
async function eta(finishedBefore: number): Promise<EtaResult> {
  say(`eta: ${ETA_WARMUP} warm-up jobs`);
  await fleet.post(usersOf(ETA_WARMUP, 1, 7), 4);
  await fleet.drain(finishedBefore + ETA_WARMUP, Date.now(), 60_000);
  say(`eta: posting ${ETA_JOBS} jobs of 2 users at once`);
  const t0 = Date.now();
  const posted = await fleet.post(usersOf(ETA_JOBS, 2, 8), POST_CONCURRENCY);
  const shown = new Map<string, { getAt: number; queue: NonNullable<QueueInfo> }>();
  let available = true;
  let reason: string | null = null;
  let next = 0;
  const worker = async () => {
    while (available && next < posted.length) {
      const job = posted[next++] as Posted;
      for (let attempt = 0; attempt < 6; attempt++) {
        const getAt = Date.now();
        const body = await readJson<{
          job: { status: string; queue?: QueueInfo };
          queue?: QueueInfo;
        }>(`${fleet.s.producerUrl}/exports/${job.id}`, {
          headers: { authorization: `Bearer ${fleet.s.settings.API_TOKEN}` },
        });
        const queue = body.job.queue !== undefined ? body.job.queue : body.queue;
        if (queue === undefined) {
          available = false;
          reason = "GET /exports/{id} has no `queue` in this worktree (the API is not there yet)";
          return;
        }
        if (queue !== null) {
          shown.set(job.id, { getAt, queue });
          break;
        }
        if (body.job.status !== "pending") break; // running already: no ETA to check
        await sleep(500);
      }
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  say(`eta: ${available ? `${shown.size} ETAs read` : `n/a: ${reason}`}; draining`);
  await fleet.drain(finishedBefore + ETA_WARMUP + ETA_JOBS, t0, 180_000);
  const first = firstRuns(await fleet.runs());
  const errors: number[] = [];
  const rows: (number | null)[][] = [];
  for (const [id, { getAt, queue }] of shown) {
    const started = ms(first.get(id)?.startedAt);
    rows.push([
      getAt - t0,
      queue.eta_s,
      queue.position,
      Number.isFinite(started) ? started - t0 : null,
    ]);
    const actualWait = started - getAt;
    if (!Number.isFinite(actualWait) || actualWait < ETA_MIN_WAIT_RUNS * FIXED_RUN_MS) continue;
    const predicted = getAt + queue.eta_s * 1000;
    errors.push(Math.abs(predicted - started) / actualWait);
  }
  return {
    available,
    reason,
    jobs: posted.length,
    shown: shown.size,
    counted: errors.length,
    median_relative_error: round(median(errors), 3),
    p90_relative_error: round(quantile(errors, 0.9), 3),
    rows,
  };
}

// ---------------------------------------------------------------------------------------------
// The figures
// ---------------------------------------------------------------------------------------------

const fmtS = (msValue: number) => `${(msValue / 1000).toFixed(1)} s`;

function reportAutoscaling(auto: AutoscalingResult, uncapped: AutoscalingResult): void {
  const ratio = auto.drain_ms / uncapped.drain_ms;
  figure("autoscaling_drain_ratio", "1. autoscaling fleet: drain, auto ÷ all at once", {
    value: round(ratio, 3),
    unit: "×",
    target: "≤ 1.2",
    pass: ratio <= 1.2,
    note:
      `${auto.jobs} jobs (${AUTO_JOBS} of ${AUTO_USERS} users posted at once, ${POST_CONCURRENCY} POSTs at a time, and the late user's one), ` +
      `first POST to the last run's successful webhook: auto ${fmtS(auto.drain_ms)} (RUNPOD_MAX_WORKERS=32, FLEET_POLL_S=1), ` +
      `every job at once ${fmtS(uncapped.drain_ms)} (RUNPOD_MAX_IN_FLIGHT=100000); emulator: workersMax 32, workersMin 0, ` +
      `QUEUE_DELAY 1 s checked every 500 ms, cold start 2 s, idle timeout 5 s, ${AUTO_RUN_MS} ms runs; ideal at 32 warm workers ${fmtS((AUTO_JOBS * AUTO_RUN_MS) / AUTO_WORKERS)}`,
  });
  figure("autoscaling_drain_auto_s", "1. drain with auto", {
    value: round(auto.drain_ms / 1000, 1),
    unit: "s",
    target: "",
    pass: null,
    note: `fleet at ${AUTO_WORKERS} workers from ${auto.grown_at_ms === null ? "never" : fmtS(auto.grown_at_ms)} (all warm from ${auto.warm_at_ms === null ? "never" : fmtS(auto.warm_at_ms)}); POSTs took ${fmtS(auto.post_ms)}; ${
      auto.backoff.s > 0
        ? `the cap backed off in ${auto.backoff.s} of the 1 s samples of GET /stats, first at ${fmtS(auto.backoff.at_ms ?? 0)} (${auto.backoff.first})`
        : "the cap never backed off"
    }`,
  });
  figure("autoscaling_drain_uncapped_s", "1. drain with every job at once", {
    value: round(uncapped.drain_ms / 1000, 1),
    unit: "s",
    target: "",
    pass: null,
    note: `fleet at ${AUTO_WORKERS} workers from ${uncapped.grown_at_ms === null ? "never" : fmtS(uncapped.grown_at_ms)}; POSTs took ${fmtS(uncapped.post_ms)}`,
  });
  const q = auto.queue_at_full_fleet;
  const limit = Math.max(2, AUTO_WORKERS / 4);
  const measured = Number.isFinite(q.max);
  const queueNote =
    "the emulator's timeline (a sample at every change), time-weighted, while running + idle + " +
    `initializing = ${AUTO_WORKERS} and the pipeline still held jobs not submitted (until the last /run received; ` +
    `${fmtS(q.window_ms)} of such time, of which ${
      auto.grown_at_ms !== null && auto.warm_at_ms !== null
        ? fmtS(auto.warm_at_ms - auto.grown_at_ms)
        : "n/a"
    } the cold start: ${AUTO_WORKERS} workers initializing, the runs that asked for them queued)`;
  // "Once the fleet has grown": every worker up (running + idle = the maximum). While 32 workers
  // start, the runs that asked for them wait at RunPod by design: shown apart, for information.
  const w = auto.queue_when_warm;
  const warmMeasured = Number.isFinite(w.max);
  const warmNote = `while running + idle = ${AUTO_WORKERS} and jobs were still to be submitted (the emulator's timeline, a sample at every change, time-weighted; ${fmtS(w.window_ms)} of such time); runs waiting for a worker: inQueue beyond the idle workers (queueMs is 0 here; a run that arrives while a worker is idle shows as queued until the emulator starts it, within the millisecond)`;
  figure("runpod_queue_grown_max", "1. RunPod's queue once the fleet has grown, auto: max", {
    value: warmMeasured ? w.max : "n/a",
    unit: "runs",
    target: `≤ ${limit}`,
    pass: warmMeasured ? w.max <= limit : false,
    note: warmMeasured ? warmNote : `no such time: ${warmNote}`,
  });
  figure("runpod_queue_grown_p95", "1. RunPod's queue once the fleet has grown, auto: p95", {
    value: warmMeasured ? w.p95 : "n/a",
    unit: "runs",
    target: `≤ ${limit}`,
    pass: warmMeasured ? w.p95 <= limit : false,
    note: warmNote,
  });
  figure(
    "runpod_queue_with_cold_start_auto",
    "1. RunPod's queue at 32 workers, cold start included, auto",
    {
      value: measured ? `max ${q.max}, p95 ${q.p95} runs` : "n/a",
      unit: "",
      target: "",
      pass: null,
      note: queueNote,
    },
  );
  figure("runpod_queue_when_grown_uncapped", "1. RunPod's queue at 32 workers, all at once", {
    value: uncapped.queue_when_grown ?? "n/a",
    unit: "runs",
    target: "",
    pass: null,
    note: `when the fleet first reached ${AUTO_WORKERS} (every job was at RunPod by then: last /run at ${fmtS(uncapped.last_run_at_ms)})`,
  });
  for (const [r, label] of [
    [auto, "auto"],
    [uncapped, "all at once"],
  ] as const) {
    figure(
      `idle_while_waiting_warm_${r.config}`,
      `1. GPU idle while runs wait, fleet warm, ${label}`,
      {
        value: round(r.idle_while_waiting.share * 100, 2),
        unit: "%",
        target: "",
        pass: null,
        note: `∫ idle workers dt ÷ (${AUTO_WORKERS} × the time) from all ${AUTO_WORKERS} warm to the last run's start (runs still to start, in the pipeline or at RunPod; ${fmtS(r.idle_while_waiting.window_ms)}): ${r.idle_while_waiting.idle_worker_s} worker-s idle`,
      },
    );
  }
  figure("refill_at_full_fleet_auto", "1. refill latency at 32 workers, auto", {
    value: `p50 ${auto.refill.p50_ms} ms, p99 ${auto.refill.p99_ms} ms`,
    unit: "",
    target: "",
    pass: null,
    note: `as figure 3, on this fleet (${auto.refill.n} runs ended while jobs were to be submitted; max ${auto.refill.max_ms} ms); "refill failed" lines: ${auto.refill_failed_lines}; queue messages the consumer got: ${auto.queue_messages.messages} for ${auto.jobs} jobs`,
  });
  figure("late_user_wait_auto", "1. late user's wait, auto (run lengths)", {
    value: auto.late.wait_runs,
    unit: "runs",
    target: "≤ 2",
    pass: auto.late.wait_runs <= 2,
    note: `one job of a 5th user posted ${fmtS(auto.late.posted_at_ms)} after the first POST (${auto.late.trigger}); from its POST's answer to its run's startedAt at the emulator: ${Math.round(auto.late.wait_ms)} ms ÷ ${AUTO_RUN_MS} ms`,
  });
  figure("late_user_wait_uncapped", "1. late user's wait, all at once (run lengths)", {
    value: uncapped.late.wait_runs,
    unit: "runs",
    target: "",
    pass: null,
    note: `${Math.round(uncapped.late.wait_ms)} ms; posted ${fmtS(uncapped.late.posted_at_ms)} after the first POST (${uncapped.late.trigger}): behind RunPod's FIFO`,
  });
  for (const [r, label] of [
    [auto, "auto"],
    [uncapped, "all at once"],
  ] as const) {
    figure(`peak_workers_${r.config}`, `1. peak workers, ${label}`, {
      value: r.peak_workers,
      unit: "",
      target: "",
      pass: null,
      note: "the emulator's GET /fleet peakWorkers",
    });
    figure(`billed_worker_s_${r.config}`, `1. billed worker-seconds, ${label}`, {
      value: r.billed_worker_s,
      unit: "worker-s",
      target: "",
      pass: null,
      note: `the emulator's billedWorkerMs (initializing ${r.worker_s.initializing} + idle ${r.worker_s.idle} + running ${r.worker_s.running} worker-s) once every worker stopped (idle timeout 5 s); idle while runs queued ${r.idle_while_queued_s} worker-s`,
    });
  }
}

function reportFixed(auto: FixedResult, cap4: FixedResult): void {
  const note = (r: FixedResult) =>
    `∫ idle workers dt ÷ (${FIXED_WORKERS} × the period from the first POST to the last job's /run received, ${fmtS(r.waiting_period_ms)}), a worker busy from a run's startedAt to its finishedAt; from the emulator's timeline: ${(r.idle_share_timeline * 100).toFixed(1)} %; at most ${r.max_queued_at_runpod} runs queued at RunPod`;
  figure("fixed_gpu_idle_while_waiting_auto", "2. fixed fleet: GPU idle while jobs wait, auto", {
    value: round(auto.idle_share * 100, 2),
    unit: "%",
    target: "< 5 %",
    pass: auto.idle_share < 0.05,
    note: `${FIXED_JOBS} jobs of 2 users at once, ${FIXED_WORKERS} always-ready workers, ${FIXED_RUN_MS} ms runs; auto as shipped (FLEET_POLL_S 5, RUNPOD_MAX_WORKERS unset). ${note(auto)}`,
  });
  figure("fixed_gpu_idle_while_waiting_cap4", "2. fixed fleet: GPU idle while jobs wait, cap 4", {
    value: round(cap4.idle_share * 100, 2),
    unit: "%",
    target: "",
    pass: null,
    note: `RUNPOD_MAX_IN_FLIGHT=4. ${note(cap4)}`,
  });
  for (const [r, label] of [
    [auto, "auto"],
    [cap4, "cap 4"],
  ] as const) {
    figure(
      `fixed_drain_s_${r.config}`,
      `2. fixed fleet: drain, ${label} (ideal ${r.ideal_ms / 1000} s)`,
      {
        value: round(r.drain_ms / 1000, 1),
        unit: "s",
        target: "",
        pass: null,
        note: `first POST to the last run's successful webhook; ideal ${FIXED_JOBS} × ${FIXED_RUN_MS} ms ÷ ${FIXED_WORKERS} = ${r.ideal_ms / 1000} s (${round(r.drain_ms / r.ideal_ms, 3)}×); POSTs took ${fmtS(r.post_ms)}`,
      },
    );
  }
  const refillNote = (r: FixedResult) =>
    `${r.refill.n} runs ended while jobs waited: each run's successful webhook delivery (the emulator's webhookDeliveries[].at) to the first /run received after it; max ${r.refill.max_ms} ms; "refill failed" lines in the consumer's log: ${r.refill_failed_lines}; queue messages the consumer got: ${r.queue_messages.messages} in ${r.queue_messages.batches} batches for ${r.jobs} jobs (more than the jobs: admitted jobs sent through the queue instead of the refill)`;
  figure("refill_p50_auto", "3. refill latency p50, auto", {
    value: auto.refill.p50_ms,
    unit: "ms",
    target: "≤ 250",
    pass: auto.refill.p50_ms <= 250,
    note: refillNote(auto),
  });
  figure("refill_p99_auto", "3. refill latency p99, auto", {
    value: auto.refill.p99_ms,
    unit: "ms",
    target: "",
    pass: null,
    note: refillNote(auto),
  });
  figure("refill_p50_cap4", "3. refill latency p50, cap 4", {
    value: cap4.refill.p50_ms,
    unit: "ms",
    target: "",
    pass: null,
    note: refillNote(cap4),
  });
  figure("refill_p99_cap4", "3. refill latency p99, cap 4", {
    value: cap4.refill.p99_ms,
    unit: "ms",
    target: "",
    pass: null,
    note: refillNote(cap4),
  });
}

function reportEta(e: EtaResult | undefined): void {
  const how =
    `fixed fleet (${FIXED_WORKERS} workers, ${FIXED_RUN_MS} ms runs), auto, after ${FIXED_JOBS} + ${ETA_WARMUP} warm-up jobs to completion on the same stack; ` +
    `${ETA_JOBS} jobs of 2 users at once, then GET /exports/{id} of each (again every 500 ms while pending with queue null): predicted start = the GET's time + eta_s, ` +
    `actual = its first run's startedAt at the emulator; |predicted − actual| ÷ actual wait, median over jobs waiting ≥ ${ETA_MIN_WAIT_RUNS} run lengths`;
  if (!e?.available || e.counted === 0) {
    figure("eta_median_relative_error", "4. ETA: median relative error", {
      value: "n/a",
      unit: "",
      target: "≤ 20 %",
      pass: null,
      note: `n/a: ${e?.reason ?? (e ? `no job with an ETA waited ≥ ${ETA_MIN_WAIT_RUNS} run lengths (${e.shown} ETAs read)` : "not measured")}. ${how}`,
    });
    return;
  }
  figure("eta_median_relative_error", "4. ETA: median relative error", {
    value: round(e.median_relative_error * 100, 1),
    unit: "%",
    target: "≤ 20 %",
    pass: e.median_relative_error <= 0.2,
    note: `${e.counted} of ${e.shown} jobs with an ETA counted; p90 ${round(e.p90_relative_error * 100, 1)} %. ${how}`,
  });
}

function reportCost(cost: Awaited<ReturnType<typeof measureAdmissionCost>>): void {
  const [small, large] = cost.sizes;
  if (!small || !large) return;
  const equal = small.rows_read === large.rows_read && small.rows_written === large.rows_written;
  const how =
    `the fair queue (shared/fair-queue.ts) in a bench Durable Object (bench/worker/fair-queue.ts) under wrangler dev, ${small.waiting} waiting (${small.keys} keys) and ${large.waiting} waiting (${large.keys} keys), 32 in flight; ` +
    `an admission = a new job offered (the backlog keeps its size), the oldest slot freed, the fairest job admitted; rows from SQLite's own counts (FairQueue.cost())`;
  figure("admission_rows", "5. rows per admission at 100 and 100,000 waiting", {
    value: `${small.rows_read} r + ${small.rows_written} w / ${large.rows_read} r + ${large.rows_written} w`,
    unit: "",
    target: "equal",
    pass: equal && small.rows_steady && large.rows_steady,
    note: `${how}; by step (read/written) at 100,000: offer ${large.rows_by_step.offer.read}/${large.rows_by_step.offer.written}, free ${large.rows_by_step.free.read}/${large.rows_by_step.free.written}, admit ${large.rows_by_step.admit.read}/${large.rows_by_step.admit.written}`,
  });
  const ratio = large.ms_per_admission / small.ms_per_admission;
  figure("admission_time_ratio", "5. time per admission, 100,000 ÷ 100 waiting", {
    value: round(ratio, 3),
    unit: "×",
    target: "≤ 1.5",
    pass: ratio <= 1.5,
    note: `${cost.rounds} rounds of ${cost.cycles_per_round} admissions in one request per size, interleaved, timed from Node (workerd's clock moves on I/O only) minus an empty request's ${cost.empty_request_ms} ms; medians ${small.ms_per_admission} ms and ${large.ms_per_admission} ms`,
  });
  for (const s of [small, large]) {
    figure(
      `admission_ms_${s.waiting}`,
      `5. time per admission at ${s.waiting.toLocaleString("en")} waiting`,
      {
        value: s.ms_per_admission,
        unit: "ms",
        target: "",
        pass: null,
        note: `rounds: ${s.ms_per_admission_rounds.join(", ")} ms`,
      },
    );
  }
}

// ---------------------------------------------------------------------------------------------

process.on("SIGINT", () => {
  void fleet.close().then(() => process.exit(130));
});

/** Runs one scenario; a failure is recorded and the bench goes on with the next. */
async function attempt<T>(what: string, work: () => Promise<T>): Promise<T | null> {
  try {
    return await work();
  } catch (error) {
    failures.push(`${what}: ${error instanceof Error ? error.message : String(error)}`);
    say(`${what} could not be measured: ${error instanceof Error ? error.message : error}`);
    console.error(fleet.lines.slice(-30).join("\n"));
    await fleet.stop().catch(() => {});
    return null;
  }
}

const started = Date.now();
const host = machine();
say(
  `machine: ${host.nproc} × ${host.cpu_model}, ${host.memory_gb} GB, load ${host.load_avg_1m_at_start}`,
);
process.env.WRANGLER_LOG ??= "log"; // the Workers' own log lines ("refill failed", warnings)
try {
  const run = (name: string) => ONLY === null || ONLY.has(name);
  const autoA = run("autoscaling")
    ? await attempt("autoscaling auto", () => autoscaling("auto"))
    : null;
  const autoU = run("autoscaling")
    ? await attempt("autoscaling uncapped", () => autoscaling("uncapped"))
    : null;
  const fixedA = run("fixed") ? await attempt("fixed auto", () => fixed("auto", true)) : null;
  const fixedC = run("fixed") ? await attempt("fixed cap4", () => fixed("cap4", false)) : null;
  const cost = run("cost")
    ? await attempt("admission cost", () => {
        say("admission cost: starting the bench Worker");
        return measureAdmissionCost(path.join(fleet.tmp, "fair-queue", "state"), say, (who, l) => {
          if (/error|✘/i.test(l)) fleet.notable.push(`[fair-queue:${who}] ${l}`);
        });
      })
    : null;

  if (autoA && autoU) reportAutoscaling(autoA, autoU);
  if (fixedA && fixedC) reportFixed(fixedA, fixedC);
  reportEta(fixedA?.eta);
  if (cost) reportCost(cost);
  Object.assign(results, {
    machine: host,
    duration_s: Math.round((Date.now() - started) / 1000),
    failures,
    phases: {
      autoscaling_auto: autoA,
      autoscaling_uncapped: autoU,
      fixed_auto: fixedA,
      fixed_cap4: fixedC,
      admission_cost: cost,
    },
  });
  // A partial run (FLEET_ONLY) leaves the committed results alone.
  const file = ONLY === null ? "bench/fleet.json" : "bench/fleet-partial.json";
  writeResults(path.join(root, file), results);
  const seen = Object.entries(fleet.seen).map(
    ([who, n]) => `${who}: ${n.lines} lines, ${n.json} of them the Worker's own log lines`,
  );
  writeFileSync(
    path.join(root, "bench/fleet-last-run.log"),
    `${[...seen, "", "warnings and errors:", ...fleet.notable].join("\n")}\n`,
  );
  printTable();
  say(`done in ${Math.round((Date.now() - started) / 1000)} s; ${file} written`);
  if (failures.length > 0) {
    console.error(`not measured:\n${failures.join("\n")}`);
    process.exitCode = 1;
  }
} catch (error) {
  console.error(fleet.lines.slice(-40).join("\n"));
  console.error(error);
  process.exitCode = 1;
} finally {
  await fleet.close();
}
