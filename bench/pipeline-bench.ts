// npm run bench: the pipeline's figures side by side in one run (see bench/README.md). This entry
// point starts the stack and the bench Worker, runs the figures (bench/figures/, one module each)
// in the order of their phases, then records their rows in the order of the README's figures,
// prints the table and writes bench/results.json.
import { rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { type LocalStack, type StackOptions, startLocalStack } from "../scripts/local-stack.ts";
import { type ArchiveRate, measureArchiveRate, reportArchiveRate } from "./archive-rate.ts";
import { type LifeRows, rowsPerJob, SEED_JOBS, Seeder, startBenchWorker } from "./d1-figures.ts";
import { reportCost } from "./figures/cost-per-million.ts";
import { reportD1Rows } from "./figures/d1-rows.ts";
import {
  type DispatchLatency,
  measureDispatchLatency,
  reportDispatchLatency,
} from "./figures/dispatch-latency.ts";
import {
  type DispatchPacing,
  measureDispatchPacing,
  reportDispatchPacing,
} from "./figures/dispatch-pacing.ts";
import { type Fanout, measureFanout, reportFanout } from "./figures/fanout.ts";
import { type LiveLatency, measureLiveLatency, reportLiveLatency } from "./figures/live-latency.ts";
import { measurePlans, type Plans, reportPlans } from "./figures/plans.ts";
import {
  measureProducerOverhead,
  type ProducerOverhead,
  reportProducerOverhead,
  startBare,
} from "./figures/producer-overhead.ts";
import { printTable, results } from "./figures/results.ts";
import {
  ALL_PORTS,
  consumers,
  DEPLOYED_SUBMIT_CONCURRENCY,
  ENDPOINTS,
  elapsed,
  emulatorConfig,
  LONG_RUN_MS,
  load,
  loads,
  logs,
  note,
  onLine,
  PORTS,
  producer,
  R,
  type Run,
  started,
  swapConsumer,
  tmp,
  warmUp,
} from "./figures/stack.ts";
import {
  type Guarded,
  machine,
  median,
  quantile,
  root,
  waitForPorts,
  writeResults,
} from "./support.ts";

const RESULTS_FILE = path.join(root, "bench/results.json");
/** The stack's notable lines of the last run (*.log is ignored by git). */
const LOG_FILE = path.join(root, "bench/last-run.log");

// ---- process bookkeeping ------------------------------------------------------------------------

const stateDir = path.join(tmp, "stack", "state");
let benchWorker: Guarded | null = null;
let stack: Promise<LocalStack> | null = null;
let interrupted = false;

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

// ---- the run ----------------------------------------------------------------------------------

const mach = machine();

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
    // The reconciler runs only when the bench calls it (a stall, see burst() in
    // figures/dispatch-pacing.ts): then it re-enqueues
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
  const run: Run = {
    s,
    seeder,
    consumer: { name: "consumer", url: s.consumerUrl, stop: () => s.crashConsumer() },
  };
  await emulatorConfig(s, ENDPOINTS.paced, { runRateLimitPerS: R, queueMs: 50, runMs: 400 });
  await warmUp(s, ENDPOINTS.paced, 700_000);
  const lat = await measureDispatchLatency(run);
  const { paced, open } = await measureDispatchPacing(run); // and phase B: the gate off

  // Phase C: one batch of 100 messages, SUBMIT_CONCURRENCY 1 then 6.
  const fan = await measureFanout(run);

  // Phase D: one run in flight (every other job waits in the dispatcher): live status, then the
  // producer against the bare Worker while the consumer has next to nothing to do.
  seeder.release();
  run.consumer = await swapConsumer(s, run.consumer, "consumer-hold", 3, {
    RUNPOD_ENDPOINT_ID: ENDPOINTS.hold,
    RUNPOD_RUNS_PER_10S: "100000",
    RUNPOD_MAX_IN_FLIGHT: "1",
  });
  await emulatorConfig(s, ENDPOINTS.hold, { runMs: LONG_RUN_MS, runRateLimitPerS: 0 });
  const liveJob = await warmUp(s, ENDPOINTS.hold, 740_000);
  const bareUrl = await startBare(s);
  await seeder.hold();
  const live = await measureLiveLatency(run, liveJob);
  const overhead = await measureProducerOverhead(run, bareUrl);

  // The rest of the seeding, alone, then the plans.
  seeder.release();
  const stopping = run.consumer.stop().then(() => stopStack());
  note(`seeding the rest of ${SEED_JOBS.toLocaleString()} jobs… `);
  const seeded = await seeder.done;
  await stopping;
  console.log(`done (${seeded.seconds.toFixed(0)} s of seeding in all; ${elapsed()})`);
  const plans = await measurePlans(worker);
  // The archive rate, on the bench Worker's own database and bucket, with the stack stopped.
  load("archive");
  note("archive rate… ");
  const archive = await measureArchiveRate(worker);
  console.log(`${Math.round(archive.configs[0]?.rate ?? 0)} jobs/s (${elapsed()})`);

  report({ lives, lat, paced, open, fan, live, overhead, plans, seeded, archive });
}

// ---- the report ---------------------------------------------------------------------------------

interface Measured extends DispatchPacing {
  lives: LifeRows[];
  lat: DispatchLatency;
  fan: Fanout;
  live: LiveLatency;
  overhead: ProducerOverhead;
  plans: Plans;
  seeded: Awaited<Seeder["done"]>;
  archive: ArchiveRate;
}

/** The figures' rows in the README's order, the table, then bench/results.json. */
function report(m: Measured): void {
  reportDispatchPacing(m);
  reportFanout(m.fan);
  reportProducerOverhead(m.overhead);
  reportDispatchLatency(m.lat);
  reportD1Rows(m.lives);
  reportPlans(m.plans, m.seeded);
  reportLiveLatency(m.live);
  reportCost(m.lat, m.lives);
  reportArchiveRate(m.archive);

  printTable();
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
