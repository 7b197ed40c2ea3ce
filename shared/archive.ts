// Retention: a job that finished more than ARCHIVE_AFTER_S ago leaves D1 for R2. The reconciler
// (consumer/reconciler.ts) hands archiveJobs batches of such jobs; the producer answers archived
// jobs from R2 with readArchivedJob (GET /exports/{id}, /events, /output, cancel's 409).
//
// One object per job, `archive/export_jobs/<id>.json`: `{"job", "events"}`, the job exactly as
// GET /exports/{id} answered it (toJob) and its events as GET /exports/{id}/events did. Only after
// the put succeeded are the job's events, its row and its dead letters deleted, in one D1
// transaction that also raises `archive_counts` by the rows it deletes. A crash in between leaves
// the job in D1, and the next pass puts the same object again and deletes; a job that changed
// after it was read (an operator's retry) matches no (id, version) pair and stays.
//
// Cost, measured (test/workers/retention.test.ts): D1 rows written per archived job are its events,
// its row and its job_counts row (index entries that go are not counted), plus 1 per batch for
// archive_counts: 19 for a batch of three 4-event jobs. In R2 one Class A put per job and about
// 1 KB stored (1,115 bytes for a job of 5 events); reading an archived job is one Class B get.

import { forEachBounded } from "./concurrency.ts";
import { retryTransient } from "./d1-retry.ts";
import { log } from "./log.ts";
import { MAX_SUBMIT_CONCURRENCY } from "./settings.ts";
import { DEAD_LETTER_SQL } from "./sql/dead-letters.ts";
import { EVENT_SQL, type EventRow, type JobEvent, toEvent } from "./sql/events.ts";
import { ARCHIVE_SQL, ARCHIVE_START, archivableJobs } from "./sql/jobs/archive.ts";
import { getJob, type Projects } from "./sql/jobs/reads.ts";
import { type Job, type JobRow, toJob } from "./sql/jobs/row.ts";
import { NOTIFY_SQL } from "./sql/notifications.ts";
import { STATS_SQL } from "./sql/stats.ts";

export const ARCHIVE_PREFIX = "archive/export_jobs/";

export function archiveKey(jobId: string): string {
  return `${ARCHIVE_PREFIX}${jobId}.json`;
}

/** What an archive object holds. */
export interface ArchivedJob {
  job: Job;
  events: JobEvent[];
}

/**
 * Event rows one statement may touch: a range of this many versions holds as many events, plus
 * the few of dead letters (which share a version); together below 1,000.
 */
export const EVENT_ROWS_PER_STATEMENT = 900;

type Archivable = Pick<JobRow, "id" | "version">;

/** Jobs whose events one statement reads (or deletes): those with a version in [from, to). */
export interface EventPart {
  jobs: Archivable[];
  from: number;
  to: number;
}

/**
 * Splits a batch so that each statement on its events touches at most `perStatement` versions:
 * jobs are grouped while their versions add up to no more, and a job with a longer history is
 * read and deleted alone in consecutive version ranges.
 */
export function eventParts(
  rows: readonly Archivable[],
  perStatement = EVENT_ROWS_PER_STATEMENT,
): EventPart[] {
  const parts: EventPart[] = [];
  let group: Archivable[] = [];
  let versions = 0;
  const flush = () => {
    if (group.length === 0) return;
    parts.push({ jobs: group, from: 0, to: Math.max(...group.map((job) => job.version)) + 1 });
    group = [];
    versions = 0;
  };
  for (const row of rows) {
    if (row.version > perStatement) {
      for (let from = 0; from <= row.version; from += perStatement) {
        parts.push({ jobs: [row], from, to: from + perStatement });
      }
      continue;
    }
    if (versions + row.version > perStatement) flush();
    group.push(row);
    versions += row.version;
  }
  flush();
  return parts;
}

const pairsOf = (rows: readonly Archivable[]) =>
  JSON.stringify(rows.map(({ id, version }) => ({ id, version })));

export interface ArchiveResult {
  /** Jobs written to R2 and deleted from D1 by this call. */
  archived: number;
  /** Jobs left in D1: their put failed, or they changed since they were read. */
  skipped: number;
}

/**
 * Archives `rows` (finished jobs, as just read from D1): reads their events, puts one object per
 * job (at most 6 at a time: a Worker invocation holds at most 6 connections, the rest wait),
 * then deletes what was put in one transaction.
 */
export async function archiveJobs(
  db: D1Database,
  videos: R2Bucket,
  rows: readonly JobRow[],
): Promise<ArchiveResult> {
  if (rows.length === 0) return { archived: 0, skipped: 0 };

  // 1. The events and whether each row is still as read, from one snapshot: a job that another
  //    pass archived meanwhile is not found, so its object is never overwritten without events.
  const parts = eventParts(rows);
  const read = await retryTransient(() =>
    db.batch([
      ...parts.map((part) =>
        db
          .prepare(EVENT_SQL.byJobs)
          .bind(JSON.stringify(part.jobs.map((job) => job.id)), part.from, part.to),
      ),
      db.prepare(ARCHIVE_SQL.archivedUnchanged).bind(pairsOf(rows)),
    ]),
  );
  const unchanged = new Set(((read.at(-1)?.results ?? []) as { id: string }[]).map((r) => r.id));
  const events = new Map<string, JobEvent[]>();
  for (const result of read.slice(0, parts.length)) {
    for (const { job_id, ...row } of (result.results ?? []) as (EventRow & { job_id: string })[]) {
      const list = events.get(job_id) ?? [];
      list.push(toEvent(row));
      events.set(job_id, list);
    }
  }

  // 2. The objects. A put that fails leaves its job in D1 for a later pass.
  const stored: JobRow[] = [];
  await forEachBounded(
    rows.filter((row) => unchanged.has(row.id)),
    MAX_SUBMIT_CONCURRENCY,
    async (row) => {
      const archive: ArchivedJob = { job: toJob(row), events: events.get(row.id) ?? [] };
      await videos.put(archiveKey(row.id), JSON.stringify(archive), {
        httpMetadata: { contentType: "application/json" },
      });
      stored.push(row);
    },
    (row, error) =>
      log("warn", "archiving a job failed; a later pass tries again", {
        job_id: row.id,
        error: String(error),
      }),
  );
  if (stored.length === 0) return { archived: 0, skipped: rows.length };

  // 3. Out of D1, only what was put and only as it was put: the count first (it counts the rows
  //    about to go), the events, the dead letters, the notifications, the rows (job_counts
  //    follows by trigger).
  const pairs = pairsOf(stored);
  const deleted = await retryTransient(() =>
    db.batch([
      db.prepare(STATS_SQL.addArchived).bind(pairs),
      ...eventParts(stored).map((part) =>
        db.prepare(EVENT_SQL.deleteArchived).bind(pairsOf(part.jobs), part.from, part.to),
      ),
      db.prepare(DEAD_LETTER_SQL.deleteArchived).bind(pairs),
      db.prepare(NOTIFY_SQL.deleteArchived).bind(pairs),
      db.prepare(ARCHIVE_SQL.deleteArchived).bind(pairs),
    ]),
  );
  const archived = deleted.at(-1)?.results?.length ?? 0;
  return { archived, skipped: rows.length - archived };
}

/**
 * Finished jobs read, put and deleted per batch: 3 D1 calls a batch, so 100 halves their number
 * per job against 50 (the same rate on local D1, measured by bench/archive-rate.ts, where the
 * puts and the Worker's CPU are the bound); `deleteArchived` then touches 100 rows, their
 * job_counts updates and dead letters, and the events go by version ranges of at most 900 rows.
 */
export const ARCHIVE_BATCH = 100;

/** One archiving pass: what is archivable, how many a batch, until when. */
export interface ArchivePass {
  archiveAfterS: number;
  /** Jobs read, put and deleted per batch. */
  batch: number;
  /** No batch starts after this (ms since the epoch); the first always does. */
  deadline: number;
  /** Told of each batch's archived jobs as it ends (a later batch may still fail). */
  onArchived?: (archived: number) => void;
}

/**
 * The reconciler's retention step: jobs finished more than `archiveAfterS` ago, oldest first,
 * batch after batch while batches come back full and time is left, so the work of a pass follows
 * the backlog and the archive keeps up with the rate at which jobs finish; keyset-paged on
 * (finished_at, id) within the pass, past any job a batch had to leave. Returns the jobs archived.
 */
export async function archiveFinished(
  db: D1Database,
  videos: R2Bucket,
  pass: ArchivePass,
): Promise<number> {
  let after = ARCHIVE_START;
  let archived = 0;
  for (;;) {
    const rows = await archivableJobs(db, pass.archiveAfterS, after, pass.batch);
    const last = rows.at(-1);
    if (!last) return archived;
    after = { finished_at: last.finished_at ?? "", id: last.id };
    const batch = await archiveJobs(db, videos, rows);
    archived += batch.archived;
    pass.onArchived?.(batch.archived);
    if (rows.length < pass.batch || Date.now() >= pass.deadline) return archived;
  }
}

/** Job ids as the API hands them out (UUIDs); anything else has no archive to look for. */
const JOB_ID = /^[0-9A-Za-z-]{1,64}$/;

/** An archived job, `archived: true`, with its events; null when there is no archive of it. */
export async function readArchivedJob(
  videos: R2Bucket,
  jobId: string,
): Promise<ArchivedJob | null> {
  if (!JOB_ID.test(jobId)) return null;
  const object = await videos.get(archiveKey(jobId));
  if (!object) return null;
  const archive = await object.json<ArchivedJob>();
  // Archives written before GPU time was counted (migration 0010) have no gpu_ms / queue_ms;
  // those written before reuse and supersede (migration 0011), none of their fields.
  const job: Job = {
    ...archive.job,
    gpu_ms: archive.job.gpu_ms ?? 0,
    queue_ms: archive.job.queue_ms ?? 0,
    input_etag: archive.job.input_etag ?? null,
    supersede_key: archive.job.supersede_key ?? null,
    reuse: archive.job.reuse ?? true,
    follows: archive.job.follows ?? null,
    reused_from: archive.job.reused_from ?? null,
    // …and before lanes (migration 0012): standard.
    priority: archive.job.priority ?? "standard",
    // …and before endpoints (migration 0013): RUNPOD_ENDPOINT_ID.
    runpod_endpoint_id: archive.job.runpod_endpoint_id ?? null,
  };
  return { job: { ...job, archived: true }, events: archive.events };
}

/**
 * What D1 holds of a job (`inD1`), else what `pick` takes from its archive in R2; null when
 * neither has it, or when the archived job is not of one of `projects` (a scoped client token's).
 * The fallback of every route that reads one job: get, events, output, cancel.
 */
export async function orArchived<T>(
  videos: R2Bucket,
  jobId: string,
  inD1: T | null,
  pick: (archived: ArchivedJob) => T,
  projects: Projects = null,
): Promise<T | null> {
  if (inD1 !== null) return inD1;
  const archived = await readArchivedJob(videos, jobId);
  if (!archived) return null;
  if (projects !== null && !projects.includes(archived.job.project_id)) return null;
  return pick(archived);
}

/**
 * The job as GET /exports/{id} answers it: from D1, else from its archive (`archived: true`).
 * `primary`: when `db` may be a replica, the primary is asked before the archive (a job created
 * a moment ago may not have reached the replica yet). `projects`: a scoped client token's, checked
 * by the statement that reads the job (null: every project).
 */
export async function findJob(
  db: D1Database,
  videos: R2Bucket,
  jobId: string,
  primary?: D1Database,
  projects: Projects = null,
): Promise<Job | null> {
  const row =
    (await getJob(db, jobId, projects)) ??
    (primary ? await getJob(primary, jobId, projects) : null);
  return orArchived(videos, jobId, row && toJob(row), (archived) => archived.job, projects);
}
