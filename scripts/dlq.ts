// `npm run dlq -- <command>`: operators' CLI for the producer's dead letters, job retries and
// stats (the bearer ADMIN_TOKEN routes). `main` takes its I/O as arguments so tests can drive it.
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import {
  type DeadLetterDetail,
  type DeadLetterPage,
  formatDeadLetterDetail,
  formatDeadLetterList,
  formatRetryResult,
  formatStats,
  type RetryResult,
  type StatsAnswer,
} from "./dlq-format.ts";

export const DEFAULT_URL = "http://127.0.0.1:8787";
export const DEFAULT_TOKEN = "dev-admin-token";

export const USAGE = `Usage: npm run dlq -- <command> [args] [options]

Inspect and replay the producer's dead letters, retry failed jobs (admin API).

Commands:
  list [--limit N] [--all]  dead letters, newest first: N per page (default 20, at most 100);
                            --all follows every page
  show ID                   one dead letter and its job
  replay ID                 put the dead letter's job back to pending, retry budget restored
  delete ID                 delete the dead letter
  retry JOB_ID [JOB_ID...]  put these error jobs back to pending (at most 100), retry budget
                            restored; jobs that are not error, or were cancelled, are skipped
  retry --error-prefix TEXT [--created-after T] [--created-before T] [--limit N]
                            the same for error jobs matching a filter (at least one of the
                            three): error starting with TEXT, created at or after T, before T
                            (UTC, YYYY-MM-DD[THH:MM[:SS]][Z]); oldest first, N at most
                            (default 100, at most 1000)
  stats                     jobs by status, oldest pending age, dead-letter counts, dispatch
                            state (running, paused or probing)
  help                      this text

Options:
  --url URL      the producer (env REEL_EXPORTS_URL, default ${DEFAULT_URL})
  --token TOKEN  admin bearer token (env ADMIN_TOKEN, default ${DEFAULT_TOKEN})
  --json         print the API's JSON answer instead of tables
  -h, --help     this text

Exit status: 0 done, 1 the API answered an error or could not be reached, 2 usage error.
`;

export interface Io {
  fetch: typeof fetch;
  /** Receives whole lines (ending in "\n"), as process.stdout.write would. */
  out: (s: string) => void;
  err: (s: string) => void;
  env: Record<string, string | undefined>;
}

/** A failure to report as `error: <message>` with exit status 1. */
class Failure extends Error {}

interface Target {
  io: Io;
  url: string;
  token: string;
}

/** The most specific reason fetch gives ("connect ECONNREFUSED 127.0.0.1:8787"). */
function networkReason(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause: unknown = error.cause;
  if (cause instanceof Error) {
    const code = "code" in cause ? String(cause.code) : "";
    return cause.message || code || error.message;
  }
  return error.message;
}

function apiErrorOf(data: unknown): { code: string; message: string } | null {
  if (typeof data !== "object" || data === null || !("error" in data)) return null;
  const error: unknown = data.error;
  if (typeof error !== "object" || error === null) return null;
  const code = "code" in error ? String(error.code) : "unknown";
  const message = "message" in error ? String(error.message) : "";
  return { code, message };
}

/** The validation issues of a 400, as `; field: message` (zod's paths joined with dots). */
function issuesOf(data: unknown): string {
  if (typeof data !== "object" || data === null || !("error" in data)) return "";
  const error: unknown = data.error;
  if (typeof error !== "object" || error === null || !("issues" in error)) return "";
  if (!Array.isArray(error.issues)) return "";
  return error.issues
    .map((issue: unknown) => {
      if (typeof issue !== "object" || issue === null) return "";
      const path = "path" in issue && Array.isArray(issue.path) ? issue.path.join(".") : "";
      const message = "message" in issue ? String(issue.message) : "";
      return `; ${path ? `${path}: ` : ""}${message}`;
    })
    .join("");
}

/** One API call: the parsed JSON answer (null for an empty body), or a Failure. */
async function call(
  target: Target,
  method: string,
  path: string,
  body?: unknown,
): Promise<unknown> {
  let response: Response;
  let text: string;
  const headers: Record<string, string> = {
    authorization: `Bearer ${target.token}`,
    accept: "application/json",
  };
  if (body !== undefined) headers["content-type"] = "application/json";
  try {
    response = await target.io.fetch(`${target.url}${path}`, {
      method,
      headers,
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    text = await response.text();
  } catch (error) {
    throw new Failure(`cannot reach ${target.url}: ${networkReason(error)}`);
  }
  let data: unknown = null;
  let parsed = text === "";
  if (!parsed) {
    try {
      data = JSON.parse(text);
      parsed = true;
    } catch {}
  }
  if (!response.ok) {
    const apiError = apiErrorOf(data);
    const detail = apiError
      ? `${apiError.code}: ${apiError.message}${issuesOf(data)}`
      : `unexpected_answer: ${text.slice(0, 200) || response.statusText}`;
    throw new Failure(`${detail} (HTTP ${response.status})`);
  }
  if (!parsed) {
    throw new Failure(
      `unexpected_answer: not JSON: ${text.slice(0, 200)} (HTTP ${response.status})`,
    );
  }
  return data;
}

async function list(target: Target, limit: string, all: boolean): Promise<DeadLetterPage> {
  const path = (cursor: string | null) =>
    `/dead-letters?limit=${limit}${cursor === null ? "" : `&cursor=${encodeURIComponent(cursor)}`}`;
  let page = (await call(target, "GET", path(null))) as DeadLetterPage;
  const letters = [...page.dead_letters];
  const seen = new Set<string>();
  while (all && page.next_cursor !== null) {
    if (seen.has(page.next_cursor)) throw new Failure("the API returned the same cursor twice");
    seen.add(page.next_cursor);
    page = (await call(target, "GET", path(page.next_cursor))) as DeadLetterPage;
    letters.push(...page.dead_letters);
  }
  return { dead_letters: letters, next_cursor: page.next_cursor };
}

/** Runs one command; returns the exit status (0 done, 1 failed, 2 usage error). */
export async function main(argv: string[], io: Io): Promise<number> {
  const usageError = (message: string) => {
    io.err(`error: ${message}\n\n${USAGE}`);
    return 2;
  };
  let args: ReturnType<typeof parse>;
  try {
    args = parse(argv);
  } catch (error) {
    return usageError(error instanceof Error ? error.message : String(error));
  }
  const { values, positionals } = args;
  const [command = "help", ...rest] = positionals;
  if (values.help || command === "help") {
    io.out(USAGE);
    return 0;
  }

  const withId = ["show", "replay", "delete"].includes(command);
  if (!withId && !["list", "stats", "retry"].includes(command)) {
    return usageError(`unknown command: ${command}`);
  }
  if (withId && rest.length === 0) return usageError(`${command} needs a dead letter ID`);
  const extra = command === "retry" ? [] : rest.slice(withId ? 1 : 0);
  if (extra.length > 0) return usageError(`too many arguments: ${extra.join(" ")}`);
  const limit = values.limit ?? "20";
  if (!/^[1-9]\d*$/.test(limit)) return usageError(`--limit must be a positive integer: ${limit}`);
  const filterFlags = (["error-prefix", "created-after", "created-before"] as const).filter(
    (flag) => values[flag] !== undefined,
  );
  if (command !== "retry" && filterFlags.length > 0) {
    return usageError(`--${filterFlags[0]} is an option of retry only`);
  }
  let retryBody: RetryBody | undefined;
  if (command === "retry") {
    const body = retryBodyOf(rest, values);
    if (typeof body === "string") return usageError(body);
    retryBody = body;
  }

  const url = (values.url || io.env.REEL_EXPORTS_URL || DEFAULT_URL).replace(/\/+$/, "");
  if (!URL.canParse(url)) return usageError(`not a URL: ${url}`);
  const target: Target = { io, url, token: values.token || io.env.ADMIN_TOKEN || DEFAULT_TOKEN };
  const id = rest[0] ?? "";
  const idPath = `/dead-letters/${encodeURIComponent(id)}`;
  const print = (data: unknown, text: () => string) =>
    io.out(`${values.json ? JSON.stringify(data, null, 2) : text()}\n`);

  try {
    switch (command) {
      case "list": {
        const page = await list(target, limit, values.all === true);
        print(page, () => formatDeadLetterList(page));
        break;
      }
      case "show": {
        const detail = (await call(target, "GET", idPath)) as DeadLetterDetail;
        print(detail, () => formatDeadLetterDetail(detail));
        break;
      }
      case "replay": {
        const replayed = (await call(target, "POST", `${idPath}/replay`)) as DeadLetterDetail;
        const jobId = replayed.job?.id ?? "-";
        print(
          replayed,
          () => `replayed ${id}: job ${jobId} is pending again (retry budget restored)`,
        );
        break;
      }
      case "delete": {
        await call(target, "DELETE", idPath);
        // 204 has no body: --json prints what was done instead.
        print({ deleted: id }, () => `deleted ${id}`);
        break;
      }
      case "retry": {
        const result = (await call(target, "POST", "/admin/jobs/retry", retryBody)) as RetryResult;
        print(result, () => formatRetryResult(result, rest));
        break;
      }
      case "stats": {
        const stats = (await call(target, "GET", "/stats")) as StatsAnswer;
        print(stats, () => formatStats(stats));
        break;
      }
    }
  } catch (error) {
    io.err(`error: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
  return 0;
}

type RetryBody =
  | { job_ids: string[] }
  | { error_prefix?: string; created_after?: string; created_before?: string; limit?: number };

/** The route's timestamp: a UTC date, optionally with a time (`T` or a space) and a `Z`. */
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?)?Z?$/;

/** `retry`'s request body from its arguments, or a usage error's message. */
function retryBodyOf(
  ids: string[],
  values: ReturnType<typeof parse>["values"],
): RetryBody | string {
  const prefix = values["error-prefix"];
  const after = values["created-after"];
  const before = values["created-before"];
  const filtered = prefix !== undefined || after !== undefined || before !== undefined;
  if (ids.length > 0) {
    if (filtered || values.limit !== undefined) {
      return "retry takes job IDs or filter options (--error-prefix, --created-after, --created-before, --limit), not both";
    }
    if (ids.length > 100) return `retry takes at most 100 job IDs at once, not ${ids.length}`;
    return { job_ids: ids };
  }
  if (!filtered || (prefix === "" && after === undefined && before === undefined)) {
    return "retry needs job IDs, or at least one of --error-prefix TEXT, --created-after T, --created-before T";
  }
  for (const [flag, value] of [
    ["--created-after", after],
    ["--created-before", before],
  ] as const) {
    if (value !== undefined && !TIMESTAMP.test(value)) {
      return `${flag} must be a UTC timestamp (YYYY-MM-DD[THH:MM[:SS]][Z]): ${value}`;
    }
  }
  const limit = values.limit === undefined ? undefined : Number(values.limit);
  if (limit !== undefined && limit > 1000) return `--limit of retry is at most 1000: ${limit}`;
  return {
    ...(prefix ? { error_prefix: prefix } : {}),
    ...(after === undefined ? {} : { created_after: after }),
    ...(before === undefined ? {} : { created_before: before }),
    ...(limit === undefined ? {} : { limit }),
  };
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      url: { type: "string" },
      token: { type: "string" },
      json: { type: "boolean" },
      limit: { type: "string" },
      all: { type: "boolean" },
      "error-prefix": { type: "string" },
      "created-after": { type: "string" },
      "created-before": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const code = await main(process.argv.slice(2), {
    fetch,
    out: (s) => process.stdout.write(s),
    err: (s) => process.stderr.write(s),
    env: process.env,
  });
  process.exit(code);
}
