// The chaos harness behind `npm run chaos` and test/node/chaos.test.ts: one local stack (both
// Workers under `wrangler dev`, the RunPod emulator, the local R2 writer) on its own ports and
// temporary state, N export jobs, and every fault at once:
//   - RunPod `/run`: 20 % answered 500, a token-bucket rate limit, short windows in which it
//     answers after the client's timeout (runDelayMs, which the emulator applies to every `/run`
//     or none: a window opens, until the drain, while fewer than 5 % of the `/run` calls so far met
//     a client timeout), one outage of four breaker cooldowns (outageUntilMs);
//   - runs: ~10 % FAILED or TIMED_OUT, 10 % of webhooks dropped;
//   - webhooks re-posted by the harness from the emulator's run state: 5 % of jobs get theirs
//     twice (half at once, half late, in random order), some an out-of-order IN_PROGRESS and a
//     progress replay after the end, stale attempts get a COMPLETED on their old URL, and forged
//     ones (bad, missing, progress-kind or other-attempt signatures) are sent while jobs run;
//   - duplicates: 5 % of jobs get a second message on the real queue (through the local tools
//     Worker of scripts/local-r2/, any time from at once to after the job's end), 5 % of
//     POST /exports are repeated with their Idempotency-Key (half racing the first, half later),
//     and the reconciler is called every 2 s (sometimes twice at once);
//   - ~2 % of jobs cancelled, operators' retries (`error_prefix`) and dead-letter replays during
//     the run, and the consumer SIGKILLed and restarted mid-run;
//   - live clients (the operators' ticket, single- and several-project tickets) for the whole run.
// Then it waits for the drain and checks the outcome (bench/chaos/checks.ts).
import { randomBytes } from "node:crypto";
import { appendFileSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import os from "node:os";
import path from "node:path";
import { type LocalStack, startLocalStack } from "../../scripts/local-stack.ts";
import { Api } from "./api.ts";
import { type Report, verify } from "./checks.ts";
import { type ChaosPorts, ENDPOINT, FAULTS, RUN_DELAY_MS, SETTINGS } from "./config.ts";
import { EmulatorAdmin } from "./emulator.ts";
import { LiveClient } from "./live.ts";
import type { ChaosOptions, ChaosRun, CreatedJob, ProbeKind } from "./run.ts";
import { OutputScan } from "./scan.ts";
import { attemptOfUrl, type Job, statusObjectOf, TERMINAL } from "./types.ts";
import { bump, pause, prng, sleep, total, unitHash } from "./util.ts";

const DELAY_WINDOW_MS = 600;
const DELAYED_SHARE = 0.05;
const OUTAGE_MS = 4 * 2000;
const CRON_EVERY_MS = 2000;
const RETRY_EVERY_MS = 10_000;
const RETRY_PREFIXES = ["RunPod FAILED", "RunPod TIMED_OUT", "RunPod /run answered HTTP 500"];
const DUPLICATE_POST_SHARE = 0.05;
const CANCEL_SHARE = 0.02;
/**
 * Re-exports: this share of POSTs is an edit of the previous export of the same project, under
 * its supersede key (every job has one), so it supersedes that export if it has not finished.
 */
const REEXPORT_SHARE = 0.1;
const QUEUE_DUPLICATE_SHARE = 0.05;
const DUPLICATE_WEBHOOK_SHARE = 0.05;
const FORGED_SHARE = 0.01;
const POST_CONCURRENCY = 32;
/** Running jobs cancelled during the outage (RunPod's /cancel answers 503 then). */
const OUTAGE_CANCELS = 3;
/** How long runs last that start right before the outage. */
const LONG_RUN_MS = 3500;

const portFree = (port: number) =>
  new Promise<boolean>((resolve) => {
    const server = createServer().once("error", () => resolve(false));
    server.listen({ port, host: "127.0.0.1", exclusive: true }, () =>
      server.close(() => resolve(true)),
    );
  });

async function waitForPorts(ports: ChaosPorts, log: (line: string) => void): Promise<void> {
  const all = [
    ports.producer,
    ports.consumer,
    ports.emulator,
    ports.r2Writer,
    ...ports.inspectors,
    ports.r2WriterInspector,
  ];
  for (let i = 0; !(await Promise.all(all.map(portFree))).every(Boolean); i++) {
    if (i === 0) log(`waiting for ports ${all.join(", ")}…`);
    if (i >= 90) throw new Error(`ports ${all.join(", ")} are not free`);
    await sleep(1000);
  }
}

const secret = (name: string) => `chaos-${name}-${randomBytes(12).toString("hex")}`;

/** Lanes of the mix: mostly standard, some interactive, some batch. */
const PRIORITIES = ["standard", "standard", "interactive", "batch", "standard", "batch"] as const;

/**
 * The request body of job `index`: one of three types, spread over projects, users and the three
 * lanes.
 */
function bodyOf(index: number, projectId: number, users: number): Record<string, unknown> {
  const base = {
    project_id: projectId,
    user_id: 1 + ((projectId - 1) % users),
    input_video_key: "uploads/demo/sample.mp4",
    priority: PRIORITIES[index % PRIORITIES.length],
  };
  switch (index % 3) {
    case 0:
      return {
        ...base,
        type: "overlay",
        params: { highlight_regions: [{ start_time: index % 7, end_time: (index % 7) + 2 }] },
      };
    case 1:
      return {
        ...base,
        type: "framing",
        params: { crop_keyframes: [{ time: 0, x: 0, y: 0, width: 640, height: 360 }] },
      };
    default:
      return { ...base, type: "annotate", params: { annotations: [{ text: `job ${index}` }] } };
  }
}

/**
 * Runs the whole scenario and checks it. Resolves with the report (violations included); rejects
 * only when the stack cannot start or the harness itself fails.
 */
export async function runChaos(options: ChaosOptions): Promise<Report> {
  const log = options.log ?? (() => {});
  const { outputFile } = options;
  const opts: ChaosRun["options"] = {
    n: options.n,
    ports: options.ports,
    seed: options.seed ?? 42,
    postRatePerS: options.postRatePerS ?? 20,
    drainTimeoutMs: options.drainTimeoutMs ?? Math.max(240_000, options.n * 100),
    log,
  };
  const startedAt = Date.now();
  const secrets = {
    API_TOKEN: secret("api"),
    ADMIN_TOKEN: secret("admin"),
    WEBHOOK_SECRET: secret("webhook"),
    RUNPOD_API_KEY: secret("runpod"),
  };
  const scan = new OutputScan(secrets);
  const tmp = mkdtempSync(path.join(os.tmpdir(), "reel-chaos-"));
  // The Workers' own log lines (console.log included) for the scan and the evidence.
  const previousLog = process.env.WRANGLER_LOG;
  process.env.WRANGLER_LOG = "log";
  let stack: LocalStack | null = null;
  const live: LiveClient[] = [];
  try {
    await waitForPorts(opts.ports, log);
    log(`starting the stack (state in ${tmp})…`);
    stack = await startLocalStack({
      producerPort: opts.ports.producer,
      consumerPort: opts.ports.consumer,
      emulatorPort: opts.ports.emulator,
      r2WriterPort: opts.ports.r2Writer,
      inspectorPorts: opts.ports.inspectors,
      r2WriterInspectorPort: opts.ports.r2WriterInspector,
      exampleFrontendPort: null,
      persistTo: path.join(tmp, "state"),
      settings: { ...SETTINGS, ...options.settings, ...secrets },
      emulatorEnv: {
        RUNPOD_EMULATOR_SEED: String(opts.seed),
        RUNPOD_EMULATOR_RUN_MS: String(FAULTS.runMs),
        RUNPOD_EMULATOR_QUEUE_MS: String(FAULTS.queueMs),
        RUNPOD_EMULATOR_RETENTION_MS: String(FAULTS.retentionMs),
      },
      onOutput: (name, line) => {
        scan.line(name, line);
        if (outputFile) {
          appendFileSync(
            outputFile,
            `${new Date().toISOString().slice(11, 23)} [${name}] ${line}\n`,
          );
        }
      },
    });
    const api = new Api(stack.producerUrl, { api: secrets.API_TOKEN, admin: secrets.ADMIN_TOKEN });
    const emulator = new EmulatorAdmin(stack.emulatorUrl as string, ENDPOINT);
    const projects = Math.max(10, Math.min(200, Math.round(opts.n / 50)));
    const run: ChaosRun = {
      options: opts,
      settings: stack.settings,
      stack,
      api,
      emulator,
      scan,
      live,
      created: [],
      byId: new Map(),
      projects,
      dedupe: { concurrent: 0, later: 0, answers: {}, violations: [] },
      queueDuplicates: {},
      cancels: {},
      probes: [],
      probeSkips: {},
      retries: { calls: 0, answers: {}, jobsRetried: 0 },
      deadLetters: { seen: 0, replayAnswers: {} },
      cron: { calls: 0, answers: {} },
      gate: { states: {}, transitions: {}, last: null },
      delayWindows: [],
      outage: null,
      crash: null,
      stats: null,
      timings: {
        startedAt,
        stackUpAt: Date.now(),
        firstPostAt: 0,
        postsDoneAt: 0,
        activeEndAt: 0,
        drainedAt: null,
        endAt: 0,
      },
    };
    log(`stack up in ${((Date.now() - startedAt) / 1000).toFixed(1)} s`);
    await emulator.configure({ ...FAULTS, runDelayMs: 0, outage: false, outageUntilMs: 0 });
    return await scenario(run);
  } finally {
    for (const client of live) client.stop();
    await stack?.stop();
    if (previousLog === undefined) delete process.env.WRANGLER_LOG;
    else process.env.WRANGLER_LOG = previousLog;
    rmSync(tmp, { recursive: true, force: true });
  }
}

async function scenario(run: ChaosRun): Promise<Report> {
  const { api, scan, options: opts } = run;
  const random = prng(opts.seed);
  const users = Math.max(1, Math.ceil(run.projects / 4));

  // Live clients: operators, two single-project tickets, two tickets of three projects.
  const scopes: [string, LiveClient["scope"]][] = [
    ["operators (all projects)", { all: true }],
    ["project 1", { all: false, projectIds: [1] }],
    ["project 2", { all: false, projectIds: [2] }],
    ["projects 3,4,5", { all: false, projectIds: [3, 4, 5] }],
    ["projects 6,7,8", { all: false, projectIds: [6, 7, 8] }],
  ];
  for (const [name, scope] of scopes) run.live.push(new LiveClient(api, name, scope));
  for (const client of run.live) {
    client.onSnapshot = (at) => {
      for (const ticket of client.tickets) scan.addTicket(ticket);
      const crash = run.crash;
      // The first snapshot after the kill: the producer reaches the (new) consumer's objects.
      // It can come before restartConsumer() returns, which waits for the new one's /health.
      if (crash && at > crash.at && crash.reachableAt === null) crash.reachableAt = at;
    };
  }
  await Promise.all(run.live.map((client) => client.start()));
  for (const client of run.live) for (const ticket of client.tickets) scan.addTicket(ticket);
  const operators = run.live[0] as LiveClient;

  const stop = new AbortController();
  const activeDone = new AbortController();
  const loops: Promise<void>[] = [];
  const probes = new ProbeRunner(run, random);
  operators.onJob = (job) => probes.observe(job);
  try {
    loops.push(cronLoop(run, stop.signal));
    loops.push(statsLoop(run, stop.signal));
    loops.push(progressLoop(run, stop.signal));
    loops.push(delayWindowLoop(run, stop.signal));
    loops.push(retryLoop(run, activeDone.signal));
    loops.push(deadLetterLoop(run, activeDone.signal));

    const runId = randomBytes(4).toString("hex");
    const postPhaseMs = (opts.n / opts.postRatePerS) * 1000;
    const t0 = Date.now();
    run.timings.firstPostAt = t0;
    const tasks: Promise<void>[] = [];
    // The crash first: under `wrangler dev` the producer finds the restarted consumer only ~90 s
    // later (the dev registry keeps the killed one's entry until it is stale). The outage comes
    // once it has, so that what happens in it (cancels whose RunPod /cancel fails) is seen live.
    const crashed = crashAt(run, t0 + 0.3 * postPhaseMs);
    tasks.push(crashed);
    tasks.push(crashed.then(() => outageAt(run, t0 + 0.6 * postPhaseMs)));
    opts.log(
      `posting ${opts.n} jobs at ${opts.postRatePerS}/s over ${run.projects} projects; consumer ` +
        `crash at +${((0.3 * postPhaseMs) / 1000).toFixed(0)} s, outage at +${((0.6 * postPhaseMs) / 1000).toFixed(0)} s ` +
        "or once the producer reaches the restarted consumer",
    );

    const inflight = new Set<Promise<void>>();
    for (let index = 0; index < opts.n; index++) {
      const due = t0 + (index * 1000) / opts.postRatePerS;
      if (due > Date.now()) await sleep(due - Date.now());
      while (inflight.size >= POST_CONCURRENCY) await Promise.race(inflight);
      const projectId = 1 + (index % run.projects);
      const dup = random() < DUPLICATE_POST_SHARE;
      // The previous export of this project (index − projects), edited, under its key.
      const reexport = index >= run.projects && random() < REEXPORT_SHARE;
      const of = reexport ? index - run.projects : index;
      const body = reexport
        ? {
            ...bodyOf(of, projectId, users),
            params: { ...(bodyOf(of, projectId, users).params as object), edit: index },
          }
        : bodyOf(index, projectId, users);
      const job: CreatedJob = {
        index,
        key: `chaos-${runId}-${index}`,
        projectId,
        body: { ...body, supersede_key: `reel-${runId}-${of}` },
        id: null,
        postedAt: Date.now(),
        duplicate: dup ? (random() < 0.5 ? "concurrent" : "later") : null,
        cancel: null,
      };
      run.created.push(job);
      const cancelAfter = random() < CANCEL_SHARE ? 200 + random() * 12_000 : null;
      const laterAfter = 1000 + random() * 9000;
      // A second message for the job on the real queue, from right away to well after its end.
      const duplicateAfter = random() < QUEUE_DUPLICATE_SHARE ? random() * 15_000 : null;
      const posting: Promise<void> = createJob(run, job)
        .then(() => {
          if (job.id === null) return;
          if (job.duplicate === "later")
            tasks.push(sleep(laterAfter).then(() => postLater(run, job)));
          if (cancelAfter !== null) tasks.push(sleep(cancelAfter).then(() => cancelJob(run, job)));
          if (duplicateAfter !== null) {
            tasks.push(sleep(duplicateAfter).then(() => sendDuplicateMessage(run, job)));
          }
        })
        .finally(() => inflight.delete(posting));
      inflight.add(posting);
    }
    await Promise.all(inflight);
    run.timings.postsDoneAt = Date.now();
    opts.log(`posted in ${((run.timings.postsDoneAt - t0) / 1000).toFixed(1)} s`);
    for (let i = 0; i < tasks.length; i++) await tasks[i];
    activeDone.abort();
    run.timings.activeEndAt = Date.now();
    opts.log("faults over; draining…");

    const deadline = run.timings.activeEndAt + opts.drainTimeoutMs;
    while (Date.now() < deadline) {
      const jobs = run.stats?.jobs;
      const made = run.created.filter((job) => job.id !== null).length;
      if (jobs && (run.stats?.at ?? 0) > run.timings.activeEndAt) {
        const active = (jobs.pending ?? 0) + (jobs.processing ?? 0);
        if (active === 0 && (jobs.complete ?? 0) + (jobs.error ?? 0) >= made) {
          run.timings.drainedAt = run.stats?.at ?? Date.now();
          break;
        }
      }
      await sleep(500);
    }
    opts.log(
      run.timings.drainedAt === null
        ? `not drained after ${(opts.drainTimeoutMs / 1000).toFixed(0)} s`
        : `drained ${((run.timings.drainedAt - t0) / 1000).toFixed(1)} s after the first POST`,
    );
    probes.closed = true;
    await probes.idle(60_000);
    await sleep(3000); // last live messages and late webhooks land
    stop.abort();
    await Promise.all(loops);
    opts.log("checking…");
    const report = await verify(run);
    run.timings.endAt = Date.now();
    return report;
  } finally {
    // Also when something above threw: no loop may outlive the run.
    probes.closed = true;
    activeDone.abort();
    stop.abort();
  }
}

/** One POST /exports (and its racing twin); 5xx and network errors are sent again, same key. */
async function createJob(run: ChaosRun, job: CreatedJob): Promise<void> {
  const post = () =>
    run.api.request("POST", "/exports", {
      body: job.body,
      headers: { "idempotency-key": job.key },
    });
  for (let attempt = 0; attempt < 8; attempt++) {
    const racing = job.duplicate === "concurrent" && attempt === 0;
    const answers = racing ? await Promise.all([post(), post()]) : [await post()];
    if (racing) run.dedupe.concurrent++;
    for (const answer of answers) bump(run.dedupe.answers, `first POST ${answer.status}`);
    const ids = new Set<string>();
    for (const answer of answers) {
      const id = (answer.json as { job?: Job } | undefined)?.job?.id;
      if ((answer.status === 200 || answer.status === 202) && id) ids.add(id);
    }
    if (ids.size > 1) {
      run.dedupe.violations.push(
        `Idempotency-Key ${job.key}: two racing POSTs created two jobs ${[...ids].join(", ")}`,
      );
    }
    if (racing && answers.every((answer) => answer.status === 202)) {
      run.dedupe.violations.push(`Idempotency-Key ${job.key}: both racing POSTs answered 202`);
    }
    const id = [...ids][0];
    if (id !== undefined) {
      job.id = id;
      job.postedAt = Date.now();
      run.byId.set(id, job);
      return;
    }
    if (answers.every((answer) => answer.status >= 400 && answer.status < 500)) return;
    await sleep(300 * (attempt + 1));
  }
}

/** The queue-duplicate stand-in: the same POST again, later; it must answer the same job. */
async function postLater(run: ChaosRun, job: CreatedJob): Promise<void> {
  run.dedupe.later++;
  const answer = await run.api.request("POST", "/exports", {
    body: job.body,
    headers: { "idempotency-key": job.key },
  });
  bump(run.dedupe.answers, `repeat POST ${answer.status}`);
  const id = (answer.json as { job?: Job } | undefined)?.job?.id;
  if (answer.status !== 200 || id !== job.id) {
    run.dedupe.violations.push(
      `Idempotency-Key ${job.key}: the repeat answered ${answer.status} with job ${id ?? "none"} ` +
        `(first: ${job.id})`,
    );
  }
}

/** Queues deliver at least once: one more `{"job_id"}` message on the stack's real queue. */
async function sendDuplicateMessage(run: ChaosRun, job: CreatedJob): Promise<void> {
  const answer = await run.api.request("POST", `${run.stack.r2WriterUrl}/queue/export-jobs`, {
    token: null,
    body: { job_id: job.id },
  });
  bump(run.queueDuplicates, String(answer.status));
}

async function cancelJob(run: ChaosRun, job: CreatedJob): Promise<void> {
  if (job.cancel) return;
  job.cancel = { at: Date.now(), status: 0, error: null };
  const answer = await run.api.request("POST", `/exports/${job.id}/cancel`, { body: {} });
  bump(run.cancels, String(answer.status));
  const after = (answer.json as { job?: Job } | undefined)?.job;
  job.cancel = { at: Date.now(), status: answer.status, error: after?.error ?? null };
}

/**
 * One outage of four breaker cooldowns: `/run`, `/status` and `/cancel` answer 503. Runs started
 * in the 2.5 s before it last 3.5 s, and the newest jobs still running are cancelled in it, so
 * that RunPod's `/cancel` fails and is retried later.
 */
async function outageAt(run: ChaosRun, at: number): Promise<void> {
  await sleep(Math.max(0, at - Date.now()));
  const restarted = run.crash?.restartedAt ?? Date.now();
  while (run.crash && run.crash.reachableAt === null && Date.now() < restarted + 180_000) {
    await sleep(500);
  }
  await sleep(5000);
  // Runs started just before the outage take longer, so that some are still running in it.
  await run.emulator.configure({ runMs: LONG_RUN_MS });
  await sleep(LONG_RUN_MS - 1000);
  const start = Date.now();
  await run.emulator.configure({ outageUntilMs: start + OUTAGE_MS, runMs: FAULTS.runMs });
  run.outage = { start, end: start + OUTAGE_MS };
  run.options.log(`outage: RunPod answers 503 for ${OUTAGE_MS / 1000} s`);
  const running = [...(run.live[0]?.view.values() ?? [])]
    .filter((job) => job.status === "processing" && job.runpod_job_id !== null)
    .sort((a, b) => (a.started_at ?? "").localeCompare(b.started_at ?? ""))
    .slice(-OUTAGE_CANCELS);
  await Promise.all(
    running.map(async (job) => {
      const created = run.byId.get(job.id);
      if (created) await cancelJob(run, created);
    }),
  );
  await sleep(Math.max(0, start + OUTAGE_MS - Date.now()));
}

async function crashAt(run: ChaosRun, at: number): Promise<void> {
  await sleep(Math.max(0, at - Date.now()));
  run.crash = { at: Date.now(), restartedAt: null, reachableAt: null };
  run.options.log("consumer: SIGKILL");
  await run.stack.crashConsumer();
  await sleep(2000);
  await run.stack.restartConsumer();
  run.crash.restartedAt = Date.now();
  run.options.log(
    `consumer: restarted in ${((run.crash.restartedAt - run.crash.at) / 1000).toFixed(1)} s`,
  );
}

/** The reconciler as a frequent cron: every 2 s, and every fifth time two passes at once. */
async function cronLoop(run: ChaosRun, signal: AbortSignal): Promise<void> {
  for (let tick = 0; !signal.aborted; tick++) {
    const started = Date.now();
    const once = async () => {
      run.cron.calls++;
      try {
        const res = await fetch(`${run.stack.consumerUrl}/__scheduled`, {
          signal: AbortSignal.timeout(60_000),
        });
        await res.arrayBuffer();
        bump(run.cron.answers, String(res.status));
      } catch {
        bump(run.cron.answers, "network");
      }
    };
    await Promise.all(tick % 5 === 4 ? [once(), once()] : [once()]);
    await pause(Math.max(0, CRON_EVERY_MS - (Date.now() - started)), signal);
  }
}

interface StatsAnswer {
  jobs: Record<string, number>;
  dispatch: { state: string } | null;
}

async function statsLoop(run: ChaosRun, signal: AbortSignal): Promise<void> {
  while (!signal.aborted) {
    const answer = await run.api.request("GET", "/stats", { token: "admin", timeoutMs: 10_000 });
    if (answer.status === 200) {
      const stats = answer.json as StatsAnswer;
      run.stats = { jobs: stats.jobs, at: Date.now() };
      const state = stats.dispatch?.state ?? "unknown";
      bump(run.gate.states, state);
      if (run.gate.last !== null && run.gate.last !== state) {
        bump(run.gate.transitions, `${run.gate.last}→${state}`);
      }
      run.gate.last = state;
    }
    await pause(1000, signal);
  }
}

async function progressLoop(run: ChaosRun, signal: AbortSignal): Promise<void> {
  while (!signal.aborted) {
    await pause(10_000, signal);
    if (signal.aborted) return;
    const jobs = run.stats?.jobs ?? {};
    const elapsed = ((Date.now() - run.timings.firstPostAt) / 1000).toFixed(0);
    const up = run.live.filter((client) => client.up).length;
    run.options.log(
      `+${elapsed} s: posted ${run.created.length}/${run.options.n}; pending ${jobs.pending ?? 0}, ` +
        `processing ${jobs.processing ?? 0}, complete ${jobs.complete ?? 0}, error ${jobs.error ?? 0}; ` +
        `gate ${run.gate.last ?? "?"}; live ${up}/${run.live.length} up`,
    );
  }
}

/**
 * Keeps the share of `/run` calls answered after the client's timeout near 5 %: while the
 * consumer has met fewer client timeouts than 5 % of the `/run` calls so far, a short window
 * opens in which the emulator answers `/run` after RUN_DELAY_MS (the run is created at once).
 */
async function delayWindowLoop(run: ChaosRun, signal: AbortSignal): Promise<void> {
  while (!signal.aborted) {
    await pause(1000, signal);
    if (signal.aborted) return;
    let calls: number;
    try {
      calls = total(await run.emulator.runAnswers());
    } catch {
      continue;
    }
    const timedOut = run.scan.counts["submission timed out"] ?? 0;
    if (calls < 20 || timedOut >= DELAYED_SHARE * calls) continue;
    const window = { start: Date.now(), end: 0 };
    run.delayWindows.push(window);
    try {
      await run.emulator.configure({ runDelayMs: RUN_DELAY_MS });
      await sleep(DELAY_WINDOW_MS);
    } finally {
      await run.emulator.configure({ runDelayMs: 0 }).catch(() => {});
      window.end = Date.now();
    }
  }
}

/**
 * Operators retrying what failed, by `error_prefix`, every 10 s while the faults go on and once
 * more when they end.
 */
async function retryLoop(run: ChaosRun, signal: AbortSignal): Promise<void> {
  for (let last = false; !last; ) {
    await pause(RETRY_EVERY_MS, signal);
    last = signal.aborted;
    for (const prefix of RETRY_PREFIXES) {
      run.retries.calls++;
      const answer = await run.api.request("POST", "/admin/jobs/retry", {
        token: "admin",
        body: { error_prefix: prefix, limit: 1000 },
      });
      bump(run.retries.answers, String(answer.status));
      run.retries.jobsRetried += (answer.json as { retried?: number } | undefined)?.retried ?? 0;
    }
  }
}

interface DeadLetter {
  id: string;
  replayed_at: string | null;
}

/** Dead letters, if any appear: replayed as an operator would. */
async function deadLetterLoop(run: ChaosRun, signal: AbortSignal): Promise<void> {
  const replayed = new Set<string>();
  while (!signal.aborted) {
    await pause(RETRY_EVERY_MS, signal);
    if (signal.aborted) return;
    const answer = await run.api.request("GET", "/dead-letters?limit=100", { token: "admin" });
    if (answer.status !== 200) continue;
    const letters = (answer.json as { dead_letters: DeadLetter[] }).dead_letters;
    for (const letter of letters) {
      if (replayed.has(letter.id)) continue;
      replayed.add(letter.id);
      run.deadLetters.seen++;
      if (letter.replayed_at) continue;
      const replay = await run.api.request("POST", `/dead-letters/${letter.id}/replay`, {
        token: "admin",
      });
      const code = (replay.json as { error?: { code?: string } } | undefined)?.error?.code;
      bump(
        run.deadLetters.replayAnswers,
        code ? `${replay.status} ${code}` : String(replay.status),
      );
    }
  }
}

interface ProbeTask {
  kind: "duplicate" | "stale" | "forged";
  jobId: string;
  runId: string;
  attempt: number;
  late: boolean;
  outOfOrder: boolean;
}

/**
 * The webhook faults the emulator cannot make: fed by the operators' live client, it re-posts
 * webhooks built from the emulator's run state and records what the producer answered.
 */
class ProbeRunner {
  closed = false;
  readonly #run: ChaosRun;
  readonly #random: () => number;
  /** job id → attempt → RunPod run id, as the live messages showed them. */
  readonly #runs = new Map<string, Map<number, string>>();
  readonly #done = new Set<string>();
  readonly #pending = new Set<Promise<void>>();
  #stale = 0;
  readonly #staleCap: number;
  #active = 0;
  readonly #queue: (() => Promise<void>)[] = [];

  constructor(run: ChaosRun, random: () => number) {
    this.#run = run;
    this.#random = random;
    this.#staleCap = Math.max(30, Math.round(run.options.n * 0.03));
  }

  observe(job: Job): void {
    if (this.closed) return;
    let attempts = this.#runs.get(job.id);
    if (job.runpod_job_id) {
      if (!attempts) {
        attempts = new Map();
        this.#runs.set(job.id, attempts);
      }
      attempts.set(job.attempt, job.runpod_job_id);
    }
    const runId = job.runpod_job_id;
    if (runId && TERMINAL.has(job.status) && unitHash(`${job.id}:dup`) < DUPLICATE_WEBHOOK_SHARE) {
      this.#schedule(`dup:${job.id}:${job.attempt}`, {
        kind: "duplicate",
        jobId: job.id,
        runId,
        attempt: job.attempt,
        late: unitHash(`${job.id}:late`) < 0.5,
        outOfOrder: unitHash(`${job.id}:ooo`) < 0.4,
      });
    }
    if (runId && job.status === "processing" && unitHash(`${job.id}:forge`) < FORGED_SHARE) {
      this.#schedule(`forged:${job.id}`, {
        kind: "forged",
        jobId: job.id,
        runId,
        attempt: job.attempt,
        late: false,
        outOfOrder: false,
      });
    }
    for (const [attempt, oldRun] of attempts ?? []) {
      if (attempt >= job.attempt || this.#stale >= this.#staleCap) continue;
      const key = `stale:${job.id}:${attempt}`;
      if (this.#done.has(key)) continue;
      this.#stale++;
      this.#schedule(key, {
        kind: "stale",
        jobId: job.id,
        runId: oldRun,
        attempt,
        late: false,
        outOfOrder: false,
      });
    }
  }

  /** Waits until every scheduled probe ran (or `ms` passed). */
  async idle(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while ((this.#pending.size > 0 || this.#queue.length > 0) && Date.now() < deadline) {
      await sleep(200);
    }
  }

  #schedule(key: string, task: ProbeTask): void {
    if (this.#done.has(key)) return;
    this.#done.add(key);
    const delay = task.late ? 3000 + this.#random() * 17_000 : this.#random() * 300;
    const pending: Promise<void> = sleep(delay)
      .then(() => this.#enqueue(() => this.#probe(task)))
      .finally(() => this.#pending.delete(pending));
    this.#pending.add(pending);
  }

  /** At most 4 probes at once, so they stay a small share of the producer's load. */
  #enqueue(work: () => Promise<void>): Promise<void> {
    return new Promise((resolve) => {
      this.#queue.push(async () => {
        try {
          await work();
        } catch (error) {
          bump(this.#run.probeSkips, `probe failed: ${String(error).slice(0, 60)}`);
        }
        resolve();
      });
      this.#drain();
    });
  }

  #drain(): void {
    while (this.#active < 4 && this.#queue.length > 0) {
      const next = this.#queue.shift() as () => Promise<void>;
      this.#active++;
      void next().finally(() => {
        this.#active--;
        this.#drain();
      });
    }
  }

  async #post(
    kind: ProbeKind,
    jobId: string,
    url: string,
    body: unknown,
    before: Job | null,
    expect: "unchanged" | "401" | "any" | "204",
  ): Promise<void> {
    const answer = await this.#run.api.request("POST", url, { token: null, body });
    const applied = (answer.json as { applied?: boolean } | undefined)?.applied ?? null;
    const state = before
      ? `${before.status} attempt ${before.attempt} v${before.version}; URL attempt ${attemptOfUrl(url)}`
      : "?";
    let violation: string | null = null;
    if (expect === "401" && answer.status !== 401) {
      violation = `a forged webhook answered ${answer.status} (applied ${applied}), not 401`;
    } else if (expect === "unchanged" && (answer.status !== 200 || applied === true)) {
      violation = `answered ${answer.status} applied=${applied} where nothing may change`;
    } else if (expect === "204" && answer.status !== 204) {
      violation = `a progress replay answered ${answer.status}, not 204`;
    } else if (expect === "any" && answer.status !== 200) {
      violation = `answered ${answer.status}, not 200`;
    }
    this.#run.probes.push({
      kind,
      jobId,
      status: answer.status,
      applied,
      before: state,
      violation,
    });
  }

  async #probe(task: ProbeTask): Promise<void> {
    const { api, emulator } = this.#run;
    const runState = await emulator.run(task.runId);
    if (!runState?.webhook) {
      bump(this.#run.probeSkips, `${task.kind}: run unknown to the emulator`);
      return;
    }
    const url = runState.webhook;
    const urlAttempt = attemptOfUrl(url);
    const read = await api.request("GET", `/exports/${task.jobId}`);
    const before = (read.json as { job?: Job } | undefined)?.job ?? null;
    if (!before) {
      bump(this.#run.probeSkips, `${task.kind}: job unreadable (${read.status})`);
      return;
    }
    // News of a finished job, or of another attempt than the current one, must change nothing.
    const settled = TERMINAL.has(before.status) || before.attempt !== urlAttempt;
    if (task.kind === "duplicate") {
      const terminalRun = ["COMPLETED", "FAILED", "TIMED_OUT"].includes(runState.status);
      if (!terminalRun) {
        bump(this.#run.probeSkips, "duplicate: run not finished");
        return;
      }
      await this.#post(
        task.late ? "late duplicate" : "duplicate",
        task.jobId,
        url,
        statusObjectOf(runState),
        before,
        settled ? "unchanged" : "any",
      );
      if (task.outOfOrder) {
        await this.#post(
          "out-of-order IN_PROGRESS",
          task.jobId,
          url,
          { id: runState.id, status: "IN_PROGRESS", output: { progress: 50 } },
          before,
          settled ? "unchanged" : "any",
        );
        const progressUrl = runState.input.progress_url;
        if (typeof progressUrl === "string" && settled) {
          await this.#post(
            "progress replay",
            task.jobId,
            progressUrl,
            { progress: 10 },
            before,
            "204",
          );
        }
      }
      return;
    }
    if (task.kind === "stale") {
      if (before.attempt === urlAttempt) {
        bump(this.#run.probeSkips, "stale: attempt still current");
        return;
      }
      await this.#post(
        "stale attempt COMPLETED",
        task.jobId,
        url,
        {
          id: runState.id,
          status: "COMPLETED",
          output: { output_video_key: `exports/${before.project_id}/${before.id}.mp4` },
          executionTime: 200,
        },
        before,
        "unchanged",
      );
      if (runState.status !== "IN_QUEUE" && runState.status !== "IN_PROGRESS") {
        await this.#post(
          "stale attempt replay",
          task.jobId,
          url,
          statusObjectOf(runState),
          before,
          "unchanged",
        );
      }
      return;
    }
    // Forged: a COMPLETED for the current run with signatures that must not hold.
    const body = {
      id: runState.id,
      status: "COMPLETED",
      output: { output_video_key: `exports/${before.project_id}/${before.id}.mp4` },
    };
    const forged = new URL(url);
    forged.searchParams.set("sig", randomBytes(32).toString("hex"));
    await this.#post("forged: random sig", task.jobId, forged.toString(), body, before, "401");
    const unsigned = new URL(url);
    unsigned.searchParams.delete("sig");
    await this.#post("forged: no sig", task.jobId, unsigned.toString(), body, before, "401");
    const progressSig = runState.input.progress_url
      ? new URL(runState.input.progress_url).searchParams.get("sig")
      : null;
    if (progressSig) {
      const withProgressSig = new URL(url);
      withProgressSig.searchParams.set("sig", progressSig);
      await this.#post(
        "forged: progress sig",
        task.jobId,
        withProgressSig.toString(),
        body,
        before,
        "401",
      );
    }
    const otherAttempt = new URL(url);
    otherAttempt.searchParams.set("attempt", String((urlAttempt ?? 0) + 1));
    await this.#post(
      "forged: other attempt",
      task.jobId,
      otherAttempt.toString(),
      body,
      before,
      "401",
    );
  }
}
