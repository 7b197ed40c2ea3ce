// `npx node scripts/restore-archived-job.ts FILE` (or `-` for stdin; npx runs the devDependency's
// Node 22): prints the SQL that puts an archived job (shared/archive.ts) back into D1, for
// `wrangler d1 execute --file` (checked with `--local` too):
//
//   npx wrangler r2 object get reel-ballers-videos/archive/export_jobs/<id>.json --remote --file job.json
//   npx node scripts/restore-archived-job.ts job.json > restore.sql
//   npx wrangler d1 execute reel-ballers --remote --file restore.sql
//
// What comes back: the row as GET /exports/{id} answered it and its timeline. finished_at is set
// to now, so the job stays another ARCHIVE_AFTER_S before the reconciler archives it again (the
// object in R2 is left as it is and overwritten then). The Idempotency-Key is not restored: it
// was forgotten when the job was archived and another request may have taken it since. Dead
// letters are not archived, so none come back. The restored events keep their order with
// versions −n…−1 (the archive does not hold the original ones), so they sort before any new one.
// The job's status count follows by trigger and `archive_counts` goes down by one. Its identity
// hash (params_hash, internal) is recomputed, so a restored complete job is reused again. A job that is
// in D1 already fails at the first statement (its primary key).
//
// `main` takes its I/O as arguments so that tests can drive it.
import { createHash } from "node:crypto";
import { pathToFileURL } from "node:url";
import type { ArchivedJob } from "../shared/archive.ts";
import { canonicalJson, type ExportIdentity } from "../shared/identity.ts";

/** shared/identity.ts's paramsHash, synchronously (the archive does not hold it). */
function paramsHashOf(job: ExportIdentity): string {
  return createHash("sha256")
    .update(
      canonicalJson({ type: job.type, input_video_key: job.input_video_key, params: job.params }),
    )
    .digest("hex");
}

export const USAGE = `Usage: npx node scripts/restore-archived-job.ts FILE|-

Prints the SQL that restores an archived export job (archive/export_jobs/<id>.json in R2) to D1.
Run it with: npx wrangler d1 execute reel-ballers --remote --file restore.sql
`;

const NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')";

/** A value as SQL literal text (no bindings in `wrangler d1 execute --file`). */
export function sqlLiteral(value: unknown): string {
  if (value === null || value === undefined) return "NULL";
  if (typeof value === "boolean") return value ? "1" : "0";
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new Error(`not a finite number: ${value}`);
    return String(value);
  }
  if (typeof value === "string") {
    if (value.includes("\u0000")) throw new Error("a string with a NUL character");
    return `'${value.replaceAll("'", "''")}'`;
  }
  throw new Error(`no SQL literal for ${typeof value}`);
}

function check(archive: unknown): asserts archive is ArchivedJob {
  const a = archive as Partial<ArchivedJob> | null;
  const job = a?.job;
  if (!job || typeof job.id !== "string" || !Array.isArray(a.events)) {
    throw new Error('not an archive object: expected {"job": {…}, "events": […]}');
  }
  if (job.status !== "complete" && job.status !== "error") {
    throw new Error(`an archived job is complete or error, this one is ${String(job.status)}`);
  }
}

/** Events per INSERT statement: far below D1's 100 KB statement length. */
const EVENTS_PER_INSERT = 100;

/** The statements, in the order they must run. */
export function restoreStatements(archive: unknown): string[] {
  check(archive);
  const { job, events } = archive;
  const L = sqlLiteral;
  const columns: [string, string][] = [
    ["id", L(job.id)],
    ["project_id", L(job.project_id)],
    ["user_id", L(job.user_id)],
    ["type", L(job.type)],
    ["status", L(job.status)],
    ["progress", L(job.progress)],
    ["input_video_key", L(job.input_video_key)],
    ["output_video_key", L(job.output_video_key)],
    ["params", L(JSON.stringify(job.params))],
    ["error", L(job.error)],
    ["retry_count", L(job.retry_count)],
    ["runpod_job_id", L(job.runpod_job_id)],
    ["created_at", L(job.created_at)],
    ["started_at", L(job.started_at)],
    ["completed_at", L(job.completed_at)],
    ["due_at", "NULL"],
    ["attempt", L(job.attempt)],
    ["version", L(job.version)],
    // Archives from before GPU time was counted (migration 0010) have none: 0.
    ["gpu_ms", L(job.gpu_ms ?? 0)],
    ["queue_ms", L(job.queue_ms ?? 0)],
    // Reuse and supersede (migration 0011); archives from before have none. The identity hash is
    // recomputed, so a restored complete job serves identical exports again.
    ["input_etag", L(job.input_etag ?? null)],
    ["params_hash", L(job.input_etag ? paramsHashOf(job) : null)],
    ["reuse", L(job.reuse ?? true)],
    ["supersede_key", L(job.supersede_key ?? null)],
    ["follows", L(job.follows ?? null)],
    ["reused_from", L(job.reused_from ?? null)],
    // Lanes (migration 0012); archives from before are standard.
    ["priority", L(job.priority ?? "standard")],
    // Endpoints (migration 0013); archives from before: NULL, RUNPOD_ENDPOINT_ID.
    ["runpod_endpoint_id", L(job.runpod_endpoint_id ?? null)],
    ["pending_since", L(job.created_at)],
    ["finished_at", NOW],
  ];
  const statements = [
    `INSERT INTO export_jobs (${columns.map(([name]) => name).join(", ")})
VALUES (${columns.map(([, value]) => value).join(", ")})`,
    // The insert trigger's `created` event: the archived timeline has the real one.
    `DELETE FROM export_job_events
WHERE job_id = ${L(job.id)} AND version = ${L(job.version)} AND type = 'created' AND ref = ''`,
    // …and its count in the day's usage: the job was counted when it was created (usage_daily
    // outlives archival), so a restore must not count it again.
    `UPDATE usage_daily SET exports = exports - 1
WHERE day = substr(${L(job.created_at)}, 1, 10) AND exports > 0
  AND ((kind = 'project' AND key = ${L(job.project_id)})${job.user_id === null ? "" : ` OR (kind = 'user' AND key = ${L(job.user_id)})`})`,
  ];
  for (let i = 0; i < events.length; i += EVENTS_PER_INSERT) {
    const rows = events.slice(i, i + EVENTS_PER_INSERT).map((event, j) => {
      const version = i + j - events.length;
      const values = [job.id, version, event.type, event.at, event.attempt];
      return `(${[...values, event.runpod_job_id, event.detail].map(L).join(", ")}, '')`;
    });
    statements.push(
      `INSERT INTO export_job_events (job_id, version, type, at, attempt, runpod_job_id, detail, ref)
VALUES ${rows.join(",\n       ")}`,
    );
  }
  statements.push(
    "UPDATE archive_counts SET archived = archived - 1 WHERE id = 1 AND archived > 0",
  );
  return statements;
}

export interface Io {
  readFile: (path: string) => Promise<string>;
  readStdin: () => Promise<string>;
  out: (s: string) => void;
  err: (s: string) => void;
}

/** Exit status: 0 printed, 1 the file could not be read or is no archive, 2 usage error. */
export async function main(argv: string[], io: Io): Promise<number> {
  const [file, ...rest] = argv;
  if (file === undefined || file === "-h" || file === "--help" || rest.length > 0) {
    (file === "-h" || file === "--help" ? io.out : io.err)(USAGE);
    return file === "-h" || file === "--help" ? 0 : 2;
  }
  try {
    const text = file === "-" ? await io.readStdin() : await io.readFile(file);
    io.out(`${restoreStatements(JSON.parse(text)).join(";\n")};\n`);
    return 0;
  } catch (error) {
    io.err(`error: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { readFile } = await import("node:fs/promises");
  const code = await main(process.argv.slice(2), {
    readFile: (path) => readFile(path, "utf8"),
    readStdin: async () => {
      const chunks: Buffer[] = [];
      for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
      return Buffer.concat(chunks).toString("utf8");
    },
    out: (s) => process.stdout.write(s),
    err: (s) => process.stderr.write(s),
  });
  process.exitCode = code;
}
