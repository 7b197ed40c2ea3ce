// The archive rate: how fast the reconciler's retention step (shared/archive.ts archiveFinished,
// the very code of consumer/reconciler.ts step 6) moves finished jobs from D1 to R2, on the bench
// Worker's ARCHIVE database and its local R2 bucket (Miniflare under wrangler dev), against the
// rate at which jobs finish at 100 exports/s. Figure 9 of `npm run bench`; alone (the bench Worker
// only, about two minutes): `node bench/archive-rate.ts`, which prints its rows and writes
// bench/archive-rate.json.
//
// Two configurations side by side, their rounds interleaved: as shipped (ARCHIVE_BATCH jobs a
// batch) and as it was before (50 a batch); either puts at most 6 objects at a time (a Worker
// invocation's connections). Each round seeds ROUND_JOBS finished jobs (not timed: one INSERT …
// SELECT, then their timeline as the state machine writes it for a run that completes: created,
// claimed, submitted, progress 25/50/75, completed — 7 events, version 7), then one archiving pass
// with no time limit archives them all; the pass is timed from Node (workerd's clock moves on I/O
// only), less an empty request's time. A configuration's rate is the median of its rounds.
//
// The cron runs every 60 s; step 6 goes on until ARCHIVE_UNTIL_MS (50 s) into the pass, so it has
// at least the time steps 1–5 may take (RECONCILE_BUDGET_MS, 25 s) and about 49 s when they are
// quick. The figure counts the 25 s only: rate × 25 s ÷ 60 s, against the finish rate (100 jobs/s),
// target ≥ 1.5. (Before, step 6 had what steps 1–5 left of their 25 s: 24 s when they were quick,
// one batch a pass when they were not.)
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ARCHIVE_UNTIL_MS, RECONCILE_BUDGET_MS } from "../consumer/reconciler.ts";
import { ARCHIVE_BATCH } from "../shared/archive.ts";
import { type BenchWorker, sql, startBenchWorker } from "./d1-figures.ts";
import { figure, printTable, results } from "./figures/results.ts";
import {
  type Guarded,
  jsonInit,
  machine,
  median,
  readJson,
  root,
  round,
  waitForPorts,
  writeResults,
} from "./support.ts";

/** Exports a second at the design load; at steady state as many jobs finish a second. */
export const FINISH_RATE_PER_S = 100;
const CRON_INTERVAL_S = 60;
const ROUNDS = 3;
const ROUND_JOBS = 6_000;
const ARCHIVE_AFTER_S = 30 * 86_400;

interface Config {
  name: "shipped" | "before";
  batch: number;
}
const CONFIGS: Config[] = [
  { name: "shipped", batch: ARCHIVE_BATCH },
  { name: "before", batch: 50 },
];

/** The seeded id of finished job i: scattered like random UUIDs (as d1-figures.ts seeds them). */
const ID = "printf('%08x-0000-4000-8000-%012x', (i * 2654435761) % 4294967296, i)";
const RANGE = "WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2)";

/** Jobs i..j, complete since 2020 (long past ARCHIVE_AFTER_S), with a completed run's timeline. */
const SEED = [
  // The insert trigger writes `created` (version 1) and job_counts, as the producer's insert does.
  `${RANGE}
   INSERT INTO export_jobs (id, project_id, user_id, type, status, progress, input_video_key,
     output_video_key, params, runpod_job_id, created_at, started_at, completed_at, due_at,
     attempt, version, pending_since, finished_at)
   SELECT ${ID}, 1 + i % 500, 1 + i % 500, 'overlay', 'complete', 100, 'uploads/in.mp4',
          'exports/' || i || '.mp4', '{"highlight_regions":[{"start_time":1,"end_time":3}]}',
          'run-' || i || '-u1', at, at, at, NULL, 1, 1, at, at
   FROM (SELECT i, strftime('%Y-%m-%d %H:%M:%f', '2020-01-01', '+' || i || ' seconds') AS at
         FROM n)`,
  `${RANGE},
   v(version, type, detail) AS (VALUES (2, 'claimed', NULL), (3, 'submitted', NULL),
     (4, 'progress', '25'), (5, 'progress', '50'), (6, 'progress', '75'), (7, 'completed', NULL))
   INSERT INTO export_job_events (job_id, version, type, at, attempt, runpod_job_id, detail)
   SELECT j.id, v.version, v.type, j.finished_at, 1,
          CASE WHEN v.type <> 'claimed' THEN j.runpod_job_id END, v.detail
   FROM n JOIN export_jobs j ON j.id = ${ID} CROSS JOIN v`,
  // No last_event: the version trigger writes no event.
  `${RANGE} UPDATE export_jobs SET version = 7 WHERE id IN (SELECT ${ID} FROM n)`,
];

interface Pass {
  archived: number;
  batches: number;
  worker_ms: number;
}

interface Round {
  archived: number;
  batches: number;
  seconds: number;
  rate: number;
}

export interface ArchiveRate {
  empty_ms: number;
  configs: (Config & { rounds: Round[]; rate: number })[];
}

const pass = (worker: BenchWorker, config: Config) =>
  readJson<Pass>(
    `${worker.url}/archive`,
    jsonInit("POST", {
      batch: config.batch,
      budgetMs: 3_600_000,
      archiveAfterS: ARCHIVE_AFTER_S,
    }),
  );

export async function measureArchiveRate(
  worker: BenchWorker,
  progress: (line: string) => void = () => {},
): Promise<ArchiveRate> {
  // An empty pass (nothing archivable yet): the request's own time, taken off each round.
  const empties: number[] = [];
  for (let i = 0; i < 5; i++) {
    const started = performance.now();
    await pass(worker, CONFIGS[0] as Config);
    empties.push(performance.now() - started);
  }
  const emptyMs = median(empties);
  const rounds = new Map<string, Round[]>(CONFIGS.map((config) => [config.name, []]));
  let next = 1;
  // A warm-up round first (not counted), then the configurations in turn.
  for (let r = -1; r < ROUNDS; r++) {
    for (const config of r < 0 ? CONFIGS.slice(0, 1) : CONFIGS) {
      const from = next;
      next += ROUND_JOBS;
      await sql(
        worker,
        "ARCHIVE",
        SEED.map((text) => ({ sql: text, binds: [from, next - 1] })),
      );
      const started = performance.now();
      const done = await pass(worker, config);
      const seconds = (performance.now() - started - emptyMs) / 1000;
      if (done.archived !== ROUND_JOBS) {
        throw new Error(`${config.name} archived ${done.archived} of ${ROUND_JOBS} jobs`);
      }
      const line = `${done.archived} jobs in ${seconds.toFixed(2)} s (${done.batches} batches)`;
      if (r < 0) {
        progress(`warm-up: ${line}`);
        continue;
      }
      rounds.get(config.name)?.push({ ...done, seconds, rate: done.archived / seconds });
      progress(`round ${r + 1}, ${config.name}: ${line}`);
    }
  }
  return {
    empty_ms: emptyMs,
    configs: CONFIGS.map((config) => {
      const own = rounds.get(config.name) ?? [];
      return { ...config, rounds: own, rate: median(own.map((x) => x.rate)) };
    }),
  };
}

/** Figure 9's rows, and `archive_rate_detail`. */
export function reportArchiveRate(measured: ArchiveRate): void {
  const [shipped, before] = measured.configs;
  if (!shipped || !before) throw new Error("both configurations are measured");
  const leastS = RECONCILE_BUDGET_MS / 1000;
  const perPass = shipped.rate * leastS;
  const sustained = perPass / CRON_INTERVAL_S;
  const ratio = sustained / FINISH_RATE_PER_S;
  const quickS = ARCHIVE_UNTIL_MS / 1000 - 1;
  const rates = (config: typeof shipped) => config.rounds.map((x) => round(x.rate, 0)).join(", ");
  figure("archive_rate", "9. archive rate while archiving (real code, local D1 + R2)", {
    value: shipped.rate,
    unit: "jobs/s",
    target: "—",
    pass: null,
    note:
      `median of ${shipped.rounds.length} rounds of ${ROUND_JOBS} finished jobs of 7 events ` +
      `archived by shared/archive.ts archiveFinished, ${shipped.batch} a batch, 6 puts at a ` +
      `time: ${rates(shipped)} jobs/s (timed from Node, less an empty request's time)`,
  });
  figure("archive_batch_50", "9. archive rate ÷ the same with 50 a batch (before)", {
    value: shipped.rate / before.rate,
    unit: "×",
    target: "—",
    pass: null,
    note:
      `50 a batch: ${round(before.rate, 0)} jobs/s (${rates(before)}), rounds interleaved with ` +
      "the shipped batch's on the same Worker",
  });
  figure("archive_keeps_up", "9. archive ÷ finish rate at 100 exports/s (cron)", {
    value: ratio,
    unit: "×",
    target: "≥ 1.5",
    pass: ratio >= 1.5,
    note:
      `step 6 has at least ${leastS} s of every ${CRON_INTERVAL_S} s (it goes on until ` +
      `${ARCHIVE_UNTIL_MS / 1000} s into the pass): ${round(shipped.rate, 0)} jobs/s × ` +
      `${leastS} s = ${round(perPass, 0)} jobs a pass, ${round(sustained, 0)} jobs/s sustained ` +
      `against ${FINISH_RATE_PER_S} jobs/s finishing; about ${quickS} s when steps 1–5 are ` +
      `quick: ${round((shipped.rate * quickS) / CRON_INTERVAL_S / FINISH_RATE_PER_S, 2)}×`,
  });
  results.archive_rate_detail = measured;
}

// ---- alone: node bench/archive-rate.ts --------------------------------------------------------

const PORT = 31160;

async function main(): Promise<void> {
  const tmp = mkdtempSync(path.join(os.tmpdir(), "reel-archive-rate-"));
  let proc: Guarded | null = null;
  const stop = async () => {
    await proc?.stop();
    rmSync(tmp, { recursive: true, force: true });
  };
  process.on("SIGINT", () => {
    void stop().finally(() => process.exit(130));
  });
  try {
    await waitForPorts([PORT, PORT + 1], (s) => console.log(s));
    const worker = await startBenchWorker(
      path.join(tmp, "state"),
      PORT,
      PORT + 1,
      () => {},
      (started) => {
        proc = started;
      },
    );
    console.log("archive rate on the bench Worker:");
    reportArchiveRate(await measureArchiveRate(worker, (line) => console.log(`  ${line}`)));
    printTable();
    results.machine = { ...machine(), load_avg_1m_at_end: round(os.loadavg()[0] ?? 0, 2) };
    results.generated_at = new Date().toISOString();
    writeResults(path.join(root, "bench/archive-rate.json"), results);
  } finally {
    await stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
