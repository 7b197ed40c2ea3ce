// Pure text formatting for the operators' CLI (scripts/dlq.ts): tables, `key: value` blocks,
// ages. No I/O here, so it is unit-tested directly.
import type { DispatchStatus } from "../shared/dispatcher.ts";
import type { DeadLetterRow } from "../shared/sql/dead-letters.ts";
import type { Job } from "../shared/sql/jobs/row.ts";
import type { Stats } from "../shared/sql/stats.ts";

/** A dead letter as the API returns it: the row with `body` parsed when it is JSON. */
export type DeadLetter = Omit<DeadLetterRow, "body"> & { body: unknown };

export interface DeadLetterPage {
  dead_letters: DeadLetter[];
  next_cursor: string | null;
}

export interface DeadLetterDetail {
  dead_letter: DeadLetter;
  job: Job | null;
}

/** GET /stats: the counts, and the dispatch gate (null when the producer could not reach it). */
export type StatsAnswer = Stats & {
  dispatch: DispatchStatus | null;
  /** Every endpoint RUNPOD_ENDPOINTS names; absent from older producers. */
  dispatch_by_endpoint?: Record<string, DispatchStatus | null>;
};

export type { DispatchStatus, Stats };

/** POST /admin/jobs/retry's answer. */
export interface RetryResult {
  retried: number;
  job_ids: string[];
}

/** A cell's text: `-` for null/undefined, strings as they are, anything else as JSON. */
export function cell(value: unknown): string {
  if (value === null || value === undefined) return "-";
  return typeof value === "string" ? value : JSON.stringify(value);
}

/** Columns padded to their widest cell, two spaces apart, no trailing spaces. */
export function renderTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((header, i) =>
    Math.max(header.length, ...rows.map((row) => (row[i] ?? "").length)),
  );
  const line = (cells: string[]) =>
    widths
      .map((width, i) => (cells[i] ?? "").padEnd(width))
      .join("  ")
      .trimEnd();
  return [line(headers), ...rows.map(line)].join("\n");
}

/** `key: value` lines with the values aligned; a multi-line value stays in its column. */
export function renderKeyValues(pairs: [string, string][], indent = ""): string {
  const width = Math.max(0, ...pairs.map(([key]) => key.length)) + 1;
  return pairs
    .map(([key, value]) => {
      const pad = `${indent}${" ".repeat(width + 1)}`;
      const text = value.split("\n").join(`\n${pad}`);
      return `${indent}${`${key}:`.padEnd(width)} ${text}`;
    })
    .join("\n");
}

/** A duration in seconds as its two largest units: `45s`, `3m 12s`, `2h 5m`, `1d 3h`. */
export function formatAge(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds)) return "-";
  let rest = Math.max(0, Math.round(seconds));
  const parts: string[] = [];
  for (const [unit, size] of [
    ["d", 86_400],
    ["h", 3_600],
    ["m", 60],
    ["s", 1],
  ] as const) {
    const n = Math.floor(rest / size);
    rest -= n * size;
    if (parts.length > 0 || n > 0 || size === 1) parts.push(`${n}${unit}`);
  }
  return parts.slice(0, 2).join(" ");
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;

/** `list`: the table, then a count line that says when there are more pages. */
export function formatDeadLetterList(page: DeadLetterPage): string {
  const count = plural(page.dead_letters.length, "dead letter");
  const more = page.next_cursor === null ? "" : " (more: run with --all)";
  if (page.dead_letters.length === 0) return `${count}${more}`;
  const table = renderTable(
    ["ID", "RECEIVED", "QUEUE", "REASON", "ATTEMPTS", "JOB", "JOB STATUS", "REPLAYED"],
    page.dead_letters.map((d) => [
      d.id,
      d.received_at,
      d.queue,
      d.reason,
      cell(d.attempts),
      cell(d.job_id),
      cell(d.job_status),
      cell(d.replayed_at),
    ]),
  );
  return `${table}\n\n${count}${more}`;
}

const JOB_FIELDS = [
  "id",
  "project_id",
  "type",
  "status",
  "retry_count",
  "attempt",
  "version",
  "progress",
  "error",
  "runpod_job_id",
  "created_at",
] as const;

/** `show`: the dead letter (body pretty-printed), then its job or `job: none`. */
export function formatDeadLetterDetail({ dead_letter: d, job }: DeadLetterDetail): string {
  const body = typeof d.body === "string" ? d.body : JSON.stringify(d.body, null, 2);
  const letter = renderKeyValues([
    ["id", d.id],
    ["received_at", d.received_at],
    ["queue", d.queue],
    ["reason", d.reason],
    ["attempts", cell(d.attempts)],
    ["job_id", cell(d.job_id)],
    ["job_status", cell(d.job_status)],
    ["replayed_at", cell(d.replayed_at)],
    ["body", body],
  ]);
  if (!job) return `${letter}\n\njob: none`;
  const jobLines = renderKeyValues(
    JOB_FIELDS.map((key) => [key, cell(job[key])]),
    "  ",
  );
  return `${letter}\n\njob:\n${jobLines}`;
}

/**
 * The dispatch gate on one line: `running since T, 3 runs in the last 10 s`; a reason (why it
 * paused) in parentheses after the state; the cap and why; the fleet when known; `unknown (…)`
 * when the producer could not reach it.
 */
/** `; 2 interactive, 7 batch`: the lanes with jobs waiting, when any but standard has some. */
function lanesOf(dispatch: DispatchStatus): string {
  const lanes = dispatch.waiting_by_lane;
  if (!lanes || lanes.interactive + lanes.batch === 0) return "";
  const parts = (["interactive", "standard", "batch"] as const)
    .filter((lane) => lanes[lane] > 0)
    .map((lane) => `${lanes[lane]} ${lane}`);
  return `; ${parts.join(", ")}`;
}

export function formatDispatch(dispatch: DispatchStatus | null): string {
  if (dispatch === null) return "unknown (the producer could not reach the dispatch gate)";
  const reason = dispatch.reason ? ` (${dispatch.reason})` : "";
  const runs = plural(dispatch.runs_last_10s, "run");
  const slots =
    `${dispatch.in_flight}/${dispatch.max_in_flight} in flight (${dispatch.mode}: ${dispatch.cap_reason}), ` +
    `${dispatch.waiting} waiting (${plural(dispatch.waiting_keys, "key")}${lanesOf(dispatch)})`;
  const fleet = dispatch.fleet
    ? `; fleet ${dispatch.fleet.ready} ready, ${dispatch.fleet.running} running, ` +
      `${dispatch.fleet.initializing} starting, ${dispatch.fleet.throttled} throttled, ` +
      `${dispatch.fleet.in_queue} queued at RunPod`
    : "";
  return `${dispatch.state}${reason} since ${dispatch.since}, ${runs} in the last 10 s; ${slots}${fleet}`;
}

/**
 * `retry`: how many jobs went back to pending, one ID a line; given IDs that were not retried
 * (not `error`, cancelled, or unknown) are listed after.
 */
export function formatRetryResult(result: RetryResult, requested: string[] = []): string {
  const head = `retried ${plural(result.retried, "job")}`;
  const lines =
    result.retried === 0
      ? [`${head} (only error jobs that were not cancelled are retried)`]
      : [`${head}: pending again, retry budget restored`, ...result.job_ids.map((id) => `  ${id}`)];
  const retried = new Set(result.job_ids);
  const skipped = [...new Set(requested)].filter((id) => !retried.has(id));
  if (skipped.length > 0 && result.retried > 0) {
    lines.push(
      `not retried (not error, cancelled or unknown): ${plural(skipped.length, "job")}`,
      ...skipped.map((id) => `  ${id}`),
    );
  }
  return lines.join("\n");
}

/** `stats`: jobs by status, the oldest pending job's age, stuck claims, dead letters, dispatch. */
export function formatStats(stats: StatsAnswer): string {
  const jobs = Object.entries(stats.jobs)
    .map(([status, n]) => `${n} ${status}`)
    .join(", ");
  const oldest =
    stats.oldest_pending_age_s === null
      ? "none"
      : `${formatAge(stats.oldest_pending_age_s)} (created ${cell(stats.oldest_pending_created_at)})`;
  return renderKeyValues([
    ["jobs", jobs],
    ["oldest pending", oldest],
    ["processing without run", String(stats.processing_without_run)],
    [
      "dead letters",
      `${stats.dead_letters.total} total, ${stats.dead_letters.not_replayed} not replayed`,
    ],
    // An older producer's answer has no dispatch at all: say nothing rather than "unknown".
    ...(stats.dispatch === undefined
      ? []
      : [["dispatch", formatDispatch(stats.dispatch)] as [string, string]]),
    // With several endpoints (RUNPOD_ENDPOINTS), each one's dispatcher.
    ...(Object.keys(stats.dispatch_by_endpoint ?? {}).length > 1
      ? Object.entries(stats.dispatch_by_endpoint ?? {}).map(
          ([id, dispatch]) => [`endpoint ${id}`, formatDispatch(dispatch)] as [string, string],
        )
      : []),
  ]);
}
