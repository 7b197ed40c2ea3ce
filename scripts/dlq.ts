// `npm run dlq -- <command>`: operators' CLI for the producer's dead letters and stats
// (the bearer ADMIN_TOKEN routes). `main` takes its I/O as arguments so tests can drive it.
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import {
  type DeadLetterDetail,
  type DeadLetterPage,
  formatDeadLetterDetail,
  formatDeadLetterList,
  formatStats,
  type Stats,
} from "./dlq-format.ts";

export const DEFAULT_URL = "http://127.0.0.1:8787";
export const DEFAULT_TOKEN = "dev-admin-token";

export const USAGE = `Usage: npm run dlq -- <command> [args] [options]

Inspect and replay the producer's dead letters (admin API).

Commands:
  list [--limit N] [--all]  dead letters, newest first: N per page (default 20, at most 100);
                            --all follows every page
  show ID                   one dead letter and its job
  replay ID                 put the dead letter's job back to pending, retry budget restored
  delete ID                 delete the dead letter
  stats                     jobs by status, oldest pending age, dead-letter counts
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

/** One API call: the parsed JSON answer (null for an empty body), or a Failure. */
async function call(target: Target, method: string, path: string): Promise<unknown> {
  let response: Response;
  let text: string;
  try {
    response = await target.io.fetch(`${target.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${target.token}`, accept: "application/json" },
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
      ? `${apiError.code}: ${apiError.message}`
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
  if (!withId && !["list", "stats"].includes(command)) {
    return usageError(`unknown command: ${command}`);
  }
  if (withId && rest.length === 0) return usageError(`${command} needs a dead letter ID`);
  const extra = rest.slice(withId ? 1 : 0);
  if (extra.length > 0) return usageError(`too many arguments: ${extra.join(" ")}`);
  const limit = values.limit ?? "20";
  if (!/^[1-9]\d*$/.test(limit)) return usageError(`--limit must be a positive integer: ${limit}`);

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
      case "stats": {
        const stats = (await call(target, "GET", "/stats")) as Stats;
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
