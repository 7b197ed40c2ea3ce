// BENCH ONLY, never deployed: one Worker, two configs (bench/worker/wrangler.toml for the D1
// figures, bench/worker/bare.toml for the bare producer). Routes:
//
//   POST /exports[?with=r2|r2,live]  the bare producer: parse the JSON body, one D1 insert (the
//                  producer's own INSERT_SQL.insert), one queue send, 202 {"job"} — what
//                  POST /exports cannot do less than. `with` adds what the producer does besides:
//                  `r2` its HEAD of input_video_key, `live` its live-status publication
//                  (shared/live-publisher.ts: one call, to the project's shard), to tell where
//                  the producer's time goes.
//   POST /sql      {"db": "ROWS"|"PLANS", "statements": [{"sql", "binds"}], "repeat"?: n}
//                  runs each statement (each `repeat` times, one after the other) and answers,
//                  per statement, every run's D1 meta (rows_read, rows_written, duration,
//                  size_after) and the first run's results. Local only: it runs whatever SQL it
//                  is given.
//   POST /archive  {"batch", "budgetMs", "archiveAfterS"}: one archiving pass of the reconciler
//                  (shared/archive.ts archiveFinished) on ARCHIVE and VIDEOS; answers the jobs
//                  archived and the pass's time as this Worker saw it (bench/archive-rate.ts).
//   GET  /health

import { archiveFinished } from "../../shared/archive.ts";
import type { LiveHub } from "../../shared/live-hub.ts";
import { livePublisher } from "../../shared/live-publisher.ts";
import type { JobType } from "../../shared/schemas.ts";
import { INSERT_SQL, insertBinds } from "../../shared/sql/jobs/insert.ts";
import { type JobRow, toJob } from "../../shared/sql/jobs/row.ts";

interface Env {
  DB?: D1Database;
  ROWS?: D1Database;
  PLANS?: D1Database;
  ARCHIVE?: D1Database;
  QUEUE?: Queue<{ job_id: string }>;
  VIDEOS?: R2Bucket;
  LIVE_HUB?: DurableObjectNamespace<LiveHub>;
}

interface Statement {
  sql: string;
  binds?: unknown[];
}

interface SqlRequest {
  db: "ROWS" | "PLANS" | "ARCHIVE";
  statements: Statement[];
  repeat?: number;
}

interface RunMeta {
  rows_read: number;
  rows_written: number;
  /** D1's own duration of the statement (ms). */
  duration: number;
  /** Around the call, as this Worker sees it (ms; workerd's clock moves on I/O only). */
  wall_ms: number;
  changes: number;
  /** The database's size in bytes after the statement (D1's meta.size_after). */
  size_after: number;
}

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

async function bareExport(request: Request, env: Env): Promise<Response> {
  if (!env.DB || !env.QUEUE) return json(500, { error: "not the bare producer's config" });
  const extra = new Set((new URL(request.url).searchParams.get("with") ?? "").split(","));
  const body = (await request.json()) as {
    project_id: number;
    user_id?: number;
    type: string;
    input_video_key: string;
    params: unknown;
  };
  if (extra.has("r2") && !(await env.VIDEOS?.head(body.input_video_key))) {
    return json(422, { error: "input_not_found" });
  }
  const row = await env.DB.prepare(INSERT_SQL.insert)
    .bind(
      ...insertBinds({
        id: crypto.randomUUID(),
        project_id: body.project_id,
        user_id: body.user_id,
        type: body.type as JobType,
        input_video_key: body.input_video_key,
        params: body.params as Record<string, unknown>,
      }),
    )
    .first<JobRow>();
  if (!row) return json(500, { error: "insert returned no row" });
  if (extra.has("live")) {
    await livePublisher(env)
      .publish([toJob(row)])
      .catch(() => {});
  }
  await env.QUEUE.send({ job_id: row.id });
  return json(202, { job: row });
}

async function runSql(request: Request, env: Env): Promise<Response> {
  const { db: name, statements, repeat = 1 } = (await request.json()) as SqlRequest;
  const db = env[name];
  if (!db) return json(400, { error: `no database ${name} in this config` });
  const out: { runs: RunMeta[]; results: unknown[] }[] = [];
  for (const statement of statements) {
    const runs: RunMeta[] = [];
    let results: unknown[] = [];
    for (let i = 0; i < repeat; i++) {
      const started = performance.now();
      const answer = await db
        .prepare(statement.sql)
        .bind(...(statement.binds ?? []))
        .all();
      const meta = answer.meta as D1Meta & { rows_read?: number; rows_written?: number };
      runs.push({
        rows_read: meta.rows_read ?? 0,
        rows_written: meta.rows_written ?? 0,
        duration: meta.duration,
        wall_ms: performance.now() - started,
        changes: meta.changes,
        size_after: meta.size_after,
      });
      if (i === 0) results = answer.results;
    }
    out.push({ runs, results });
  }
  return json(200, { statements: out });
}

async function archivePass(request: Request, env: Env): Promise<Response> {
  if (!env.ARCHIVE || !env.VIDEOS) return json(500, { error: "not the D1 figures' config" });
  const { batch, budgetMs, archiveAfterS } = (await request.json()) as {
    batch: number;
    budgetMs: number;
    archiveAfterS: number;
  };
  const started = performance.now();
  let batches = 0;
  const archived = await archiveFinished(env.ARCHIVE, env.VIDEOS, {
    archiveAfterS,
    batch,
    deadline: Date.now() + budgetMs,
    onArchived: () => {
      batches += 1;
    },
  });
  return json(200, { archived, batches, worker_ms: performance.now() - started });
}

export default {
  async fetch(request, env): Promise<Response> {
    const { pathname } = new URL(request.url);
    try {
      if (pathname === "/health") return json(200, { ok: true });
      if (pathname === "/exports" && request.method === "POST") {
        return await bareExport(request, env);
      }
      if (pathname === "/sql" && request.method === "POST") return await runSql(request, env);
      if (pathname === "/archive" && request.method === "POST") {
        return await archivePass(request, env);
      }
      return json(404, { error: "not found" });
    } catch (error) {
      return json(500, { error: error instanceof Error ? error.message : String(error) });
    }
  },
} satisfies ExportedHandler<Env>;
