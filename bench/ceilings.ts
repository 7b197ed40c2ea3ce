// `npm run ceilings`: issue 23's "the ceilings, measured". What one D1 database, one dispatcher
// and the live hubs can take, from what the code sends them per job and what a job costs D1:
//
//   1. D1 statements per job on the hot path (create, claim, record, complete), counted from the
//      code (the model below) as a function of the consumer batch size B; progress and retention
//      apart. The lives of section 2 run exactly these statements.
//   2. D1 time per statement, measured: lives of jobs (insert → batch read → claim → record →
//      3 progress → webhook read → complete) run in waves through the bench Worker (bench/worker/,
//      a real local D1 binding), each wave at one B; then holds, Idempotency-Key lookups and the
//      archive of every finished job. A D1 database runs its statements one at a time, so one
//      database's ceiling is 1 ÷ (the sum of a job's statement times).
//   3. Bytes per job: D1's meta.size_after before and after the lives, ÷ the lives; the retention
//      that keeps a 10 GB database half full at 10, 100 and 1,000 exports/s.
//   4. Durable Object requests per job and per object class, counted from the code (no object
//      runs here), and what they come to per object at 100 and 1,000 exports/s.
//
// Prints a table (value, target, PASS / FAIL / info) and writes bench/ceilings.json. About two
// minutes on a 2-CPU machine. Sections 1 and 4 are computed; 2 and 3 are measured on this machine
// and extrapolated to rates it cannot run (a 2-core machine cannot run 1,000 exports/s live).
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ARCHIVE_BATCH } from "../shared/archive.ts";
import type { ConsumerEnv } from "../shared/env.ts";
import { LIVE_SHARDS } from "../shared/live-keys.ts";
import { consumerSettings } from "../shared/settings.ts";
import { DEAD_LETTER_SQL } from "../shared/sql/dead-letters.ts";
import { EVENT_SQL } from "../shared/sql/events.ts";
import { JOB_SQL } from "../shared/sql/jobs/catalog.ts";
import { STATS_SQL } from "../shared/sql/stats.ts";
import {
  type BenchWorker,
  type LifeRows,
  rowsPerJob,
  sql,
  startBenchWorker,
} from "./d1-figures.ts";
import { figure, printTable, results } from "./figures/results.ts";
import {
  type Guarded,
  machine,
  median,
  root,
  round,
  waitForPorts,
  writeResults,
} from "./support.ts";

const PORTS = { worker: 31540, inspector: 31541 } as const;
const RESULTS_FILE = path.join(root, "bench/ceilings.json");

// ---------------------------------------------------------------------------------------------
// What the deployment is configured with (wrangler.toml), and the platform's limits
// ---------------------------------------------------------------------------------------------

const wranglerToml = readFileSync(path.join(root, "wrangler.toml"), "utf8");
/** [env.consumer.vars] as written in wrangler.toml, so the figures follow the deployed settings. */
const consumerVars: Record<string, string> = Object.fromEntries(
  [
    ...(/\[env\.consumer\.vars\]\n([\s\S]*?)\n\[/.exec(wranglerToml)?.[1] ?? "").matchAll(
      /^(\w+)\s*=\s*"([^"]*)"/gm,
    ),
  ].map((m) => [m[1], m[2]]),
);
// Only the string vars are read by consumerSettings; the bindings are not needed for the numbers.
const settings = consumerSettings(consumerVars as unknown as ConsumerEnv);
/** The export-jobs consumer's max_batch_size (wrangler.toml): the deployed B. */
const DEPLOYED_B = Number(
  /queue = "export-jobs"\s*\nmax_batch_size = (\d+)/.exec(wranglerToml)?.[1] ?? "30",
);
const BATCH_SIZES = [1, 10, 30] as const;
/** Ours: at most 5 D1 statements per job on the hot path (issue 23). */
const STATEMENT_GOAL = 5;
const RATES = [10, 100, 1_000] as const;
/** D1's size limit per database (paid plan: 10 GB), and the share we keep free. */
const D1_LIMIT_BYTES = 10e9;
const D1_TARGET_BYTES = D1_LIMIT_BYTES / 2;
/** Durable Objects: about 1,000 requests/s per object (soft; the notes' figure, Cloudflare docs). */
const DO_SOFT_LIMIT_PER_S = 1_000;
/** Queues: 5,000 messages/s per queue. */
const QUEUE_LIMIT_PER_S = 5_000;
/**
 * `/run` per second per endpoint: the gate's pace (RUNPOD_RUNS_PER_10S), under RunPod's own limit
 * of 1,000 per 10 s per endpoint (../shared/notes/runpod-fleet.md).
 */
const runsPerSPerEndpoint = () => settings.gate.runsPer10s / 10;

// ---------------------------------------------------------------------------------------------
// 1. The hot path's D1 statements, from the code
// ---------------------------------------------------------------------------------------------

/**
 * Progress is counted apart. Each report reads the job first (a primary-key read) and writes D1
 * only when it crosses a multiple of 25, adopts a run, or the last write is PROGRESS_WRITE_S old
 * (shared/job-state.ts `recordProgress`); the lives report 25, 50 and 75 (as the emulator and the
 * GPU worker do), so each report is a read and a write. A handler that reports every 5 s over a
 * 60 s render: 12 reads and at most 4 writes (before the throttle: 12 writes of 3 rows each).
 */
export const PROGRESS_STATEMENTS_PER_JOB = 3;
/** The read before each report (byId). */
export const PROGRESS_READS_PER_JOB = 3;
const LIFE_PROGRESS = [25, 50, 75] as const;

type Per = "job" | "batch" | "refill";

interface HotStatement {
  step: string;
  statement: keyof typeof JOB_SQL;
  /** Once per job, once per consumer batch of B jobs, once per refill (one job per freed slot). */
  per: Per;
  source: string;
}

const insert: HotStatement = {
  step: "create: insert",
  statement: "insert",
  per: "job",
  source: "producer/routes/create-export.ts → createJob",
};
const batchRead: HotStatement = {
  step: "consumer: the batch's jobs",
  statement: "batchJobs",
  per: "batch",
  source: "consumer/process-jobs.ts processJobBatch → batchJobs",
};
const claimInBatch: HotStatement = {
  step: "consumer: claim",
  statement: "claim",
  per: "batch",
  source: "submitAdmitted → claimJobs (one statement for the batch's admitted jobs)",
};
const hold: HotStatement = {
  step: "consumer: hold the waiting",
  statement: "hold",
  per: "batch",
  source: "processJobBatch → holdJobs (when jobs wait)",
};
const claimOnRefill: HotStatement = {
  step: "refill: claim",
  statement: "claim",
  per: "refill",
  source: "consumer/index.ts Refill → submitAdmitted, no batch read (a freed slot admits one job)",
};
const tail: HotStatement[] = [
  {
    step: "consumer: record run",
    statement: "recordRun",
    per: "job",
    source: "submitAdmitted → recordRun",
  },
  {
    step: "webhook: read the job",
    statement: "byId",
    per: "job",
    source: "producer/routes/runpod-callbacks.ts runpodWebhook → getJob",
  },
  {
    step: "webhook: complete",
    statement: "completeRecordedRun",
    per: "job",
    source: "applyRunStatus → completeJob",
  },
];

/** The job's way through the consumer: admitted from its own batch, or held, then refilled. */
const PATHS = {
  admitted: {
    label: "admitted from its batch",
    statements: [insert, batchRead, claimInBatch, ...tail],
  },
  waits: {
    label: "waits in the dispatcher, then refill",
    statements: [insert, batchRead, hold, claimOnRefill, ...tail],
  },
} as const;
type PathName = keyof typeof PATHS;

const IDEMPOTENCY_LOOKUP: HotStatement = {
  step: "create: Idempotency-Key lookup (only with a key)",
  statement: "byIdempotencyKey",
  per: "job",
  source: "createExport → findJobByIdempotencyKey",
};

const share = (per: Per, b: number) => (per === "batch" ? 1 / b : 1);

function statementsPerJob(path: PathName, b: number): number {
  return PATHS[path].statements.reduce((n, s) => n + share(s.per, b), 0);
}

/** "4 + 2/B" */
function formula(path: PathName): string {
  const list = PATHS[path].statements;
  const ones = list.filter((s) => s.per !== "batch").length;
  const batches = list.filter((s) => s.per === "batch").length;
  return `${ones} + ${batches}/B`;
}

/**
 * Retention (shared/archive.ts), per ARCHIVE_BATCH finished jobs: the archivable page, one
 * batch() of the events' read and the unchanged check, one batch() of the count, the events'
 * delete, the dead letters' delete and the rows' delete (a batch's events in one range: a job has
 * about 7 versions, far under EVENT_ROWS_PER_STATEMENT).
 */
const ARCHIVE_STATEMENTS = [
  "archivable",
  "events.byJobs",
  "archivedUnchanged",
  "stats.addArchived",
  "events.deleteArchived",
  "deadLetters.deleteArchived",
  "deleteArchived",
] as const;
type ArchiveStatement = (typeof ARCHIVE_STATEMENTS)[number];

// ---------------------------------------------------------------------------------------------
// 4. Durable Object requests per job, from the code
// ---------------------------------------------------------------------------------------------

/**
 * Live publication (shared/live-publisher.ts, shared/live-hub.ts; counted by
 * test/workers/live-fanout.test.ts): one call per statement to each shard (`all:<project mod 16>`)
 * its rows touch — a job's created, submitted, 3 progress and completed one call each, its claim
 * one per shard a batch touches (at most LIVE_SHARDS of B) —; past the shard only to the hubs that
 * listen: the operators' hub (every change, when an operator is connected) and the project's hub
 * (its changes, when someone watches the project), and from a project's hub to each LiveChannel
 * (multi-project viewer) subscribed to it.
 */
export const LIVE = {
  /** Rows a job changes on the admitted path: created, claimed, submitted, progress ×3, completed. */
  changesPerJob: 7,
  /** One more when the job waits: the hold is published like a transition. */
  extraChangesWhenHeld: 1,
  shards: LIVE_SHARDS,
} as const;

type DoClass =
  | "Dispatcher"
  | "LiveHub (shard)"
  | "LiveHub (operators)"
  | "LiveHub (project)"
  | "LiveChannel";

interface DoCall {
  object: DoClass;
  call: string;
  perJob: number;
  when: string;
}

/** Shard calls per job: one per change, the claim shared by the shards a batch touches. */
const shardCallsPerJob = (path: PathName, b: number) =>
  LIVE.changesPerJob -
  1 +
  Math.min(b, LIVE.shards) / b +
  (path === "waits" ? LIVE.extraChangesWhenHeld : 0);

/** Durable Object requests per job on a path, at batch size b. */
function doCalls(path: PathName, b: number): DoCall[] {
  const changes = LIVE.changesPerJob + (path === "waits" ? LIVE.extraChangesWhenHeld : 0);
  const shard = shardCallsPerJob(path, b);
  const dispatcher: DoCall[] = [
    { object: "Dispatcher", call: "offerNew", perJob: 1, when: "create (producer/queue.ts)" },
    { object: "Dispatcher", call: "dispatch", perJob: 1 / b, when: "consumer batch" },
    path === "admitted"
      ? { object: "Dispatcher", call: "report", perJob: 1 / b, when: "batch that submitted" }
      : { object: "Dispatcher", call: "report", perJob: 1, when: "refill (one job)" },
    { object: "Dispatcher", call: "free", perJob: 1, when: "run end (job-state freeSlots)" },
  ];
  return [
    ...dispatcher,
    {
      object: "LiveHub (shard)",
      call: "publish",
      perJob: shard,
      when: `statement that changed the job (${changes} changes, the claim shared by the batch), spread over ${LIVE.shards} shards`,
    },
    {
      object: "LiveHub (operators)",
      call: "deliver",
      perJob: 0,
      when: `up to ${round(shard, 2)} per job while an operator is connected (fewer as calls coalesce), none otherwise`,
    },
    {
      object: "LiveHub (project)",
      call: "deliver",
      perJob: 0,
      when: `${changes} per job of the project while someone watches it, none otherwise`,
    },
    {
      object: "LiveChannel",
      call: "deliver",
      perJob: 0,
      when: `${changes} per multi-project viewer of the job's project (none assumed)`,
    },
  ];
}

const perClass = (calls: DoCall[], object: DoClass) =>
  calls.filter((c) => c.object === object).reduce((n, c) => n + c.perJob, 0);

// ---------------------------------------------------------------------------------------------
// 2 and 3. The lives, timed
// ---------------------------------------------------------------------------------------------

interface Statement {
  sql: string;
  binds?: unknown[];
}
type Answer = Awaited<ReturnType<typeof sql>>;

interface Sample {
  kind: string;
  /** The batch size the statement served (1 for a per-job statement). */
  b: number;
  /** Statements in the request. */
  k: number;
  request_ms: number;
  /** The mean of a request of k × `SELECT 1` just before and just after. */
  baseline_ms: number;
  /** Per statement: (request − baseline) ÷ k, the statement's own time above a trivial one's. */
  net_ms: number;
  /**
   * The same from the Worker's side: the mean of its wall_ms around each statement minus that of
   * the baselines' SELECT 1 (whole ms each, as workerd's clock ticks, but unbiased over many; it
   * leaves out the HTTP request and the answer's JSON). A cross-check, not used in the sums.
   */
  worker_net_ms: number;
  rows_read: number;
  rows_written: number;
}

const SELECT_ONE: Statement = { sql: "SELECT 1" };
/** Per (k, request time) of the baselines: the slope is a trivial statement's round trip. */
const baselines: { k: number; ms: number }[] = [];
const samples: Sample[] = [];

async function timeRequest(worker: BenchWorker, statements: Statement[]) {
  const started = performance.now();
  const answer = await sql(worker, "ROWS", statements);
  return { ms: performance.now() - started, answer };
}

/**
 * Runs `statements` in one request, timed from here (workerd's clock moves on I/O only, and D1's
 * local meta.duration is 0), between two requests of as many `SELECT 1`: the difference is what
 * the statements cost beyond a trivial one (the HTTP request, the Worker and the Worker → D1 call
 * are in both). `record` false: a warm-up, not kept.
 */
async function timed(
  worker: BenchWorker,
  kind: string,
  b: number,
  statements: Statement[],
  record: boolean,
): Promise<Answer> {
  const k = statements.length;
  const trivial = Array.from({ length: k }, () => SELECT_ONE);
  const before = await timeRequest(worker, trivial);
  const run = await timeRequest(worker, statements);
  const after = await timeRequest(worker, trivial);
  if (record) {
    const baseline = (before.ms + after.ms) / 2;
    baselines.push({ k, ms: before.ms }, { k, ms: after.ms });
    const sum = (answer: Answer, key: "rows_read" | "rows_written" | "wall_ms") =>
      answer.reduce((n, s) => n + (s.runs[0]?.[key] ?? 0), 0);
    const trivialWall = (sum(before.answer, "wall_ms") + sum(after.answer, "wall_ms")) / 2;
    samples.push({
      kind,
      b,
      k,
      request_ms: round(run.ms, 3),
      baseline_ms: round(baseline, 3),
      net_ms: (run.ms - baseline) / k,
      worker_net_ms: (sum(run.answer, "wall_ms") - trivialWall) / k,
      rows_read: sum(run.answer, "rows_read"),
      rows_written: sum(run.answer, "rows_written"),
    });
  }
  return run.answer;
}

/** Each statement's answer must hold `expected` rows (a claim of B jobs: B), or the run is void. */
function expectRows(answer: Answer, expected: (i: number) => number, what: string): void {
  answer.forEach((s, i) => {
    if (s.results.length !== expected(i)) {
      throw new Error(`${what} #${i}: ${s.results.length} rows, expected ${expected(i)}`);
    }
  });
}

interface LifeJob {
  id: string;
  project: number;
  key: string | null;
  runId: string;
}

let jobSeq = 0;
/**
 * New jobs shaped like the producer's: random UUIDs, 50 projects (user = project), the three
 * types, a params object with one highlight region, an Idempotency-Key (and its SHA-256 hex
 * hash) on 3 jobs in 10, as the pipeline bench's seeding.
 */
function newJobs(n: number, keyed: (i: number) => boolean): LifeJob[] {
  return Array.from({ length: n }, () => {
    const i = jobSeq++;
    return {
      id: crypto.randomUUID(),
      project: 1 + (i % 50),
      key: keyed(i) ? crypto.randomUUID() : null,
      runId: `${crypto.randomUUID()}-u1`,
    };
  });
}
const thirtyPercent = (i: number) => i % 10 < 3;

const TYPES = ["framing", "overlay", "annotate"] as const;
const insertOf = (job: LifeJob, i: number): Statement => ({
  sql: JOB_SQL.insert,
  binds: [
    job.id,
    job.project,
    job.project,
    TYPES[i % 3],
    `uploads/${job.project}/${job.id.slice(0, 8)}.mp4`,
    '{"highlight_regions":[{"start_time":1,"end_time":3}]}',
    job.key,
    job.key === null ? null : "a".repeat(64),
  ],
});

const chunks = <T>(list: readonly T[], size: number): T[][] =>
  Array.from({ length: Math.ceil(list.length / size) }, (_, i) =>
    list.slice(i * size, (i + 1) * size),
  );

/** Lives of `jobs`, consumer batches of `b`: every hot-path statement, each kind in one request. */
async function wave(
  worker: BenchWorker,
  jobs: LifeJob[],
  b: number,
  record: boolean,
): Promise<void> {
  const step = (kind: string, batch: number, statements: Statement[]) =>
    timed(worker, kind, batch, statements, record);
  const one = () => 1;
  expectRows(await step("insert", 1, jobs.map(insertOf)), one, "insert");
  const batches = chunks(jobs, b);
  const size = (i: number) => batches[i]?.length ?? 0;
  const ids = (batch: LifeJob[]) => JSON.stringify(batch.map((job) => job.id));
  expectRows(
    await step(
      "batchJobs",
      b,
      batches.map((batch) => ({ sql: JOB_SQL.batchJobs, binds: [ids(batch)] })),
    ),
    size,
    "batchJobs",
  );
  expectRows(
    await step(
      "claim",
      b,
      batches.map((batch) => ({
        sql: JOB_SQL.claim,
        binds: [
          `+${settings.claimTimeoutS} seconds`,
          crypto.randomUUID(),
          "ceilings-endpoint",
          ids(batch),
        ],
      })),
    ),
    size,
    "claim",
  );
  const poll = `+${settings.pollAfterS} seconds`;
  expectRows(
    await step(
      "recordRun",
      1,
      jobs.map((job) => ({ sql: JOB_SQL.recordRun, binds: [job.runId, poll, job.id, 1] })),
    ),
    one,
    "recordRun",
  );
  for (const p of LIFE_PROGRESS) {
    expectRows(
      await step(
        "progress",
        1,
        jobs.map((job) => ({ sql: JOB_SQL.progress, binds: [p, poll, p, job.id, 1, p] })),
      ),
      one,
      `progress ${p}`,
    );
  }
  expectRows(
    await step(
      "byId",
      1,
      jobs.map((job) => ({ sql: JOB_SQL.byId, binds: [job.id] })),
    ),
    one,
    "byId",
  );
  expectRows(
    await step(
      "completeRecordedRun",
      1,
      jobs.map((job) => ({
        sql: JOB_SQL.completeRecordedRun,
        binds: [3000, 10, `exports/${job.project}/${job.id}.mp4`, job.id, 1, job.runId],
      })),
    ),
    one,
    "completeRecordedRun",
  );
}

/** The database's size now (D1's meta.size_after of a trivial statement). */
async function sizeNow(worker: BenchWorker): Promise<number> {
  const [answer] = await sql(worker, "ROWS", [SELECT_ONE]);
  const size = answer?.runs[0]?.size_after;
  if (typeof size !== "number" || size <= 0) throw new Error("D1 gave no meta.size_after");
  return size;
}

/** Holds (the waiting path) at each B and Idempotency-Key lookups, on jobs just inserted. */
async function holdsAndKeys(worker: BenchWorker, perGroup: number): Promise<void> {
  for (const b of [...BATCH_SIZES, ...BATCH_SIZES, ...BATCH_SIZES]) {
    const jobs = newJobs(perGroup, () => true);
    expectRows(await timed(worker, "insert (keyed)", 1, jobs.map(insertOf), false), () => 1, "i");
    if (b === 1) {
      expectRows(
        await timed(
          worker,
          "byIdempotencyKey",
          1,
          jobs.map((job) => ({ sql: JOB_SQL.byIdempotencyKey, binds: [job.project, job.key] })),
          true,
        ),
        () => 1,
        "byIdempotencyKey",
      );
    }
    const batches = chunks(jobs, b);
    expectRows(
      await timed(
        worker,
        "hold",
        b,
        batches.map((batch) => ({
          sql: JOB_SQL.hold,
          binds: ["ceilings-endpoint", JSON.stringify(batch.map((job) => job.id))],
        })),
        true,
      ),
      (i) => batches[i]?.length ?? 0,
      "hold",
    );
  }
}

/** The archive of every finished job, in ARCHIVE_BATCH pages, each statement kind one request. */
async function archiveAll(worker: BenchWorker): Promise<{ batches: number; jobs: number }> {
  const [found] = await sql(worker, "ROWS", [
    {
      sql: `SELECT finished_at, id, version FROM export_jobs
            WHERE status IN ('complete', 'error') AND due_at IS NULL ORDER BY finished_at, id`,
    },
  ]);
  const rows = (found?.results ?? []) as Finished[];
  const all = chunks(rows, ARCHIVE_BATCH);
  // In three rounds (three samples of each statement), each the pages' statements in order.
  const perRound = Math.ceil(all.length / 3);
  for (let from = 0; from < all.length; from += perRound) {
    await archivePages(worker, all.slice(from, from + perRound), all[from - 1]?.at(-1));
  }
  return { batches: all.length, jobs: rows.length };
}

type Finished = { finished_at: string; id: string; version: number };

async function archivePages(
  worker: BenchWorker,
  pages: Finished[][],
  before: Finished | undefined,
): Promise<void> {
  const pairs = (page: Finished[]) =>
    JSON.stringify(page.map(({ id, version }) => ({ id, version })));
  const to = (page: Finished[]) => Math.max(...page.map((row) => row.version)) + 1;
  const size = (i: number) => pages[i]?.length ?? 0;
  const run = (kind: ArchiveStatement, statements: Statement[]) =>
    timed(worker, `archive: ${kind}`, ARCHIVE_BATCH, statements, true);
  expectRows(
    await run(
      "archivable",
      pages.map((_, i) => {
        const last = i === 0 ? before : pages[i - 1]?.at(-1);
        // Everything finished counts: the cutoff is a day ahead instead of ARCHIVE_AFTER_S back.
        return {
          sql: JOB_SQL.archivable,
          binds: [last?.finished_at ?? "", last?.id ?? "", "+86400 seconds", ARCHIVE_BATCH],
        };
      }),
    ),
    size,
    "archivable",
  );
  await run(
    "events.byJobs",
    pages.map((page) => ({
      sql: EVENT_SQL.byJobs,
      binds: [JSON.stringify(page.map((row) => row.id)), 0, to(page)],
    })),
  );
  expectRows(
    await run(
      "archivedUnchanged",
      pages.map((page) => ({ sql: JOB_SQL.archivedUnchanged, binds: [pairs(page)] })),
    ),
    size,
    "archivedUnchanged",
  );
  // The delete's order within each page's transaction: the count first, then what goes.
  await run(
    "stats.addArchived",
    pages.map((page) => ({ sql: STATS_SQL.addArchived, binds: [pairs(page)] })),
  );
  await run(
    "events.deleteArchived",
    pages.map((page) => ({ sql: EVENT_SQL.deleteArchived, binds: [pairs(page), 0, to(page)] })),
  );
  await run(
    "deadLetters.deleteArchived",
    pages.map((page) => ({ sql: DEAD_LETTER_SQL.deleteArchived, binds: [pairs(page)] })),
  );
  expectRows(
    await run(
      "deleteArchived",
      pages.map((page) => ({ sql: JOB_SQL.deleteArchived, binds: [pairs(page)] })),
    ),
    size,
    "deleteArchived",
  );
}

/** Least squares of the baselines: ms = fixed + perStatement × k. */
function roundTrip(): { fixed_ms: number; per_statement_ms: number } {
  const n = baselines.length;
  const mk = baselines.reduce((s, p) => s + p.k, 0) / n;
  const mm = baselines.reduce((s, p) => s + p.ms, 0) / n;
  const cov = baselines.reduce((s, p) => s + (p.k - mk) * (p.ms - mm), 0);
  const varK = baselines.reduce((s, p) => s + (p.k - mk) ** 2, 0);
  const slope = varK > 0 ? cov / varK : 0;
  return { fixed_ms: round(mm - slope * mk, 3), per_statement_ms: round(slope, 4) };
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

/** Jobs per wave (divisible by every B), and waves: each B gets WAVES ÷ 3 of them. */
const WAVE_JOBS = 240;
const WAVES = 12;
const HOLD_JOBS = 240;

const started = Date.now();
const say = (line: string) =>
  console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${line}`);

function net(kind: string, b = 1): number {
  const values = samples.filter((s) => s.kind === kind && s.b === b).map((s) => s.net_ms);
  if (values.length === 0) throw new Error(`no sample of ${kind} at B=${b}`);
  return median(values);
}

/** A statement's time counted in a sum: a negative net (a read as cheap as SELECT 1) counts 0. */
const cost = (kind: string, b = 1) => Math.max(0, net(kind, b));

/** D1 time per job (ms) on a path at batch size b: each statement's net time × its share. */
function hotMs(path: PathName, b: number): { ms: number; parts: string[] } {
  const parts: string[] = [];
  let ms = 0;
  for (const s of PATHS[path].statements) {
    const batch = s.per === "batch" ? b : 1;
    const t = cost(s.statement, batch) * share(s.per, b);
    ms += t;
    parts.push(`${s.statement}${s.per === "batch" ? `/${b}` : ""} ${round(t, 3)}`);
  }
  return { ms, parts };
}

const archiveMsPerJob = () =>
  ARCHIVE_STATEMENTS.reduce((n, kind) => n + cost(`archive: ${kind}`, ARCHIVE_BATCH), 0) /
  ARCHIVE_BATCH;

async function main(): Promise<void> {
  const host = machine();
  say(
    `machine: ${host.nproc} × ${host.cpu_model}, ${host.memory_gb} GB, load ${host.load_avg_1m_at_start}; node ${host.node}`,
  );
  await waitForPorts(Object.values(PORTS), say);
  const tmp = mkdtempSync(path.join(os.tmpdir(), "reel-ceilings-"));
  let proc: Guarded | undefined;
  const stop = async () => {
    await proc?.stop();
    rmSync(tmp, { recursive: true, force: true });
  };
  process.once("SIGINT", () => {
    void stop().then(() => process.exit(130));
  });
  try {
    say("starting the bench Worker (a fresh local D1)");
    const worker = await startBenchWorker(
      path.join(tmp, "bench-worker", "state"),
      PORTS.worker,
      PORTS.inspector,
      () => {},
      (p) => {
        proc = p;
      },
    );
    const lives: LifeRows[] = await rowsPerJob(worker);
    say("warm-up: 60 lives, not timed");
    await wave(worker, newJobs(60, thirtyPercent), 10, false);
    const sizeBefore = await sizeNow(worker);
    say(`${WAVES} waves of ${WAVE_JOBS} lives (B = ${BATCH_SIZES.join(", ")} in turn)`);
    for (let w = 0; w < WAVES; w++) {
      const b = BATCH_SIZES[w % BATCH_SIZES.length] ?? 1;
      await wave(worker, newJobs(WAVE_JOBS, thirtyPercent), b, true);
    }
    const sizeAfter = await sizeNow(worker);
    const [pageSize] = await sql(worker, "ROWS", [{ sql: "PRAGMA page_size" }]);
    say("holds and Idempotency-Key lookups");
    await holdsAndKeys(worker, HOLD_JOBS);
    say("archive of every finished job");
    const archived = await archiveAll(worker);
    say(`${archived.jobs} jobs archived in ${archived.batches} batches`);
    report({
      lives,
      lived: WAVES * WAVE_JOBS,
      sizeBefore,
      sizeAfter,
      pageSize: Number(pageSize?.results[0]?.page_size ?? 0),
      archived,
      host,
    });
  } finally {
    await stop();
  }
}

interface Measured {
  lives: LifeRows[];
  lived: number;
  sizeBefore: number;
  sizeAfter: number;
  pageSize: number;
  archived: { batches: number; jobs: number };
  host: ReturnType<typeof machine>;
}

const fmt = (n: number, digits = 2) =>
  n.toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: 0 });

function report(m: Measured): void {
  const B = DEPLOYED_B;
  // ---- 1. statements per job ----
  for (const path of ["admitted", "waits"] as const) {
    for (const b of BATCH_SIZES) {
      const n = statementsPerJob(path, b);
      figure(`d1_statements_${path}_b${b}`, `1. D1 statements/job, ${PATHS[path].label}, B=${b}`, {
        value: round(n, 3),
        unit: "",
        target: `≤ ${STATEMENT_GOAL}`,
        pass: n <= STATEMENT_GOAL + 1e-9,
        note: `${formula(path)}: ${PATHS[path].statements
          .map((s) => `${s.statement}${s.per === "batch" ? "/B" : ""} (${s.step})`)
          .join(", ")}; progress, an Idempotency-Key and retention apart`,
      });
    }
  }
  const admittedHolds = BATCH_SIZES.filter(
    (b) => statementsPerJob("admitted", b) <= STATEMENT_GOAL,
  );
  figure("d1_statements_key", "1. + an Idempotency-Key (a lookup before the insert)", {
    value: 1,
    unit: "",
    target: "(apart)",
    pass: null,
    note: `${IDEMPOTENCY_LOOKUP.source}. The goal holds on the admitted path for B ≥ 2 (of ${BATCH_SIZES.join(", ")}: B = ${admittedHolds.join(", ")}), with a key for B ≥ 3, and never on the waiting path (${formula("waits")})`,
  });
  figure("d1_statements_progress", "1. progress statements/job: writes + reads", {
    value: `${PROGRESS_STATEMENTS_PER_JOB} + ${PROGRESS_READS_PER_JOB}`,
    unit: "",
    target: "(apart)",
    pass: null,
    note: "3 reports per job (25, 50, 75), each a read and, crossing a multiple of 25, a write; a report that crosses none (or within 60 s) is the read only and goes live only",
  });
  figure("d1_statements_archive", "1. retention (archive) statements/job", {
    value: round(ARCHIVE_STATEMENTS.length / ARCHIVE_BATCH, 3),
    unit: "",
    target: "(apart)",
    pass: null,
    note: `${ARCHIVE_STATEMENTS.length} per ARCHIVE_BATCH of ${ARCHIVE_BATCH} (shared/archive.ts: ${ARCHIVE_STATEMENTS.join(", ")}; two batch() calls)`,
  });
  // Rows per job as the waves measured them (json_each's elements count as read): a per-job
  // statement's rows ÷ its jobs over every wave, a batch statement's ÷ B at that B only.
  const rowsAt = (b: number) => {
    const mean = (kind: string, batch: number, key: "rows_read" | "rows_written") => {
      const list = samples.filter((x) => x.kind === kind && x.b === batch);
      return list.reduce((n, x) => n + x[key] / (x.k * x.b), 0) / Math.max(1, list.length);
    };
    const sum = (key: "rows_read" | "rows_written") =>
      PATHS.admitted.statements.reduce(
        (n, st) => n + mean(st.statement, st.per === "batch" ? b : 1, key),
        0,
      ) +
      PROGRESS_STATEMENTS_PER_JOB * mean("progress", 1, key) +
      PROGRESS_READS_PER_JOB * mean("byId", 1, key);
    return { read: sum("rows_read"), written: sum("rows_written") };
  };
  const rowsB = rowsAt(B);
  const happy = m.lives[0];
  figure("d1_rows_per_job", `1. D1 rows/job read / written, hot path + 3 progress, B=${B}`, {
    value: `${fmt(rowsB.read, 1)} / ${fmt(rowsB.written, 1)}`,
    unit: "",
    target: "(info)",
    pass: null,
    note: `meta.rows_read / rows_written over the waves (${BATCH_SIZES.map((b) => {
      const r = rowsAt(b);
      return `B=${b} ${fmt(r.read, 1)} / ${fmt(r.written, 1)}`;
    }).join(
      ", ",
    )}): json_each's elements count as read; the 0.3 written is the key's index entry on 3 jobs in 10; d1-figures' single life, no key: ${happy?.rows_read} / ${happy?.rows_written}`,
  });

  // ---- 2. time ----
  const rt = roundTrip();
  figure("d1_trivial_round_trip", "2. a trivial statement's round trip, Worker → local D1", {
    value: rt.per_statement_ms,
    unit: "ms",
    target: "(info)",
    pass: null,
    note: `slope of ${baselines.length} requests of k × SELECT 1 (k = 1 … ${WAVE_JOBS * LIFE_PROGRESS.length}); the HTTP request itself ${rt.fixed_ms} ms; D1's local meta.duration is 0 (workerd's clock stands still inside the database object), so times are taken from Node`,
  });
  const hot = (b: number) => hotMs("admitted", b);
  const progressMs =
    PROGRESS_STATEMENTS_PER_JOB * cost("progress") + PROGRESS_READS_PER_JOB * cost("byId");
  const archiveMs = archiveMsPerJob();
  const steady = (b: number) => hot(b).ms + progressMs + archiveMs;
  // The other bound: every statement also costs the database a trivial statement's whole local
  // round trip (an overestimate: that includes the Worker's side and the call between them).
  const steadyStatements = (b: number) =>
    statementsPerJob("admitted", b) +
    PROGRESS_STATEMENTS_PER_JOB +
    PROGRESS_READS_PER_JOB +
    ARCHIVE_STATEMENTS.length / ARCHIVE_BATCH;
  const steadyGross = (b: number) => steady(b) + rt.per_statement_ms * steadyStatements(b);
  const ms = (n: number) => (n <= 0 ? "≈ 0" : `${round(n, 3)}`);
  const workerHot = PATHS.admitted.statements.reduce((n, st) => {
    const batch = st.per === "batch" ? B : 1;
    const list = samples.filter((x) => x.kind === st.statement && x.b === batch);
    return n + Math.max(0, median(list.map((x) => x.worker_net_ms))) * share(st.per, B);
  }, 0);
  figure("d1_ms_per_job_hot", `2. D1 time/job, hot path (admitted), B=${B}`, {
    value: round(hot(B).ms, 3),
    unit: "ms",
    target: "(info)",
    pass: null,
    note: `each statement's time above SELECT 1's, medians over the waves: ${hot(B).parts.join(", ")} ms (the Worker's own clock: ${round(workerHot, 3)} ms); B=1 ${round(hot(1).ms, 3)} ms, B=10 ${round(hot(10).ms, 3)} ms; waits path ${round(hotMs("waits", B).ms, 3)} ms (hold/${B} ${ms(cost("hold", B) / B)}, a refill's claim of 1 ${ms(cost("claim", 1))}); an Idempotency-Key lookup ${ms(net("byIdempotencyKey"))} ms`,
  });
  figure("d1_ms_per_job_apart", "2. D1 time/job, 3 progress reports / archive", {
    value: `${round(progressMs, 3)} / ${round(archiveMs, 3)} ms`,
    unit: "",
    target: "(info)",
    pass: null,
    note: `progress ${ms(cost("progress"))} ms a report; archive per batch of ${ARCHIVE_BATCH}: ${ARCHIVE_STATEMENTS.map((k) => `${k} ${ms(net(`archive: ${k}`, ARCHIVE_BATCH))}`).join(", ")} ms (${m.archived.jobs} jobs, ${m.archived.batches} batches)`,
  });
  const perSecond = (t: number) => 1000 / t;
  figure("d1_jobs_per_s_hot", "2. one database, jobs/s, hot path, B=1 / 10 / 30", {
    value: BATCH_SIZES.map((b) => fmt(perSecond(hot(b).ms), 0)).join(" / "),
    unit: "",
    target: "(info)",
    pass: null,
    note: "1 ÷ the hot path's D1 time per job: D1 runs a database's statements one at a time",
  });
  figure("d1_jobs_per_s_steady", `2. one database, jobs/s, + progress + archive, B=${B}`, {
    value: `${fmt(perSecond(steady(B)), 0)} (${fmt(perSecond(steadyGross(B)), 0)})`,
    unit: "/s",
    target: "(info)",
    pass: null,
    note: `1 ÷ ${round(steady(B), 3)} ms (B=1 ${fmt(perSecond(steady(1)), 0)}/s, B=10 ${fmt(perSecond(steady(10)), 0)}/s); in brackets the low bound, each of the job's ${round(steadyStatements(B), 2)} statements also costing a trivial statement's whole round trip (${rt.per_statement_ms} ms): 1 ÷ ${round(steadyGross(B), 3)} ms`,
  });
  for (const rate of [100, 1_000]) {
    const busy = rate * steady(B);
    const gross = rate * steadyGross(B);
    figure(`d1_busy_at_${rate}`, `2. one database at ${fmt(rate)} exports/s (B=${B})`, {
      value: `${round(busy / 10, 0)} % busy (${round(gross / 10, 0)} %)`,
      unit: "",
      target: "< 100 %",
      pass: gross < 1000 ? true : busy < 1000 ? null : false,
      note: `headroom ${round(1000 / busy, 2)}× (low bound ${round(1000 / gross, 2)}×); info when only one bound fits. Computed from the time per job measured on a database of a few thousand jobs (statements slow as it grows: npm run bench times them at 1M jobs), not run live: a 2-core machine cannot`,
    });
  }

  // ---- 3. bytes ----
  const bytesPerJob = (m.sizeAfter - m.sizeBefore) / m.lived;
  figure("d1_bytes_per_job", "3. D1 bytes/job (row, indexes, 7 events, 30 % with a key)", {
    value: round(bytesPerJob, 0),
    unit: "B",
    target: "(info)",
    pass: null,
    note: `meta.size_after ${fmt(m.sizeBefore)} → ${fmt(m.sizeAfter)} bytes over ${m.lived} complete lives (pages of ${m.pageSize} bytes; random UUID keys leave B-tree pages part full, as in production)`,
  });
  const today = settings.archiveAfterS / 86_400;
  for (const rate of RATES) {
    const days = D1_TARGET_BYTES / (bytesPerJob * rate * 86_400);
    figure(`retention_days_at_${rate}`, `3. retention keeping 10 GB half full at ${fmt(rate)}/s`, {
      value: days >= 1 ? round(days, 1) : `${round(days * 24, 1)} h`,
      unit: days >= 1 ? "days" : "",
      target: `≥ ${today} d (ARCHIVE_AFTER_S)`,
      pass: days >= today,
      note: `5 GB ÷ (${round(bytesPerJob, 0)} B × ${rate}/s × 86,400 s); ARCHIVE_AFTER_S = ${fmt(days * 86_400, 0)} s`,
    });
  }
  const fitsToday = D1_TARGET_BYTES / (bytesPerJob * settings.archiveAfterS);
  figure("retention_rate_today", `3. highest rate today's ${today}-day retention fits`, {
    value: round(fitsToday, 2),
    unit: "exports/s",
    target: "(info)",
    pass: null,
    note: "5 GB ÷ (bytes per job × ARCHIVE_AFTER_S)",
  });

  // ---- 4. Durable Objects ----
  const admitted = doCalls("admitted", B);
  const waits = doCalls("waits", B);
  const pollPerS = 1 / settings.gate.fleetPollS;
  figure("do_dispatcher_per_job", `4. Dispatcher requests/job (B=${B})`, {
    value: round(perClass(admitted, "Dispatcher"), 3),
    unit: "",
    target: "(info)",
    pass: null,
    note: `${admitted
      .filter((c) => c.object === "Dispatcher")
      .map((c) => `${c.call} ${round(c.perJob, 3)} (1 per ${c.when})`)
      .join(
        ", ",
      )}; waits path ${round(perClass(waits, "Dispatcher"), 3)}; + estimate 1 per GET of a pending job; the alarm ${pollPerS}/s while busy (FLEET_POLL_S ${settings.gate.fleetPollS}); one object per endpoint`,
  });
  figure(
    "do_live_per_job",
    "4. LiveHub requests/job: shards (nobody listening) / operators' hub (listening)",
    {
      value: `${round(perClass(admitted, "LiveHub (shard)"), 2)} / ≤ ${round(perClass(admitted, "LiveHub (shard)"), 2)}`,
      unit: "",
      target: "(info)",
      pass: null,
      note: `one call per statement per shard touched (${LIVE.changesPerJob} changes a job, +${LIVE.extraChangesWhenHeld} when held; the claim of a batch of ${B} touches ≤ ${LIVE.shards} shards); nothing past a shard unless someone listens: the operators' hub as many as the shards while an operator is connected, a project's hub ${LIVE.changesPerJob} per job while someone watches it; plus a hub's queue alarm every 5 s while someone listens and jobs are pending`,
    },
  );
  let fleetAdmissionMs: number | null = null;
  try {
    const fleet = JSON.parse(readFileSync(path.join(root, "bench/fleet.json"), "utf8")) as {
      admission_ms_100000?: { value?: number };
    };
    fleetAdmissionMs = fleet.admission_ms_100000?.value ?? null;
  } catch {}
  for (const rate of [100, 1_000]) {
    const dispatcher = rate * perClass(admitted, "Dispatcher") + pollPerS;
    figure(`do_dispatcher_at_${rate}`, `4. Dispatcher at ${fmt(rate)} exports/s, one endpoint`, {
      value: round(dispatcher, 0),
      unit: "req/s",
      target: `≤ ${fmt(DO_SOFT_LIMIT_PER_S)}`,
      pass: dispatcher <= DO_SOFT_LIMIT_PER_S,
      note: `${round(perClass(admitted, "Dispatcher"), 3)}/job × ${rate}/s + the alarm${fleetAdmissionMs === null ? "" : `; the fair queue's SQLite alone ${fleetAdmissionMs} ms per admission (npm run fleet) → ${round((rate * fleetAdmissionMs) / 10, 1)} % busy`}; the gate sends ${runsPerSPerEndpoint()} /run/s per endpoint (RUNPOD_RUNS_PER_10S ${settings.gate.runsPer10s}; RunPod allows 100), so ${fmt(rate)}/s needs ≥ ${Math.ceil(rate / runsPerSPerEndpoint())} endpoints, one dispatcher each`,
    });
    const shard = (rate * perClass(admitted, "LiveHub (shard)")) / LIVE.shards;
    figure(`do_shard_at_${rate}`, `4. a live shard at ${fmt(rate)} exports/s (projects spread)`, {
      value: round(shard, 0),
      unit: "req/s",
      target: `≤ ${fmt(DO_SOFT_LIMIT_PER_S)}`,
      pass: shard <= DO_SOFT_LIMIT_PER_S,
      note: `${round(perClass(admitted, "LiveHub (shard)"), 2)}/job over ${LIVE.shards} shards; the operators' hub, while an operator is connected, hears up to ${fmt(rate * perClass(admitted, "LiveHub (shard)"), 0)}/s before calls coalesce (one in flight per shard); one project's hub reaches the limit at ${fmt(DO_SOFT_LIMIT_PER_S / LIVE.changesPerJob, 0)} exports/s of that project while watched`,
    });
  }
  const messages = 1_000;
  figure("queue_at_1000", "4. Queues at 1,000 exports/s: messages/s of one queue", {
    value: messages,
    unit: "msg/s",
    target: `≤ ${fmt(QUEUE_LIMIT_PER_S)}`,
    pass: messages <= QUEUE_LIMIT_PER_S,
    note: `one message per job (a held job is refilled without one; a retry or a release adds one); ${fmt(1_000 / B, 1)} consumer batches/s at B=${B}`,
  });

  printTable();
  Object.assign(results, {
    model: {
      deployed_batch_size: B,
      statements: PATHS,
      idempotency: IDEMPOTENCY_LOOKUP,
      progress_statements_per_job: PROGRESS_STATEMENTS_PER_JOB,
      archive: { batch: ARCHIVE_BATCH, statements: ARCHIVE_STATEMENTS },
      live_today: LIVE,
      durable_objects: { admitted: doCalls("admitted", B), waits: doCalls("waits", B) },
      limits: {
        d1_bytes: D1_LIMIT_BYTES,
        do_requests_per_s: DO_SOFT_LIMIT_PER_S,
        queue_messages_per_s: QUEUE_LIMIT_PER_S,
        runpod_run_per_s_per_endpoint: runsPerSPerEndpoint(),
      },
      settings: {
        archive_after_s: settings.archiveAfterS,
        fleet_poll_s: settings.gate.fleetPollS,
        claim_timeout_s: settings.claimTimeoutS,
        poll_after_s: settings.pollAfterS,
      },
    },
    measured: {
      lives: m.lived,
      size_before: m.sizeBefore,
      size_after: m.sizeAfter,
      page_size: m.pageSize,
      round_trip: rt,
      net_ms: Object.fromEntries(
        [...new Set(samples.map((s) => `${s.kind}@${s.b}`))].map((key) => {
          const [kind, b] = key.split("@") as [string, string];
          return [key, round(net(kind, Number(b)), 4)];
        }),
      ),
      samples,
      rows_per_job_d1_figures: m.lives,
    },
    machine: m.host,
    generated_at: new Date().toISOString(),
    duration_s: Math.round((Date.now() - started) / 1000),
  });
  writeResults(RESULTS_FILE, results);
  say(`bench/ceilings.json written; ${Math.round((Date.now() - started) / 1000)} s in all`);
}

await main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
