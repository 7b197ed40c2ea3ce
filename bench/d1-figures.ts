// The D1 figures, through the bench Worker (bench/worker/, `POST /sql` on a real local D1 binding):
// - rows per job: the statements of JOB_SQL in the order the state machine runs them for one
//   job's life, each statement's meta.rows_read / rows_written, against the least the schema
//   allows for the same changes (the row, each index entry whose key changed, trigger rows);
// - plans at 1M rows: EXPLAIN QUERY PLAN and the time of every statement of shared/sql/ on a
//   million seeded jobs.
import { mkdirSync } from "node:fs";
import path from "node:path";
import { devServerFlags } from "../scripts/local-stack.ts";
import { DEAD_LETTER_SQL } from "../shared/sql/dead-letters.ts";
import { EVENT_SQL } from "../shared/sql/events.ts";
import { JOB_SQL } from "../shared/sql/jobs/catalog.ts";
import { insertBinds } from "../shared/sql/jobs/insert.ts";
import { NOTIFY_SQL } from "../shared/sql/notifications.ts";
import { STATS_SQL } from "../shared/sql/stats.ts";
import {
  type Guarded,
  guarded,
  jsonInit,
  median,
  quantile,
  readJson,
  root,
  runToEnd,
  sleep,
  waitUntilUp,
  wranglerEnv,
  wranglerJs,
} from "./support.ts";

const CONFIG = path.join(root, "bench/worker/wrangler.toml");
const DATABASES = ["bench-rows", "bench-plans", "bench-archive"] as const;

export interface BenchWorker {
  url: string;
  proc: Guarded;
}

/** Migrates the bench Worker's three databases (in parallel) and starts it under wrangler dev. */
export async function startBenchWorker(
  stateDir: string,
  port: number,
  inspectorPort: number,
  onLine: (name: string, line: string) => void,
  register: (proc: Guarded) => void,
): Promise<BenchWorker> {
  mkdirSync(stateDir, { recursive: true });
  const env = wranglerEnv(path.join(stateDir, "..", "bench-registry"));
  const persist = ["--persist-to", stateDir];
  // One after the other: two migrations opening the same state directory at once can meet
  // SQLITE_BUSY and fail; a failed one is tried once more.
  for (const db of DATABASES) {
    const migrate = () =>
      runToEnd(
        `migrate ${db}`,
        [wranglerJs, "d1", "migrations", "apply", db, "--local", "--config", CONFIG, ...persist],
        env,
        () => {},
      );
    await migrate().catch(async () => {
      await sleep(500);
      await migrate();
    });
  }
  const proc = guarded(
    "bench-worker",
    [wranglerJs, "dev", "--config", CONFIG, ...devServerFlags(port, inspectorPort), ...persist],
    env,
    onLine,
  );
  register(proc);
  const url = `http://127.0.0.1:${port}`;
  await waitUntilUp(`${url}/health`, "the bench Worker", proc);
  return { url, proc };
}

export interface RunMeta {
  rows_read: number;
  rows_written: number;
  duration: number;
  wall_ms: number;
  changes: number;
  /** The database's size after the statement (bytes; D1's meta.size_after). */
  size_after: number;
}

interface SqlAnswer {
  statements: { runs: RunMeta[]; results: Record<string, unknown>[] }[];
}

export type Db = "DB" | "ROWS" | "PLANS" | "ARCHIVE";

export async function sql(
  worker: BenchWorker,
  db: Db,
  statements: { sql: string; binds?: unknown[] }[],
  repeat = 1,
): Promise<SqlAnswer["statements"]> {
  const answer = await readJson<SqlAnswer>(
    `${worker.url}/sql`,
    jsonInit("POST", { db, statements, repeat }),
  );
  return answer.statements;
}

async function one(worker: BenchWorker, db: Db, text: string, binds: unknown[] = []) {
  const [answer] = await sql(worker, db, [{ sql: text, binds }]);
  if (!answer) throw new Error("no answer");
  return { meta: answer.runs[0] as RunMeta, results: answer.results };
}

// ---------------------------------------------------------------------------------------------
// Rows per job
// ---------------------------------------------------------------------------------------------

interface IndexInfo {
  name: string;
  columns: string[];
  /** A partial index's `WHERE <column> IS NOT NULL`, else null (every row has an entry). */
  notNull: string | null;
}

async function jobIndexes(worker: BenchWorker): Promise<IndexInfo[]> {
  const { results } = await one(
    worker,
    "ROWS",
    `SELECT m.name AS name, ii.name AS col, m.sql AS sql
     FROM sqlite_master m, pragma_index_info(m.name) ii
     WHERE m.tbl_name = 'export_jobs' AND m.type = 'index' ORDER BY m.name, ii.seqno`,
  );
  const byName = new Map<string, IndexInfo>();
  for (const row of results as { name: string; col: string; sql: string | null }[]) {
    const info = byName.get(row.name) ?? {
      name: row.name,
      columns: [],
      notNull: /WHERE\s+(\w+)\s+IS\s+NOT\s+NULL/i.exec(row.sql ?? "")?.[1] ?? null,
    };
    info.columns.push(row.col);
    byName.set(row.name, info);
  }
  return [...byName.values()];
}

export interface StepRows {
  step: string;
  statement: string;
  rows_read: number;
  rows_written: number;
  min_read: number;
  min_written: number;
  /** How the minimum of rows written is made up. */
  min_detail: string;
}

export interface LifeRows {
  name: string;
  steps: StepRows[];
  rows_read: number;
  rows_written: number;
  min_read: number;
  min_written: number;
}

type Row = Record<string, unknown> | undefined;

/**
 * The least rows a statement's change can write with this schema: the job's row if it changed,
 * one entry per index whose key (or membership, for a partial index) changed, one per job_counts
 * row the counting triggers must move (1 on insert, 2 per status change, and the key's active
 * count when the job becomes or stops being active) and one per timeline
 * event. Reads: the job's row (by primary key) for every statement that looks at it, plus the
 * job_counts rows the triggers update.
 */
function minimumOf(
  indexes: IndexInfo[],
  before: Row,
  after: Row,
  events: number,
  readsJob: boolean,
): { read: number; written: number; detail: string } {
  const entry = (index: IndexInfo, row: Row) =>
    row === undefined || (index.notNull !== null && row[index.notNull] === null)
      ? null
      : JSON.stringify(index.columns.map((c) => row[c]));
  const changed = JSON.stringify(before) !== JSON.stringify(after);
  let written = changed ? 1 : 0;
  const touched: string[] = [];
  if (changed) {
    for (const index of indexes) {
      const [a, b] = [entry(index, before), entry(index, after)];
      if (a !== b) {
        written++;
        touched.push(index.name.replace("idx_export_jobs_", "").replace("sqlite_autoindex_", ""));
      }
    }
  }
  const isActive = (row: Row) => row?.status === "pending" || row?.status === "processing";
  // …plus the fairness key's active_jobs row (migration 0014) when the job becomes or stops
  // being active.
  const activeMoved = after !== undefined && isActive(before) !== isActive(after) ? 1 : 0;
  const counts =
    (before === undefined && after !== undefined
      ? 1
      : before !== undefined && after !== undefined && before.status !== after.status
        ? 2
        : 0) + activeMoved;
  // GPU accounting (migration 0010): the day's usage row per key (project, and user when the job
  // has one) on insert, on an ending and when GPU time is added; the run's record when a run is
  // recorded and when it ends.
  const keys = after?.user_id === null || after?.user_id === undefined ? 1 : 2;
  const ended =
    after !== undefined &&
    (after.status === "complete" || after.status === "error") &&
    before?.status !== after.status;
  const gpuAdded = before !== undefined && after !== undefined && before.gpu_ms !== after.gpu_ms;
  const usage = before === undefined && after !== undefined ? keys : ended || gpuAdded ? keys : 0;
  const runRecorded =
    after?.runpod_job_id !== undefined &&
    after.runpod_job_id !== null &&
    before?.runpod_job_id !== after.runpod_job_id
      ? 1
      : 0;
  const runEnded =
    after !== undefined &&
    ["completed", "failed", "cancelled"].includes(String(after.last_event)) &&
    before?.version !== after.version &&
    (before?.runpod_job_id ?? after.runpod_job_id ?? null) !== null
      ? 1
      : 0;
  const runs = runRecorded + runEnded;
  // …and the GPU seconds total (migration 0015) when GPU time is added.
  const totals = gpuAdded ? 1 : 0;
  written += counts + events + usage + runs + totals;
  const detail = changed
    ? `row 1 + index ${touched.length}${touched.length ? ` (${touched.join(", ")})` : ""} + counts ${counts} + events ${events} + usage ${usage} + runs ${runs} + totals ${totals}`
    : "no change";
  return { read: (readsJob ? 1 : 0) + counts + usage + runs + totals, written, detail };
}

interface Step {
  step: string;
  statement: keyof typeof JOB_SQL;
  binds: unknown[];
}

/** The statements of one job's life, in the state machine's order (shared/job-state.ts). */
function lifeSteps(id: string, failOnce: boolean): Step[] {
  const runs = ["run-a-u1", "run-b-u1"];
  const attemptSteps = (attempt: number, progress: number[]): Step[] => [
    { step: "consumer: batch jobs", statement: "batchJobs", binds: [JSON.stringify([id])] },
    {
      step: "consumer: claim",
      statement: "claim",
      binds: ["+120 seconds", crypto.randomUUID(), "bench-endpoint", JSON.stringify([id])],
    },
    {
      step: "consumer: record run",
      statement: "recordRun",
      binds: [runs[attempt - 1], "+300 seconds", id, attempt],
    },
    ...progress.map(
      (p): Step => ({
        step: `progress ${p}`,
        statement: "progress",
        binds: [p, "+300 seconds", p, id, attempt, p],
      }),
    ),
    { step: "webhook: read job", statement: "byId", binds: [id] },
  ];
  const steps: Step[] = [
    {
      step: "producer: insert",
      statement: "insert",
      binds: insertBinds({
        id,
        project_id: 42,
        user_id: 7,
        type: "overlay",
        input_video_key: "uploads/42/in.mp4",
        params: { highlight_regions: [] },
        input_etag: "etag",
        params_hash: id,
      }),
    },
  ];
  if (failOnce) {
    steps.push(...attemptSteps(1, []), {
      step: "webhook: FAILED → pending",
      statement: "failRecordedRun",
      binds: [1000, 10, "RunPod FAILED: emulated failure", "+30 seconds", id, 1, runs[0]],
    });
  }
  const attempt = failOnce ? 2 : 1;
  steps.push(...attemptSteps(attempt, [25, 50, 75]), {
    step: "webhook: COMPLETED",
    statement: "completeRecordedRun",
    binds: [3000, 10, `exports/42/${id}.mp4`, id, attempt, runs[attempt - 1]],
  });
  return steps;
}

async function runLife(
  worker: BenchWorker,
  indexes: IndexInfo[],
  name: string,
  failOnce: boolean,
): Promise<LifeRows> {
  const id = crypto.randomUUID();
  const read = async () => ({
    row: (await one(worker, "ROWS", "SELECT * FROM export_jobs WHERE id = ?", [id])).results[0],
    events: Number(
      (
        await one(worker, "ROWS", "SELECT COUNT(*) AS n FROM export_job_events WHERE job_id = ?", [
          id,
        ])
      ).results[0]?.n ?? 0,
    ),
  });
  const steps: StepRows[] = [];
  for (const step of lifeSteps(id, failOnce)) {
    const before = await read();
    const { meta } = await one(worker, "ROWS", JOB_SQL[step.statement], step.binds);
    const after = await read();
    const min = minimumOf(
      indexes,
      before.row,
      after.row,
      after.events - before.events,
      step.statement !== "insert",
    );
    steps.push({
      step: step.step,
      statement: `jobs.${step.statement}`,
      rows_read: meta.rows_read,
      rows_written: meta.rows_written,
      min_read: min.read,
      min_written: min.written,
      min_detail: min.detail,
    });
  }
  const sum = (key: keyof StepRows) => steps.reduce((n, s) => n + Number(s[key]), 0);
  const final = (await read()).row;
  if (final?.status !== "complete") throw new Error(`${name}: the job ended ${final?.status}`);
  return {
    name,
    steps,
    rows_read: sum("rows_read"),
    rows_written: sum("rows_written"),
    min_read: sum("min_read"),
    min_written: sum("min_written"),
  };
}

export async function rowsPerJob(worker: BenchWorker): Promise<LifeRows[]> {
  const indexes = await jobIndexes(worker);
  return [
    await runLife(worker, indexes, "create → complete", false),
    await runLife(worker, indexes, "create → one failure → complete", true),
  ];
}

// ---------------------------------------------------------------------------------------------
// Seeding a million jobs
// ---------------------------------------------------------------------------------------------

export const SEED_JOBS = 1_000_000;
const SEED_CHUNK = 50_000;
/** Every 20th job is project 1's (a heavy project: 50,000 jobs), the others spread over 19,999. */
export const HEAVY_PROJECT = 1;
const SEED_BASE_TIME = "2026-10-01 00:00:00.000";

/** The seeded id of job i (1-based): scattered like random UUIDs, but known to the bench. */
export const seededId = (i: number) =>
  `${((i * 2654435761) % 4294967296).toString(16).padStart(8, "0")}-0000-4000-8000-${i
    .toString(16)
    .padStart(12, "0")}`;
export const seededStatus = (i: number) =>
  i % 1000 < 948
    ? "complete"
    : i % 1000 < 988
      ? "error"
      : i % 1000 < 998
        ? "pending"
        : "processing";

/**
 * Jobs i..j in one INSERT … SELECT over a recursive CTE: 95 % complete, 4 % error (a tenth of
 * them cancelled), 1 % pending (10,000: a backlog), 20 processing (runs in flight); 20,000 projects (project 1 has every 20th
 * job); 80 % with a user (the project's owner); 30 % with an Idempotency-Key; created every
 * 2.592 s from 2026-10-01 (a million jobs over 30 days); `finished_at` (migration 0007, when the
 * schema has it) for finished jobs. The triggers write job_counts and one `created` event per job,
 * as the producer's inserts do.
 */
function seedSql(finishedAt: boolean): string {
  return `
WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2),
s AS (SELECT i,
        CASE WHEN i % 50000 = 49999 THEN 'processing' WHEN i % 1000 < 948 THEN 'complete'
             WHEN i % 1000 < 988 THEN 'error' WHEN i % 1000 < 998 THEN 'pending'
             ELSE 'complete' END AS status,
        CASE WHEN i % 20 = 0 THEN ${HEAVY_PROJECT} ELSE 2 + (i * 7919) % 19999 END AS project,
        strftime('%Y-%m-%d %H:%M:%f', ?3, '+' || (i * 2.592) || ' seconds') AS at
      FROM n)
INSERT INTO export_jobs (id, project_id, user_id, type, status, progress, input_video_key,
  output_video_key, params, error, retry_count, runpod_job_id, created_at, started_at,
  completed_at, due_at, idempotency_key, request_hash, attempt, version, pending_since
  ${finishedAt ? ", finished_at" : ""})
SELECT printf('%08x-0000-4000-8000-%012x', (i * 2654435761) % 4294967296, i),
       project, CASE WHEN i % 5 = 0 THEN NULL ELSE project END,
       CASE i % 3 WHEN 0 THEN 'framing' WHEN 1 THEN 'overlay' ELSE 'annotate' END,
       status, CASE status WHEN 'complete' THEN 100 WHEN 'processing' THEN 50 ELSE 0 END,
       'uploads/' || project || '/in.mp4',
       CASE status WHEN 'complete' THEN 'exports/' || project || '/' || i || '.mp4' END,
       '{"highlight_regions":[{"start_time":1,"end_time":3}]}',
       CASE WHEN status = 'error' AND i % 10 = 0 THEN 'cancelled'
            WHEN status = 'error' THEN 'RunPod FAILED: emulated failure' END,
       CASE WHEN status = 'error' AND i % 10 <> 0 THEN 4 ELSE 0 END,
       CASE WHEN status <> 'pending' THEN 'run-' || i || '-u1' END,
       at, CASE WHEN status <> 'pending' THEN at END,
       CASE WHEN status IN ('complete', 'error') THEN at END,
       CASE WHEN status IN ('pending', 'processing') THEN at END,
       CASE WHEN i % 10 < 3 THEN 'idem-' || i END,
       CASE WHEN i % 10 < 3 THEN 'hash-' || i END,
       1, 5, at
       ${finishedAt ? ", CASE WHEN status IN ('complete', 'error') THEN at END" : ""}
FROM s`;
}

/**
 * Seeds the PLANS database chunk by chunk in the background; `hold()` makes it pause after the
 * chunk under way (while a timed figure runs), `release()` lets it go on.
 */
export class Seeder {
  readonly #worker: BenchWorker;
  #next = 1;
  #held = true;
  #wake: (() => void) | null = null;
  #chunk: Promise<void> = Promise.resolve();
  readonly done: Promise<{ seconds: number; rows_written: number }>;
  busyMs = 0;

  constructor(worker: BenchWorker) {
    this.#worker = worker;
    this.done = this.#run();
    this.done.catch(() => {});
  }

  async #run(): Promise<{ seconds: number; rows_written: number }> {
    let written = 0;
    const columns = await one(
      this.#worker,
      "PLANS",
      "SELECT name FROM pragma_table_info('export_jobs')",
    );
    const text = seedSql(columns.results.some((row) => row.name === "finished_at"));
    while (this.#next <= SEED_JOBS) {
      while (this.#held) await new Promise<void>((resolve) => (this.#wake = resolve));
      const from = this.#next;
      const to = Math.min(SEED_JOBS, from + SEED_CHUNK - 1);
      const started = Date.now();
      this.#chunk = one(this.#worker, "PLANS", text, [from, to, SEED_BASE_TIME]).then(
        ({ meta }) => {
          written += meta.rows_written;
        },
      );
      await this.#chunk;
      this.busyMs += Date.now() - started;
      this.#next = to + 1;
    }
    // A few dead letters, so that their statements have rows to plan over.
    await one(
      this.#worker,
      "PLANS",
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
       INSERT INTO dead_letters (id, queue, reason, body, attempts, received_at, job_id, job_status)
       SELECT 'msg-' || i, 'export-jobs-dlq', 'dead_lettered', '{}', 11,
              strftime('%Y-%m-%d %H:%M:%f', '2026-10-20', '+' || i || ' minutes'),
              printf('%08x-0000-4000-8000-%012x', (i * 2654435761) % 4294967296, i), 'pending'
       FROM n`,
    );
    return { seconds: this.busyMs / 1000, rows_written: written };
  }

  get seeded(): number {
    return this.#next - 1;
  }

  /** Pauses after the chunk under way; resolves once it is done. */
  async hold(): Promise<void> {
    this.#held = true;
    await this.#chunk.catch(() => {});
  }

  release(): void {
    this.#held = false;
    this.#wake?.();
    this.#wake = null;
  }
}

// ---------------------------------------------------------------------------------------------
// Plans at 1M rows
// ---------------------------------------------------------------------------------------------

/** Every statement of shared/sql/, by the names test/workers/query-plans.test.ts uses. */
export const STATEMENTS: Record<string, string> = Object.fromEntries([
  ...Object.entries(JOB_SQL).map(([name, text]) => [`jobs.${name}`, text]),
  ...Object.entries(DEAD_LETTER_SQL).map(([name, text]) => [`deadLetters.${name}`, text]),
  ...Object.entries(STATS_SQL).map(([name, text]) => [`stats.${name}`, text]),
  ...Object.entries(EVENT_SQL).map(([name, text]) => [`events.${name}`, text]),
  ...Object.entries(NOTIFY_SQL).map(([name, text]) => [`notify.${name}`, text]),
]);

/**
 * Sample parameters per statement, after test/workers/query-plans.test.ts (whose table is not
 * exported), with values that hit the seeded data: real job ids, the heavy project, a user with
 * 40,000 jobs, the first page of a listing. Writes that would change many rows per run (the
 * leases) run as the reconciler does, 100 at a time; guarded transitions name real jobs with an
 * attempt they do not have, so each run reads its row and changes nothing.
 */
function sampleBinds(): Record<string, unknown[]> {
  const pending = [10_990, 20_990].map(seededId); // i % 1000 = 990: pending
  const processing = [49_999, 99_999].map(seededId); // i % 50000 = 49999: processing
  const errorJob = seededId(50_950);
  const complete = seededId(60_001);
  const projects = JSON.stringify([HEAVY_PROJECT, 2, 3]);
  const cursor = ["9999-12-31", ""];
  const delay = "+30 seconds";
  const pairs = JSON.stringify([
    { id: complete, version: 999 },
    { id: errorJob, version: 999 },
  ]);
  return {
    "jobs.insert": insertBinds({
      id: crypto.randomUUID(),
      project_id: 7,
      user_id: 7,
      type: "overlay",
      input_video_key: "uploads/7/in.mp4",
      params: {},
      idempotency: { key: "bench-key", requestHash: "bench-hash" },
      input_etag: "bench-etag",
      params_hash: "bench-params",
    }),
    "jobs.batchJobs": [JSON.stringify(pending)],
    "jobs.processingAmong": [JSON.stringify(processing), "bench-endpoint", "bench-endpoint"],
    "jobs.listByUser": [HEAVY_PROJECT, ...cursor, 21],
    "jobs.listActiveByUser": [HEAVY_PROJECT, ...cursor, 21],
    "jobs.byIdempotencyKey": [HEAVY_PROJECT, "idem-20"],
    "jobs.byId": [complete],
    "jobs.listByProjects": [projects, ...cursor, 21],
    "jobs.listActiveByProjects": [projects, ...cursor, 21],
    "jobs.listByProjectsAndStatus": [projects, "error", ...cursor, 21],
    "jobs.listByProjectsAndActiveStatus": [projects, "pending", ...cursor, 21],
    "jobs.listAll": [...cursor, 51],
    "jobs.listAllByStatus": ["error", ...cursor, 51],
    "jobs.claim": [delay, "token", "bench-endpoint", JSON.stringify([complete, errorJob])],
    "jobs.claimedBy": [JSON.stringify([complete, errorJob]), "token"],
    "jobs.recordRun": ["r", delay, processing[0], 99],
    "jobs.release": [delay, processing[0], 99],
    "jobs.failWithoutRun": ["e", delay, "submit_failed", processing[0], 99],
    "jobs.failRecordedRun": [1000, 10, "e", delay, processing[0], 99, "r"],
    "jobs.failUnrecordedRun": [1000, 10, "e", delay, "r", processing[0], 99],
    "jobs.completeRecordedRun": [1000, 10, "k", processing[0], 99, "r"],
    "jobs.completeUnrecordedRun": [1000, 10, "k", "r", processing[0], 99],
    "jobs.cancelledRecordedRun": [1000, 10, processing[0], 99, "r"],
    "jobs.cancelledUnrecordedRun": [1000, 10, "r", processing[0], 99],
    "jobs.cancel": [complete],
    "jobs.cancelUnconfirmed": [delay, errorJob, "not-its-run"],
    "jobs.cancelConfirmed": [complete],
    "jobs.progress": [50, delay, 50, processing[0], 99, 50],
    "jobs.retryByIds": [JSON.stringify([complete])],
    "jobs.retryByFilter": ["2026-10-01", "2026-10-02", "RunPod", "RunPod", 100],
    "jobs.leaseLostPending": ["-900 seconds", 100],
    "jobs.leaseDueProcessing": [delay, 100],
    "jobs.leaseUnconfirmedCancels": ["+60 seconds", 100],
    "jobs.expirePending": ["expired", "2026-01-01", "2026-01-01", 100],
    "deadLetters.insert": ["bench-msg", "q", "dead_lettered", "{}", 1, complete, complete],
    "deadLetters.list": [...cursor, 21],
    "deadLetters.byId": ["msg-7"],
    "deadLetters.delete": ["no-such-msg"],
    "deadLetters.markReplayed": ["t", "no-such-msg"],
    "deadLetters.replayJob": ["no-such-msg", "t"],
    "events.byJob": [complete],
    // Retention (migration 0007): the pairs name real jobs at a version they do not have.
    "jobs.archivable": ["", "", "-2592000 seconds", 100],
    "jobs.archivedUnchanged": [pairs],
    "jobs.deleteArchived": [pairs],
    "events.byJobs": [JSON.stringify([complete, errorJob]), 0, 100],
    "events.deleteArchived": [pairs, 0, 100],
    "deadLetters.deleteArchived": [pairs],
    "stats.archived": [],
    "stats.addArchived": [pairs],
    "stats.counts": [],
    "stats.oldestPending": [],
    "stats.processingWithoutRun": [],
    "stats.deadLetters": [],
    "stats.totals": [],
  };
}

/**
 * Parameters for a statement the table above does not know yet (added since): a JSON list after
 * `json_each(`, 100 after LIMIT, else a string that matches nothing. Reported as guessed.
 */
function guessBinds(text: string): unknown[] {
  const binds: unknown[] = [];
  const re = /\?(\d*)/g;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    const before = text.slice(Math.max(0, m.index - 12), m.index);
    const value = /json_each\($/.test(before) ? "[]" : /LIMIT\s*$/i.test(before) ? 100 : "~none~";
    if (m[1]) binds[Number(m[1]) - 1] ??= value;
    else binds.push(value);
  }
  return binds;
}

/**
 * Statements again with a rare status (20 processing jobs among 1M): a filter that walks an index
 * newest first until its page is full reads every row when fewer jobs than a page match.
 */
const VARIANTS: Record<string, { base: string; binds: unknown[] }> = {
  "jobs.listAllByStatus[processing]": {
    base: "jobs.listAllByStatus",
    binds: ["processing", "9999-12-31", "", 51],
  },
  "jobs.listByProjectsAndActiveStatus[processing]": {
    base: "jobs.listByProjectsAndActiveStatus",
    binds: [JSON.stringify([HEAVY_PROJECT, 2, 3]), "processing", "9999-12-31", "", 21],
  },
};

/** Small tables a plan may scan: json_each's list, the counters, operators' inbox. */
// Tables of a few rows (counters, totals) and a statement's own constant row of parameters.
const SCANNABLE = new Set([
  "json_each",
  "job_counts",
  "archive_counts",
  "metric_totals",
  "dead_letters",
  "CONSTANT",
]);

export interface PlanFigure {
  statement: string;
  plan: string[];
  scans: string[];
  median_ms: number;
  p90_ms: number;
  rows_read: number;
  rows_written: number;
  runs: number;
  error?: string;
}

async function planOne(
  worker: BenchWorker,
  name: string,
  text: string,
  b: unknown[],
  groups: number,
  repeat: number,
): Promise<PlanFigure> {
  const plan = (await one(worker, "PLANS", `EXPLAIN QUERY PLAN ${text}`, b)).results.map((r) =>
    String(r.detail),
  );
  const scans = plan
    .map((step) => /^SCAN (\w+)/.exec(step)?.[1])
    .filter((t): t is string => t !== undefined && !SCANNABLE.has(t))
    // The insert reads its one row of parameters (`j`), no table.
    .filter((t) => !(name === "jobs.insert" && t === "j"));
  if (plan.some((step) => /^SCAN dead_letters/.test(step)) && name !== "stats.deadLetters") {
    scans.push("dead_letters");
  }
  const runs: RunMeta[] = [];
  for (let g = 0; g < groups; g++) {
    const [answer] = await sql(worker, "PLANS", [{ sql: text, binds: b }], repeat);
    runs.push(...(answer?.runs ?? []));
    await sleep(5);
  }
  const walls = runs.map((r) => r.wall_ms);
  return {
    statement: name,
    plan,
    scans,
    median_ms: median(walls),
    p90_ms: quantile(walls, 0.9),
    rows_read: median(runs.map((r) => r.rows_read)),
    rows_written: median(runs.map((r) => r.rows_written)),
    runs: runs.length,
  };
}

/** EXPLAIN QUERY PLAN, then `groups` × `repeat` timed runs of every statement. */
export async function plansAt1M(
  worker: BenchWorker,
  groups = 3,
  repeat = 7,
): Promise<{ plans: PlanFigure[]; missingBinds: string[] }> {
  const binds = sampleBinds();
  const missingBinds = Object.keys(STATEMENTS).filter((name) => !(name in binds));
  const out: PlanFigure[] = [];
  const all: [string, string, unknown[] | undefined][] = [
    ...Object.entries(STATEMENTS).map(([name, text]): [string, string, unknown[] | undefined] => [
      name,
      text,
      binds[name],
    ]),
    ...Object.entries(VARIANTS).flatMap(([name, v]): [string, string, unknown[]][] =>
      STATEMENTS[v.base] ? [[name, STATEMENTS[v.base] as string, v.binds]] : [],
    ),
  ];
  for (const [name, text, given] of all) {
    try {
      out.push(await planOne(worker, name, text, given ?? guessBinds(text), groups, repeat));
    } catch (error) {
      // Sample parameters that no longer fit the statement (it changed since): guessed ones.
      const guessed = guessBinds(text);
      if (!missingBinds.includes(name)) missingBinds.push(name);
      try {
        out.push(await planOne(worker, name, text, guessed, groups, repeat));
      } catch {
        out.push({
          statement: name,
          plan: [],
          scans: [],
          median_ms: Number.NaN,
          p90_ms: Number.NaN,
          rows_read: Number.NaN,
          rows_written: Number.NaN,
          runs: 0,
          error: error instanceof Error ? error.message : String(error),
        });
      }
    }
  }
  return { plans: out, missingBinds };
}
