// `npm run fairness`: many users behind a small GPU fleet, on the local stack. The emulator plays
// a RunPod endpoint with 3 workers and a first-in first-out queue behind them (1 s runs); the
// dispatcher holds the backlog (RUNPOD_MAX_IN_FLIGHT = CAP, below) and gives each
// freed slot to the user that has had the least. Each scenario runs twice in one stack, with the
// cap and with it off (RUNPOD_MAX_IN_FLIGHT = 1000, every job submitted at once), by restarting.
//
//   1. one user's 120-job backlog, then 2 s later one job of another user: that job's wait from
//      its POST to its run starting at RunPod (target ≤ 2 run lengths with the cap);
//   2. two users with 40 jobs each at once: the share of GPU starts of one of them while both
//      wait (target 0.5 ± 0.1), and GPU idle time while jobs wait (target < 5 % of the drain);
//   3. D1 bytes per job, measured on the local database file, and days until 10 GB at 10,000
//      and 100,000 exports a day;
//   4. lanes: one user's 100 batch exports, then that user's interactive preview: the preview's
//      wait, against the same with every job standard (target ≤ 2 run lengths with lanes).
// Prints a table and writes bench/fairness.json.
import { copyFileSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import os from "node:os";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { type LocalStack, startLocalStack } from "../scripts/local-stack.ts";
import { writeResults } from "./support.ts";

const ENDPOINT = "fairness-endpoint";
const RUN_MS = 1000;
const WORKERS = 3;
/**
 * The cap: the workers, plus enough queued at RunPod to cover the dispatch latency (a freed slot
 * reaches RunPod through the webhook, the dispatcher and a queue batch: about a second locally,
 * as long as these 1 s runs). FAIRNESS_CAP overrides it.
 */
const CAP = Number(process.env.FAIRNESS_CAP ?? 2 * WORKERS);
const PORTS = { producer: 34787, consumer: 34788, emulator: 34790, inspectors: [34229, 34230] };
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface EmulatorJob {
  input: { export_job_id?: string };
  submittedAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

let stack: LocalStack | null = null;
const tmp = mkdtempSync(path.join(os.tmpdir(), "reel-fairness-"));
const logs: string[] = [];

const portFree = (port: number) =>
  new Promise<boolean>((resolve) => {
    const server = createServer().once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });

async function start(maxInFlight: number, name: string): Promise<LocalStack> {
  const ports = [PORTS.producer, PORTS.consumer, PORTS.emulator, PORTS.emulator + 1, 34231];
  for (let i = 0; !(await Promise.all(ports.map(portFree))).every(Boolean); i++) {
    if (i >= 90) throw new Error(`ports ${ports.join(", ")} are not free`);
    await sleep(1000);
  }
  stack = await startLocalStack({
    producerPort: PORTS.producer,
    consumerPort: PORTS.consumer,
    emulatorPort: PORTS.emulator,
    inspectorPorts: [PORTS.inspectors[0] as number, PORTS.inspectors[1] as number],
    r2WriterInspectorPort: 34231,
    persistTo: path.join(tmp, name, ".wrangler/state"),
    settings: {
      RUNPOD_ENDPOINT_ID: ENDPOINT,
      RUNPOD_MAX_IN_FLIGHT: String(maxInFlight),
      POLL_AFTER_S: "5",
      PENDING_GRACE_S: "60",
    },
    emulatorEnv: {
      RUNPOD_EMULATOR_MAX_WORKERS: String(WORKERS),
      RUNPOD_EMULATOR_RUN_MS: String(RUN_MS),
      RUNPOD_EMULATOR_QUEUE_MS: "10",
      RUNPOD_EMULATOR_PROGRESS_STEPS: "50",
      RUNPOD_EMULATOR_LOG: "0",
    },
    onOutput: (who, line) => {
      logs.push(`[${who}] ${line}`);
      if (logs.length > 500) logs.shift();
    },
  });
  return stack;
}

async function stop(): Promise<void> {
  await stack?.stop();
  stack = null;
}

async function createJobs(
  s: LocalStack,
  userId: number,
  count: number,
  priority = "standard",
): Promise<Map<string, number>> {
  const created = new Map<string, number>();
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next += 1;
      const sentAt = Date.now();
      for (let attempt = 0; ; attempt++) {
        const res = await fetch(`${s.producerUrl}/exports`, {
          method: "POST",
          headers: {
            authorization: `Bearer ${s.settings.API_TOKEN}`,
            "content-type": "application/json",
          },
          body: JSON.stringify({
            project_id: userId * 1000 + (next % 5),
            user_id: userId,
            type: "overlay",
            input_video_key: "uploads/demo/sample.mp4",
            // Distinct params: identical exports would be reused instead of run.
            params: { highlight_regions: [{ start_time: 1, end_time: 2 }], n: crypto.randomUUID() },
            priority,
          }),
        });
        if (res.status === 202) {
          created.set(((await res.json()) as { job: { id: string } }).job.id, sentAt);
          break;
        }
        if (attempt >= 5) throw new Error(`POST /exports answered ${res.status}`);
      }
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  return created;
}

async function emulatorJobs(s: LocalStack): Promise<EmulatorJob[]> {
  const res = await fetch(`${s.emulatorUrl}/__emulator/jobs?endpoint=${ENDPOINT}`);
  return ((await res.json()) as { jobs: EmulatorJob[] }).jobs;
}

/** Waits until every job has finished at RunPod (or the time runs out). */
async function drain(s: LocalStack, jobs: number, limitMs: number): Promise<EmulatorJob[]> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const runs = await emulatorJobs(s);
    const done = runs.filter((run) => run.finishedAt !== null).length;
    if (done >= jobs || Date.now() > deadline) return runs;
    // The reconciler as the cron would run it (wrangler dev has no cron).
    await fetch(`${s.consumerUrl}/__scheduled`).catch(() => {});
    await sleep(1000);
  }
}

const ms = (text: string | null) => (text ? Date.parse(text) : Number.NaN);

async function lateUser(maxInFlight: number, name: string) {
  const s = await start(maxInFlight, name);
  try {
    const backlog = await createJobs(s, 1, 120);
    await sleep(2000);
    const single = await createJobs(s, 2, 1);
    const [singleId, postedAt] = [...single.entries()][0] as [string, number];
    const runs = await drain(s, 121, 240_000);
    const run = runs.find((r) => r.input.export_job_id === singleId);
    const waitMs = run?.startedAt ? ms(run.startedAt) - postedAt : Number.NaN;
    const peakQueued = Math.max(
      ...runs.map(
        (r) =>
          runs.filter(
            (o) =>
              ms(o.submittedAt) <= ms(r.submittedAt) &&
              (o.startedAt === null || ms(o.startedAt) > ms(r.submittedAt)),
          ).length,
      ),
    );
    return { waitMs, runs: runs.length, backlog: backlog.size, peakQueuedAtRunPod: peakQueued };
  } finally {
    await stop();
  }
}

/**
 * One user's 100-job batch, then 2 s later that same user's preview: its wait from POST to its run
 * starting at RunPod. With lanes the batch is `batch` and the preview `interactive`; without,
 * both are `standard` (one lane: fairness between users cannot help, it is the same user).
 */
async function previewBehindBatch(lanes: boolean, name: string) {
  const s = await start(CAP, name);
  try {
    await createJobs(s, 5, 100, lanes ? "batch" : "standard");
    await sleep(2000);
    const single = await createJobs(s, 5, 1, lanes ? "interactive" : "standard");
    const [singleId, postedAt] = [...single.entries()][0] as [string, number];
    const runs = await drain(s, 101, 240_000);
    const run = runs.find((r) => r.input.export_job_id === singleId);
    return { waitMs: run?.startedAt ? ms(run.startedAt) - postedAt : Number.NaN };
  } finally {
    await stop();
  }
}

async function twoUsers(maxInFlight: number, name: string) {
  const s = await start(maxInFlight, name);
  try {
    const emptyDbBytes = dbBytes(s.persistTo);
    const [a, b] = await Promise.all([createJobs(s, 3, 40), createJobs(s, 4, 40)]);
    const first = Math.min(...[...a.values(), ...b.values()]);
    const runs = await drain(s, 80, 240_000);
    const starts = runs
      .filter((r) => r.startedAt)
      .sort((x, y) => ms(x.startedAt) - ms(y.startedAt));
    // While both wait: until one of them has no job left to start.
    const lastA = Math.max(
      ...starts.filter((r) => a.has(r.input.export_job_id ?? "")).map((r) => ms(r.startedAt)),
    );
    const lastB = Math.max(
      ...starts.filter((r) => b.has(r.input.export_job_id ?? "")).map((r) => ms(r.startedAt)),
    );
    const bothUntil = Math.min(lastA, lastB);
    const both = starts.filter((r) => ms(r.startedAt) <= bothUntil);
    const shareA = both.filter((r) => a.has(r.input.export_job_id ?? "")).length / both.length;
    // GPU idle time while jobs wait: worker-seconds unused between the first start and the last.
    const end = Math.max(...runs.map((r) => ms(r.finishedAt)));
    const begin = Math.min(...starts.map((r) => ms(r.startedAt)));
    const busy = runs.reduce((sum, r) => sum + (ms(r.finishedAt) - ms(r.startedAt) || 0), 0);
    const lastStart = Math.max(...starts.map((r) => ms(r.startedAt)));
    const capacityWhileWaiting = WORKERS * (lastStart - begin + RUN_MS);
    const busyWhileWaiting = runs.reduce(
      (sum, r) =>
        sum + Math.max(0, Math.min(ms(r.finishedAt), lastStart + RUN_MS) - ms(r.startedAt)),
      0,
    );
    const idleShare = 1 - busyWhileWaiting / capacityWhileWaiting;
    return {
      shareA,
      idleShare,
      drainMs: end - first,
      busyMs: busy,
      dbBytesPerJob: (dbBytes(s.persistTo) - emptyDbBytes) / (a.size + b.size),
      jobs: a.size + b.size,
    };
  } finally {
    await stop();
  }
}

/**
 * The local D1 database's size: a copy of its SQLite file and write-ahead log, checkpointed, as
 * page_count × page_size (the log alone would count every page written, not what is kept).
 */
function dbBytes(persistTo: string): number {
  const dir = path.join(persistTo, "v3/d1/miniflare-D1DatabaseObject");
  const file = readdirSync(dir).find(
    (name) => name.endsWith(".sqlite") && name !== "metadata.sqlite",
  );
  if (!file) return 0;
  const copy = mkdtempSync(path.join(os.tmpdir(), "reel-d1-size-"));
  try {
    for (const suffix of ["", "-wal", "-shm"]) {
      if (existsSync(path.join(dir, file + suffix))) {
        copyFileSync(path.join(dir, file + suffix), path.join(copy, `db.sqlite${suffix}`));
      }
    }
    const db = new DatabaseSync(path.join(copy, "db.sqlite"));
    db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    const pages = db.prepare("PRAGMA page_count").get() as { page_count: number };
    const size = db.prepare("PRAGMA page_size").get() as { page_size: number };
    db.close();
    return pages.page_count * size.page_size;
  } finally {
    rmSync(copy, { recursive: true, force: true });
  }
}

const results: Record<string, unknown> = {};
process.on("SIGINT", async () => {
  await stop();
  rmSync(tmp, { recursive: true, force: true });
  process.exit(130);
});

try {
  const capped = await lateUser(CAP, "late-capped");
  const uncapped = await lateUser(1000, "late-uncapped");
  const sharedCapped = await twoUsers(CAP, "two-capped");
  const sharedUncapped = await twoUsers(1000, "two-uncapped");
  const withLanes = await previewBehindBatch(true, "preview-lanes");
  const withoutLanes = await previewBehindBatch(false, "preview-one-lane");
  // D1 bytes per job: the database after 80 finished jobs with their timelines, minus its size
  // right after the migrations.
  const perJob = sharedCapped.dbBytesPerJob;
  const daysTo10GB = (perDay: number) => (10 * 1024 ** 3) / (perJob * perDay);
  Object.assign(results, {
    cap: CAP,
    machine: `${os.cpus().length} × ${os.cpus()[0]?.model ?? "?"}, ${Math.round(os.totalmem() / 1024 ** 3)} GiB`,
    late_user_wait_capped_ms: {
      value: Math.round(capped.waitMs),
      target: `≤ ${2 * RUN_MS}`,
      pass: capped.waitMs <= 2 * RUN_MS,
    },
    late_user_wait_uncapped_ms: {
      value: Math.round(uncapped.waitMs),
      note: "every job submitted at once: RunPod's FIFO",
    },
    peak_queued_at_runpod: {
      capped: capped.peakQueuedAtRunPod,
      uncapped: uncapped.peakQueuedAtRunPod,
    },
    share_of_one_user_capped: {
      value: Number(sharedCapped.shareA.toFixed(3)),
      target: "0.5 ± 0.1",
      pass: Math.abs(sharedCapped.shareA - 0.5) <= 0.1,
    },
    share_of_one_user_uncapped: { value: Number(sharedUncapped.shareA.toFixed(3)) },
    gpu_idle_while_waiting_capped: {
      value: Number(sharedCapped.idleShare.toFixed(3)),
      target: "< 0.05",
      pass: sharedCapped.idleShare < 0.05,
    },
    gpu_idle_while_waiting_uncapped: { value: Number(sharedUncapped.idleShare.toFixed(3)) },
    drain_ms: { capped: sharedCapped.drainMs, uncapped: sharedUncapped.drainMs },
    preview_behind_own_batch_lanes_ms: {
      value: Math.round(withLanes.waitMs),
      target: `≤ ${2 * RUN_MS} (about one run)`,
      pass: withLanes.waitMs <= 2 * RUN_MS,
      note: "one user's 100 batch exports, then that user's interactive one",
    },
    preview_behind_own_batch_one_lane_ms: {
      value: Math.round(withoutLanes.waitMs),
      note: "the same, every job standard: the preview waits for the user's own backlog",
    },
    d1_bytes_per_job: {
      value: Math.round(perJob),
      note: "local D1 (checkpointed) after 80 finished jobs with their timelines",
    },
    days_to_10gb_at_10k_per_day: Math.round(daysTo10GB(10_000)),
    days_to_10gb_at_100k_per_day: Math.round(daysTo10GB(100_000)),
  });
  writeResults(path.join(root, "bench/fairness.json"), results);
  console.table(
    Object.fromEntries(Object.entries(results).map(([k, v]) => [k, JSON.stringify(v)])),
  );
} catch (error) {
  console.error(logs.slice(-40).join("\n"));
  console.error(error);
  process.exitCode = 1;
} finally {
  await stop();
  rmSync(tmp, { recursive: true, force: true });
}
