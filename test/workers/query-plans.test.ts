// Every SQL statement of the repository code, planned by the real D1 binding on the migrations as
// D1 leaves them (no ANALYZE): each must reach export_jobs through its primary key or an index
// range that fits what it needs, never a scan, and no statement may bind more than a handful of
// D1's 100 parameters (lists travel as one JSON array through json_each).

import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { DEAD_LETTER_SQL } from "../../shared/sql/dead-letters.ts";
import { EVENT_SQL } from "../../shared/sql/events.ts";
import { JOB_SQL } from "../../shared/sql/jobs/catalog.ts";
import { NOTIFY_SQL } from "../../shared/sql/notifications.ts";
import { RUN_SQL } from "../../shared/sql/runs.ts";
import { STATS_SQL } from "../../shared/sql/stats.ts";
import { freshProjectId, insertPendingJob, postJson, producerFetch, putInput } from "./helpers.ts";

const PK = "USING INDEX sqlite_autoindex_export_jobs_1";
const ids = JSON.stringify([crypto.randomUUID(), crypto.randomUUID()]);
const projects = JSON.stringify([1, 2, 3]);
const cursor = ["2026-01-01 00:00:00.000", "z"];
const delay = "+30 seconds";
const pairs = JSON.stringify([{ id: crypto.randomUUID(), version: 5 }]);
const EVENT_RANGE =
  "SEARCH export_job_events USING PRIMARY KEY (job_id=? AND version>? AND version<?)";
const IDENTICAL_ACTIVE =
  "idx_export_jobs_identical (project_id=? AND params_hash=? AND input_etag=? AND status=?)";
const IDENTICAL_COMPLETE = IDENTICAL_ACTIVE;
const ARCHIVE_COUNT = "SEARCH archive_counts USING INTEGER PRIMARY KEY (rowid=?)";

/** For each statement: sample parameters, and what its plan must reach export_jobs through. */
const EXPECTED: Record<string, { binds: unknown[]; uses: string[] }> = {
  "jobs.insert": {
    binds: [
      "i",
      1,
      null,
      "overlay",
      "k",
      "{}",
      null,
      null,
      '{"input_etag":"e","params_hash":"h","reuse":1,"supersede_key":null}',
    ],
    uses: [IDENTICAL_ACTIVE],
  },
  "jobs.batchJobs": {
    binds: [ids],
    uses: [`${PK} (id=?)`, IDENTICAL_COMPLETE],
  },
  "jobs.processingAmong": { binds: [ids, "d", "e"], uses: [`${PK} (id=?)`] },
  "jobs.recordHolder": { binds: ["e", "i", "e"], uses: [`${PK} (id=?)`] },
  "jobs.listByUser": {
    binds: [7, ...cursor, 21],
    uses: ["idx_export_jobs_user_created (user_id=? AND (created_at,id)<(?,?))"],
  },
  "jobs.listActiveByUser": {
    binds: [7, ...cursor, 21],
    uses: ["idx_export_jobs_user_created (user_id=? AND (created_at,id)<(?,?))"],
  },
  "jobs.byIdempotencyKey": { binds: [1, "key"], uses: ["idx_export_jobs_idempotency"] },
  "jobs.byId": { binds: ["i"], uses: [PK] },
  "jobs.byIds": { binds: ['["a","b"]'], uses: [`${PK} (id=?)`] },
  "jobs.byIdempotencyKeys": {
    binds: ['[[1,"a"],[2,"b"]]'],
    uses: ["idx_export_jobs_idempotency (project_id=? AND idempotency_key=?)"],
  },
  "jobs.quotaCheck": { binds: ["b", '{"user:1":2}', 3], uses: [] },
  "jobs.quotaChecked": { binds: ["b"], uses: [] },
  "jobs.byIdInProjects": { binds: ["i", "[1,2]"], uses: [PK] },
  "jobs.listByProjects": {
    binds: [projects, ...cursor, 21],
    uses: ["idx_export_jobs_project_created (project_id=? AND (created_at,id)<(?,?))"],
  },
  "jobs.listActiveByProjects": {
    binds: [projects, ...cursor, 21],
    uses: [
      "idx_export_jobs_project_status_created (project_id=? AND status=? AND (created_at,id)<(?,?))",
    ],
  },
  "jobs.listByProjectsAndStatus": {
    binds: [projects, "error", ...cursor, 21],
    uses: ["idx_export_jobs_project_created (project_id=? AND (created_at,id)<(?,?))"],
  },
  "jobs.listAll": {
    binds: [...cursor, 51],
    uses: ["idx_export_jobs_created ((created_at,id)<(?,?))"],
  },
  "jobs.listAllByStatus": {
    binds: ["error", ...cursor, 51],
    uses: [
      "idx_export_jobs_status_created (status=? AND created_at<?)",
      "TEMP B-TREE FOR LAST TERM OF ORDER BY",
    ],
  },
  "jobs.listByProjectsAndActiveStatus": {
    binds: [projects, "processing", ...cursor, 21],
    uses: [
      "idx_export_jobs_project_status_created (project_id=? AND status=? AND (created_at,id)<(?,?))",
    ],
  },
  "jobs.claim": { binds: [delay, "token", "endpoint", ids], uses: [`${PK} (id=?)`] },
  "jobs.claimedBy": { binds: [ids, "token"], uses: [`${PK} (id=?)`] },
  "jobs.recordRun": { binds: ["r", delay, "i", 1], uses: [`${PK} (id=?)`] },
  "jobs.release": { binds: [delay, "i", 1], uses: [`${PK} (id=?)`] },
  "jobs.failWithoutRun": {
    binds: ["e", delay, "submit_failed", "i", 1],
    uses: [`${PK} (id=?)`],
  },
  "jobs.failRecordedRun": { binds: [1000, 10, "e", delay, "i", 1, "r"], uses: [`${PK} (id=?)`] },
  "jobs.failUnrecordedRun": { binds: [1000, 10, "e", delay, "r", "i", 1], uses: [`${PK} (id=?)`] },
  "jobs.completeRecordedRun": { binds: [1000, 10, "k", "i", 1, "r"], uses: [`${PK} (id=?)`] },
  "jobs.completeUnrecordedRun": { binds: [1000, 10, "k", "r", "i", 1], uses: [`${PK} (id=?)`] },
  "jobs.cancelledRecordedRun": { binds: [1000, 10, "i", 1, "r"], uses: [`${PK} (id=?)`] },
  "jobs.cancelledUnrecordedRun": { binds: [1000, 10, "r", "i", 1], uses: [`${PK} (id=?)`] },
  "jobs.cancel": { binds: ["i"], uses: [`${PK} (id=?)`] },
  "jobs.cancelInProjects": { binds: ["i", "[1,2]"], uses: [`${PK} (id=?)`] },
  "jobs.cancelUnconfirmed": { binds: [delay, "i", "r"], uses: [`${PK} (id=?)`] },
  "jobs.cancelConfirmed": { binds: ["i"], uses: [`${PK} (id=?)`] },
  "jobs.progress": { binds: [50, delay, 50, "i", 1, 50], uses: [`${PK} (id=?)`] },
  "jobs.retryByIds": { binds: [ids], uses: [`${PK} (id=?)`] },
  "jobs.retryByFilter": {
    binds: ["", "9999", "RunPod", "RunPod", 100],
    uses: [
      `${PK} (id=?)`,
      "idx_export_jobs_status_created (status=? AND created_at>? AND created_at<?)",
    ],
  },
  "jobs.leaseLostPending": {
    binds: ["-900 seconds", 100],
    uses: [`${PK} (id=?)`, "idx_export_jobs_status_due (status=? AND due_at<?)"],
  },
  "jobs.hold": { binds: ["endpoint", ids], uses: [`${PK} (id=?)`] },
  "jobs.held": {
    binds: [0, 100],
    uses: ["idx_export_jobs_status_due (status=? AND due_at=? AND rowid>?)", `${PK} (id=?)`],
  },
  "jobs.refollow": { binds: ["i"], uses: [`${PK} (id=?)`, IDENTICAL_ACTIVE] },
  "jobs.adoptUnwantedRun": { binds: ["r", delay, "i", 1], uses: [`${PK} (id=?)`] },
  "jobs.followersOf": { binds: [ids], uses: ["idx_export_jobs_follows (follows=? AND status=?)"] },
  "jobs.reuse": { binds: ["k", "s", "i"], uses: [`${PK} (id=?)`] },
  "jobs.supersede": {
    binds: ["n", delay, 1, "key", "n", "h", "e", "n"],
    uses: [
      "idx_export_jobs_supersede (project_id=? AND supersede_key=? AND status=?)",
      `${PK} (id=?)`,
    ],
  },
  "jobs.supersededBy": {
    binds: [1, "key", "n"],
    uses: ["idx_export_jobs_supersede (project_id=? AND supersede_key=? AND status=?)"],
  },
  "jobs.leaseDueProcessing": {
    binds: [delay, 100],
    uses: [`${PK} (id=?)`, "idx_export_jobs_status_due (status=? AND due_at<?)"],
  },
  "jobs.leaseUnconfirmedCancels": {
    binds: ["+60 seconds", 100],
    uses: [`${PK} (id=?)`, "idx_export_jobs_status_due (status=? AND due_at<?)"],
  },
  "jobs.expirePending": {
    binds: ["expired", "2026-01-01", "2026-01-01", 100],
    uses: [`${PK} (id=?)`, "idx_export_jobs_status_created (status=? AND created_at<?)"],
  },
  "jobs.archivable": {
    binds: ["", "", "-2592000 seconds", 50],
    uses: ["idx_export_jobs_finished ((finished_at,id)>(?,?) AND finished_at<?)"],
  },
  "jobs.archivedUnchanged": { binds: [pairs], uses: [`${PK} (id=?)`] },
  "jobs.deleteArchived": { binds: [pairs], uses: [`${PK} (id=?)`] },
  "deadLetters.insert": { binds: ["m", "q", "dead_lettered", "{}", 1, "j", "j"], uses: [PK] },
  "deadLetters.list": {
    binds: [...cursor, 21],
    uses: ["idx_dead_letters_received ((received_at,id)<(?,?))"],
  },
  "deadLetters.byId": { binds: ["m"], uses: ["sqlite_autoindex_dead_letters_1 (id=?)"] },
  "deadLetters.delete": { binds: ["m"], uses: ["sqlite_autoindex_dead_letters_1 (id=?)"] },
  "deadLetters.markReplayed": {
    binds: ["t", "m"],
    uses: ["sqlite_autoindex_dead_letters_1 (id=?)", `${PK} (id=?)`],
  },
  "deadLetters.replayJob": {
    binds: ["m", "t"],
    uses: [`${PK} (id=?)`, "sqlite_autoindex_dead_letters_1 (id=?)"],
  },
  "deadLetters.deleteArchived": {
    binds: [pairs],
    uses: ["idx_dead_letters_job (job_id=?)", `${PK} (id=?)`],
  },
  "events.byJob": {
    binds: ["j"],
    uses: ["SEARCH export_job_events USING PRIMARY KEY (job_id=?)"],
  },
  "events.byJobs": { binds: [ids, 0, 900], uses: [EVENT_RANGE] },
  "events.deleteArchived": { binds: [pairs, 0, 900], uses: [EVENT_RANGE, `${PK} (id=?)`] },
  "notify.setEnabled": { binds: [1, 1], uses: [] },
  "notify.lease": {
    binds: ["+60 seconds", "msg_a_1"],
    uses: ["sqlite_autoindex_notifications_1 (id=?)"],
  },
  "notify.delivered": {
    binds: [200, "{}", "msg_a_1", 1],
    uses: ["sqlite_autoindex_notifications_1 (id=?)"],
  },
  "notify.retryLater": {
    binds: ["+5 seconds", 500, "HTTP 500", "{}", "msg_a_1", 1],
    uses: ["sqlite_autoindex_notifications_1 (id=?)"],
  },
  "notify.failed": {
    binds: [500, "HTTP 500", "{}", "msg_a_1", 1],
    uses: ["sqlite_autoindex_notifications_1 (id=?)"],
  },
  "notify.due": { binds: [100], uses: ["idx_notifications_due (due_at<?)"] },
  "notify.redeliver": { binds: ["msg_a_1"], uses: ["sqlite_autoindex_notifications_1 (id=?)"] },
  "notify.listByStatus": {
    binds: ["failed", "9999", "", 21],
    uses: ["idx_notifications_status (status=? AND (ended_at,id)<(?,?))"],
  },
  "notify.listAll": {
    binds: ["9999", "", 21, "9999", "", 21, "9999", "", 21, 21],
    uses: ["idx_notifications_status (status=? AND (ended_at,id)<(?,?))"],
  },
  "notify.deleteArchived": { binds: [pairs], uses: [] },
  "stats.counts": { binds: [], uses: [] },
  "stats.oldestPending": { binds: [], uses: ["idx_export_jobs_status_created (status=?)"] },
  "stats.processingWithoutRun": { binds: [], uses: ["idx_export_jobs_status_due (status=?)"] },
  // dead_letters is operators' inbox, kept small by replay and delete: counted in full.
  "stats.deadLetters": { binds: [], uses: [] },
  "stats.archived": { binds: [], uses: [ARCHIVE_COUNT] },
  // Two rows (migration 0015), read whole like job_counts.
  "stats.totals": { binds: [], uses: [] },
  "stats.addArchived": { binds: [pairs], uses: [ARCHIVE_COUNT, `${PK} (id=?)`] },
  "runs.late": {
    binds: ["r", "j", 1, 7, null, "cancelled", 10, 900, 900],
    uses: [],
  },
  "runs.usage": {
    binds: ["user", "2026-12-01", "2026-12-07"],
    uses: ["SEARCH usage_daily USING PRIMARY KEY (kind=? AND day>? AND day<?)"],
  },
  "runs.byJob": { binds: ["j"], uses: ["idx_export_runs_job (job_id=?)"] },
};

const STATEMENTS: Record<string, string> = Object.fromEntries([
  ...Object.entries(JOB_SQL).map(([name, sql]) => [`jobs.${name}`, sql]),
  ...Object.entries(DEAD_LETTER_SQL).map(([name, sql]) => [`deadLetters.${name}`, sql]),
  ...Object.entries(STATS_SQL).map(([name, sql]) => [`stats.${name}`, sql]),
  ...Object.entries(EVENT_SQL).map(([name, sql]) => [`events.${name}`, sql]),
  ...Object.entries(RUN_SQL).map(([name, sql]) => [`runs.${name}`, sql]),
  ...Object.entries(NOTIFY_SQL).map(([name, sql]) => [`notify.${name}`, sql]),
]);

async function planOf(sql: string, binds: unknown[]): Promise<string[]> {
  const { results } = await env.DB.prepare(`EXPLAIN QUERY PLAN ${sql}`)
    .bind(...binds)
    .all<{ detail: string }>();
  return results.map((row) => row.detail);
}

describe("query plans (EXPLAIN QUERY PLAN on the real D1 binding)", () => {
  it("covers every statement of shared/sql/, and each binds at most a handful of parameters", () => {
    expect(Object.keys(STATEMENTS).sort()).toEqual(Object.keys(EXPECTED).sort());
    for (const [name, sql] of Object.entries(STATEMENTS)) {
      const placeholders = sql.match(/\?/g)?.length ?? 0;
      expect(placeholders, name).toBe(EXPECTED[name]?.binds.length);
      expect(placeholders, name).toBeLessThanOrEqual(10);
    }
  });

  for (const [name, expected] of Object.entries(EXPECTED)) {
    it(`${name} reaches its rows through ${expected.uses.join(" and ") || "no table scan"}`, async () => {
      const plan = await planOf(STATEMENTS[name] as string, expected.binds);
      for (const step of plan) {
        // A scan of a table other than json_each's list, or of the small tables named below.
        const scan = /^SCAN (\w+)/.exec(step)?.[1];
        // The insert reads its one row of parameters (`j`, a constant row), no table; so does
        // a batch's quota check.
        const parameters =
          (name === "jobs.insert" && (scan === "CONSTANT" || scan === "j")) ||
          (name === "jobs.quotaCheck" && scan === "CONSTANT");
        if (
          scan &&
          !parameters &&
          !["json_each", "job_counts", "metric_totals", "dead_letters"].includes(scan)
        ) {
          throw new Error(`${name} scans ${scan}: ${plan.join(" | ")}`);
        }
        if (scan === "dead_letters" && name !== "stats.deadLetters") {
          throw new Error(`${name} scans dead_letters: ${plan.join(" | ")}`);
        }
      }
      for (const use of expected.uses) {
        expect(
          plan.some((step) => step.includes(use)),
          `${name}: ${plan.join(" | ")}`,
        ).toBe(true);
      }
      // A listing pages newest first: its sort (the projects of a json_each list are separate
      // ranges) may only merge ranges that the index already walks in (created_at, id) order, cut
      // by the cursor, so that SQLite stops each range once LIMIT rows are in. A sort of
      // everything the equality columns match reads every active job of a project for a page.
      if (name.startsWith("jobs.list") && plan.includes("USE TEMP B-TREE FOR ORDER BY")) {
        expect(
          plan.some((step) => /^SEARCH export_jobs .*\(created_at,id\)<\(\?,\?\)/.test(step)),
          `${name} sorts rows its index range does not order: ${plan.join(" | ")}`,
        ).toBe(true);
      }
    });
  }

  it("a page of a project's active jobs reads about a page of rows, however many are active", async () => {
    // 400 pending and 3 processing jobs in one project (one statement), as a backlog makes them.
    const projectId = freshProjectId();
    const others = [freshProjectId(), freshProjectId()];
    await env.DB.prepare(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 403)
       INSERT INTO export_jobs (id, project_id, type, status, input_video_key, params, created_at,
                                due_at)
       SELECT lower(hex(randomblob(16))), ?1, 'overlay',
              CASE WHEN i % 100 = 0 THEN 'processing' ELSE 'pending' END, 'in.mp4', '{}',
              strftime('%Y-%m-%d %H:%M:%f', '2026-01-01', '+' || i || ' seconds'), NULL
       FROM n`,
    )
      .bind(projectId)
      .run();
    const rowsRead = async (sql: string, projects: number[], ...binds: unknown[]) => {
      const { results, meta } = await env.DB.prepare(sql)
        .bind(JSON.stringify(projects), ...binds, "9999-12-31", "", 21)
        .all<{ created_at: string; status: string }>();
      return { results, read: meta.rows_read };
    };
    for (const projects of [[projectId], [projectId, ...others]]) {
      const active = await rowsRead(JOB_SQL.listActiveByProjects, projects);
      expect(active.results).toHaveLength(21);
      const newest = active.results.map((row) => row.created_at);
      expect(newest).toEqual([...newest].sort().reverse());
      // The 21 rows, their index entries, json_each's list: not the 403 active jobs.
      expect(active.read, `${projects.length} project(s)`).toBeLessThan(4 * 21 + 10);
      const pending = await rowsRead(JOB_SQL.listByProjectsAndActiveStatus, projects, "pending");
      expect(pending.results).toHaveLength(21);
      expect(pending.read, `${projects.length} project(s)`).toBeLessThan(4 * 21 + 10);
    }
  });

  it("a contract-valid GET /exports of 100 projects binds 4 parameters and finds their jobs", async () => {
    const projectIds = Array.from({ length: 100 }, () => freshProjectId());
    const key = `uploads/${projectIds[0]}/in.mp4`;
    await putInput(key);
    const created = await postJson("/exports", {
      project_id: projectIds[99],
      type: "annotate",
      input_video_key: key,
      params: { annotations: [{ text: "x" }] },
    });
    expect(created.status).toBe(202);
    const createdId = ((await created.json()) as { job: { id: string } }).job.id;
    const other = await insertPendingJob(projectIds[0]);
    const query = projectIds.map((id) => `project_id=${id}`).join("&");
    const res = await producerFetch(`/exports?${query}&limit=100`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { jobs: { id: string }[] };
    expect(body.jobs.map((job) => job.id).sort()).toEqual([createdId, other.id].sort());
    expect(JOB_SQL.listByProjects.match(/\?/g)).toHaveLength(4);
  });
});
