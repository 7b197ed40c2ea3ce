// The operators' CLI: its pure formatting helpers, and `main` against a tiny real HTTP server
// that answers the producer's admin routes with fixed JSON.

import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { DEFAULT_TOKEN, DEFAULT_URL, main } from "../../scripts/dlq.ts";
import {
  formatAge,
  formatDispatch,
  formatRetryResult,
  formatStats,
  renderKeyValues,
  renderTable,
} from "../../scripts/dlq-format.ts";
import { LOCAL_DEFAULTS } from "../../scripts/local-stack.ts";

describe("renderTable", () => {
  it("pads every column to its widest cell, header or data", () => {
    const table = renderTable(
      ["ID", "QUEUE", "N"],
      [
        ["a-very-long-dead-letter-id", "q", "1"],
        ["b", "export-jobs-dlq", "12345"],
      ],
    );
    expect(table.split("\n")).toEqual([
      "ID                          QUEUE            N",
      "a-very-long-dead-letter-id  q                1",
      "b                           export-jobs-dlq  12345",
    ]);
  });

  it("has no trailing spaces and treats missing cells as empty", () => {
    const table = renderTable(["A", "B"], [["wide-cell", ""], ["x"]]);
    expect(table.split("\n")).toEqual(["A          B", "wide-cell", "x"]);
  });

  it("renders only the header when there are no rows", () => {
    expect(renderTable(["ID", "RECEIVED"], [])).toBe("ID  RECEIVED");
  });
});

describe("renderKeyValues", () => {
  it("aligns values and keeps multi-line values in their column", () => {
    expect(
      renderKeyValues([
        ["id", "x"],
        ["body", "{\n  1\n}"],
      ]),
    ).toBe("id:   x\nbody: {\n        1\n      }");
    expect(renderKeyValues([["id", "x"]], "  ")).toBe("  id: x");
  });
});

describe("formatAge", () => {
  it("shows the two largest units", () => {
    expect(formatAge(0)).toBe("0s");
    expect(formatAge(45)).toBe("45s");
    expect(formatAge(192)).toBe("3m 12s");
    expect(formatAge(3600)).toBe("1h 0m");
    expect(formatAge(7322)).toBe("2h 2m");
    expect(formatAge(90_061)).toBe("1d 1h");
  });

  it("rounds, clamps negatives to zero and shows null as -", () => {
    expect(formatAge(59.6)).toBe("1m 0s");
    expect(formatAge(-5)).toBe("0s");
    expect(formatAge(null)).toBe("-");
  });
});

describe("formatDispatch", () => {
  it("shows the state, why it paused, since when and the recent runs", () => {
    expect(
      formatDispatch({
        state: "running",
        reason: null,
        since: "2026-11-24T10:00:00.000Z",
        runs_last_10s: 1,
        in_flight: 3,
        mode: "auto",
        max_in_flight: 5,
        cap_reason: "steady: 3 workers + 2 headroom",
        fleet: {
          ready: 0,
          running: 3,
          initializing: 0,
          throttled: 0,
          in_queue: 0,
          at: "2026-11-24T10:00:00.000Z",
        },
        waiting: 9,
        waiting_keys: 2,
        waiting_by_lane: { interactive: 2, standard: 0, batch: 7 },
      }),
    ).toBe(
      "running since 2026-11-24T10:00:00.000Z, 1 run in the last 10 s; " +
        "3/5 in flight (auto: steady: 3 workers + 2 headroom), 9 waiting (2 keys; 2 interactive, 7 batch); " +
        "fleet 0 ready, 3 running, 0 starting, 0 throttled, 0 queued at RunPod",
    );
    expect(
      formatDispatch({
        state: "paused",
        reason: "5 failed submissions in a row: RunPod /run answered HTTP 503",
        since: "2026-11-24T10:00:00.000Z",
        runs_last_10s: 0,
        in_flight: 0,
        mode: "fixed",
        max_in_flight: 20,
        cap_reason: "RUNPOD_MAX_IN_FLIGHT",
        fleet: null,
        waiting: 1,
        waiting_keys: 1,
        waiting_by_lane: { interactive: 0, standard: 1, batch: 0 },
      }),
    ).toBe(
      "paused (5 failed submissions in a row: RunPod /run answered HTTP 503) " +
        "since 2026-11-24T10:00:00.000Z, 0 runs in the last 10 s; " +
        "0/20 in flight (fixed: RUNPOD_MAX_IN_FLIGHT), 1 waiting (1 key)",
    );
  });

  it("says so when the producer could not reach the gate", () => {
    expect(formatDispatch(null)).toBe("unknown (the producer could not reach the dispatch gate)");
  });
});

describe("formatRetryResult", () => {
  it("lists the retried jobs, then the requested ones that were skipped", () => {
    expect(formatRetryResult({ retried: 1, job_ids: ["a"] }, ["a", "b", "b"])).toBe(
      [
        "retried 1 job: pending again, retry budget restored",
        "  a",
        "not retried (not error, cancelled or unknown): 1 job",
        "  b",
      ].join("\n"),
    );
    expect(formatRetryResult({ retried: 2, job_ids: ["a", "b"] })).toBe(
      "retried 2 jobs: pending again, retry budget restored\n  a\n  b",
    );
  });

  it("explains an answer that retried nothing", () => {
    expect(formatRetryResult({ retried: 0, job_ids: [] }, ["a"])).toBe(
      "retried 0 jobs (only error jobs that were not cancelled are retried)",
    );
  });
});

describe("formatStats", () => {
  it("has no dispatch line for an answer without dispatch (an older producer)", () => {
    const older = {
      jobs: { pending: 0, processing: 0, complete: 1, error: 0 },
      oldest_pending_created_at: null,
      oldest_pending_age_s: null,
      processing_without_run: 0,
      dead_letters: { total: 0, not_replayed: 0 },
    };
    const text = formatStats(older as Parameters<typeof formatStats>[0]);
    expect(text).toContain("oldest pending:         none");
    expect(text).not.toContain("dispatch");
    expect(formatStats({ ...older, dispatch: null })).toContain(
      "dispatch:               unknown (the producer could not reach the dispatch gate)",
    );
  });
});

// ---------------------------------------------------------------------------------------------
// main() over real HTTP
// ---------------------------------------------------------------------------------------------

const TOKEN = "test-admin";

const letter = (id: string, extra: Record<string, unknown> = {}) => ({
  id,
  queue: "export-jobs",
  reason: "dead_lettered",
  body: { job_id: `job-${id}` },
  attempts: 5,
  received_at: "2026-11-24 10:30:00.123",
  job_id: `job-${id}`,
  job_status: "pending",
  replayed_at: null,
  ...extra,
});

const job = {
  id: "job-dl-1",
  project_id: 42,
  type: "overlay",
  status: "pending",
  progress: 0,
  input_video_key: "uploads/demo/sample.mp4",
  output_video_key: null,
  params: {},
  error: null,
  retry_count: 0,
  runpod_job_id: null,
  created_at: "2026-11-24 10:00:00.000",
  started_at: null,
  completed_at: null,
  due_at: "2026-11-24 10:31:00.000",
  idempotency_key: null,
  attempt: 3,
  version: 7,
};

const stats = {
  jobs: { pending: 3, processing: 1, complete: 10, error: 2 },
  oldest_pending_created_at: "2026-11-24 10:00:00.000",
  oldest_pending_age_s: 192,
  processing_without_run: 0,
  dead_letters: { total: 5, not_replayed: 2 },
  dispatch: {
    state: "paused",
    reason: "RunPod refused the API key: HTTP 401",
    since: "2026-11-24T10:02:00.000Z",
    runs_last_10s: 0,
    in_flight: 0,
    mode: "fixed",
    max_in_flight: 20,
    cap_reason: "RUNPOD_MAX_IN_FLIGHT",
    fleet: null,
    waiting: 0,
    waiting_keys: 0,
  },
};

/** Error jobs the fake producer retries; FAILED_3 it skips (as if cancelled). */
const FAILED_1 = "0b7f4c1e-1d2a-4c3b-9e8f-000000000001";
const FAILED_2 = "0b7f4c1e-1d2a-4c3b-9e8f-000000000002";
const FAILED_3 = "0b7f4c1e-1d2a-4c3b-9e8f-000000000003";
const RETRY = "POST /admin/jobs/retry";

/**
 * Route key (`METHOD URL`, then ` BODY` when the request has one) → [status, JSON body or null].
 * Pages: no cursor → c2 → c3 → end.
 */
const ROUTES: Record<string, [number, unknown]> = {
  "GET /dead-letters?limit=2": [
    200,
    { dead_letters: [letter("dl-1"), letter("dl-2")], next_cursor: "c2" },
  ],
  "GET /dead-letters?limit=2&cursor=c2": [
    200,
    { dead_letters: [letter("dl-3"), letter("dl-4")], next_cursor: "c3" },
  ],
  "GET /dead-letters?limit=2&cursor=c3": [
    200,
    { dead_letters: [letter("dl-5")], next_cursor: null },
  ],
  "GET /dead-letters?limit=20": [
    200,
    {
      dead_letters: [
        letter("dl-1"),
        letter("dl-unparseable-with-a-long-id", {
          reason: "unparseable",
          body: "not json",
          job_id: null,
          job_status: null,
          replayed_at: "2026-11-24 11:00:00.000",
        }),
      ],
      next_cursor: null,
    },
  ],
  "GET /dead-letters/dl-1": [200, { dead_letter: letter("dl-1"), job }],
  "GET /dead-letters/dl%2Fodd": [
    200,
    { dead_letter: letter("dl/odd", { job_id: null }), job: null },
  ],
  "POST /dead-letters/dl-1/replay": [
    202,
    { dead_letter: letter("dl-1", { replayed_at: "2026-11-24 11:00:00.000" }), job },
  ],
  "POST /dead-letters/dl-2/replay": [
    409,
    { error: { code: "already_replayed", message: "replayed at 2026-11-24 11:00:00.000" } },
  ],
  "DELETE /dead-letters/dl-1": [204, null],
  "GET /stats": [200, stats],
  [`${RETRY} {"job_ids":["${FAILED_1}","${FAILED_3}"]}`]: [
    202,
    { retried: 1, job_ids: [FAILED_1] },
  ],
  [`${RETRY} {"error_prefix":"RunPod FAILED","created_after":"2026-11-24T10:00:00Z","limit":50}`]: [
    202,
    { retried: 2, job_ids: [FAILED_1, FAILED_2] },
  ],
  [`${RETRY} {"created_before":"2026-11-24"}`]: [202, { retried: 0, job_ids: [] }],
  [`${RETRY} {"job_ids":["not-a-uuid"]}`]: [
    400,
    {
      error: {
        code: "invalid_request",
        message: "the body is not valid",
        issues: [{ path: ["job_ids", 0], message: "Invalid UUID", code: "invalid_format" }],
      },
    },
  ],
};

let server: Server;
let origin = "";
let requests: {
  method: string;
  url: string;
  authorization: string | undefined;
  /** Only requests with a body have these two. */
  contentType?: string | undefined;
  body?: string;
}[] = [];

beforeAll(async () => {
  server = createServer(async (req, res) => {
    const method = req.method ?? "";
    const url = req.url ?? "";
    let body = "";
    for await (const chunk of req) body += chunk;
    requests.push({
      method,
      url,
      authorization: req.headers.authorization,
      ...(body === "" ? {} : { contentType: req.headers["content-type"], body }),
    });
    const send = (status: number, body: unknown) => {
      if (body === null) return res.writeHead(status).end();
      res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
    };
    if (req.headers.authorization !== `Bearer ${TOKEN}`) {
      return send(401, {
        error: { code: "unauthorized", message: "a valid bearer token is required" },
      });
    }
    const route = ROUTES[`${method} ${url}${body === "" ? "" : ` ${body}`}`];
    if (!route) {
      return send(404, { error: { code: "not_found", message: `no route for ${method} ${url}` } });
    }
    send(route[0], route[1]);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise<void>((resolve) => server?.close(() => resolve()) ?? resolve());
});

beforeEach(() => {
  requests = [];
});

/** Runs the CLI against the test server; env carries the URL and token unless told otherwise. */
async function run(
  argv: string[],
  env: Record<string, string | undefined> = { REEL_EXPORTS_URL: origin, ADMIN_TOKEN: TOKEN },
) {
  let out = "";
  let err = "";
  const code = await main(argv, {
    fetch,
    out: (s) => {
      out += s;
    },
    err: (s) => {
      err += s;
    },
    env,
  });
  return { code, out, err };
}

describe("dlq CLI", () => {
  it("list prints a table with full IDs and a count, sending the bearer token", async () => {
    const { code, out, err } = await run(["list"]);
    expect({ code, err }).toEqual({ code: 0, err: "" });
    expect(requests).toEqual([
      { method: "GET", url: "/dead-letters?limit=20", authorization: `Bearer ${TOKEN}` },
    ]);
    const lines = out.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^ID +RECEIVED +QUEUE +REASON +ATTEMPTS +JOB +JOB STATUS +REPLAYED$/);
    expect(lines[1]).toMatch(
      /^dl-1 +2026-11-24 10:30:00\.123 +export-jobs +dead_lettered +5 +job-dl-1 +pending +-$/,
    );
    expect(lines[2]).toMatch(
      /^dl-unparseable-with-a-long-id +\S+ \S+ +export-jobs +unparseable +5 +- +- +2026-11-24 11:00:00\.000$/,
    );
    // Columns line up: every row's RECEIVED starts where the header's does.
    const at = lines[0]?.indexOf("RECEIVED");
    expect(lines[1]?.indexOf("2026")).toBe(at);
    expect(lines[2]?.indexOf("2026")).toBe(at);
    expect(lines.at(-1)).toBe("2 dead letters");
  });

  it("list --limit says when there are more pages; --all follows every cursor", async () => {
    const one = await run(["list", "--limit", "2"]);
    expect(one.code).toBe(0);
    expect(one.out.trimEnd().split("\n").at(-1)).toBe("2 dead letters (more: run with --all)");

    requests = [];
    const all = await run(["list", "--limit", "2", "--all"]);
    expect(all.code).toBe(0);
    expect(requests.map((r) => r.url)).toEqual([
      "/dead-letters?limit=2",
      "/dead-letters?limit=2&cursor=c2",
      "/dead-letters?limit=2&cursor=c3",
    ]);
    for (const id of ["dl-1", "dl-2", "dl-3", "dl-4", "dl-5"]) expect(all.out).toContain(id);
    expect(all.out.trimEnd().split("\n").at(-1)).toBe("5 dead letters");
  });

  it("--json prints the JSON answer (all pages merged with --all)", async () => {
    const { code, out } = await run(["list", "--limit", "2", "--all", "--json"]);
    expect(code).toBe(0);
    const data = JSON.parse(out) as { dead_letters: { id: string }[]; next_cursor: unknown };
    expect(data.dead_letters.map((d) => d.id)).toEqual(["dl-1", "dl-2", "dl-3", "dl-4", "dl-5"]);
    expect(data.next_cursor).toBeNull();

    expect(JSON.parse((await run(["stats", "--json"])).out)).toEqual(stats);
    expect(JSON.parse((await run(["show", "dl-1", "--json"])).out)).toEqual({
      dead_letter: letter("dl-1"),
      job,
    });
  });

  it("show prints the dead letter with its body pretty-printed, then its job", async () => {
    const { code, out } = await run(["show", "dl-1"]);
    expect(code).toBe(0);
    expect(requests.map((r) => `${r.method} ${r.url}`)).toEqual(["GET /dead-letters/dl-1"]);
    expect(out).toContain("id:          dl-1\n");
    expect(out).toContain("replayed_at: -\n");
    expect(out).toContain('body:        {\n               "job_id": "job-dl-1"\n             }\n');
    expect(out).toContain("\njob:\n  id:            job-dl-1\n");
    expect(out).toContain("  project_id:    42\n");
    expect(out).toContain("  runpod_job_id: -\n");
    expect(out).toContain("  attempt:       3\n  version:       7\n");
    expect(out).not.toContain("input_video_key");
  });

  it("show encodes the ID in the path and prints job: none without a job", async () => {
    const { code, out } = await run(["show", "dl/odd"]);
    expect(code).toBe(0);
    expect(requests.map((r) => r.url)).toEqual(["/dead-letters/dl%2Fodd"]);
    expect(out.trimEnd().endsWith("\n\njob: none")).toBe(true);
  });

  it("replay and delete call their routes and say what happened", async () => {
    expect(await run(["replay", "dl-1"])).toEqual({
      code: 0,
      out: "replayed dl-1: job job-dl-1 is pending again (retry budget restored)\n",
      err: "",
    });
    expect(await run(["delete", "dl-1"])).toEqual({ code: 0, out: "deleted dl-1\n", err: "" });
    expect(requests.map((r) => `${r.method} ${r.url}`)).toEqual([
      "POST /dead-letters/dl-1/replay",
      "DELETE /dead-letters/dl-1",
    ]);
  });

  it("stats prints jobs by status, the oldest pending age, dead letters and dispatch", async () => {
    const { code, out } = await run(["stats"]);
    expect(code).toBe(0);
    expect(out).toBe(
      [
        "jobs:                   3 pending, 1 processing, 10 complete, 2 error",
        "oldest pending:         3m 12s (created 2026-11-24 10:00:00.000)",
        "processing without run: 0",
        "dead letters:           5 total, 2 not replayed",
        "dispatch:               paused (RunPod refused the API key: HTTP 401) since " +
          "2026-11-24T10:02:00.000Z, 0 runs in the last 10 s; " +
          "0/20 in flight (fixed: RUNPOD_MAX_IN_FLIGHT), 0 waiting (0 keys)",
        "",
      ].join("\n"),
    );
  });

  it("retry JOB_ID… posts the IDs as JSON and says which were retried and which not", async () => {
    expect(await run(["retry", FAILED_1, FAILED_3])).toEqual({
      code: 0,
      out: [
        "retried 1 job: pending again, retry budget restored",
        `  ${FAILED_1}`,
        "not retried (not error, cancelled or unknown): 1 job",
        `  ${FAILED_3}`,
        "",
      ].join("\n"),
      err: "",
    });
    expect(requests).toEqual([
      {
        method: "POST",
        url: "/admin/jobs/retry",
        authorization: `Bearer ${TOKEN}`,
        contentType: "application/json",
        body: JSON.stringify({ job_ids: [FAILED_1, FAILED_3] }),
      },
    ]);
  });

  it("retry with a filter posts the filter; --json prints the answer", async () => {
    const argv = [
      "retry",
      "--error-prefix",
      "RunPod FAILED",
      "--created-after",
      "2026-11-24T10:00:00Z",
      "--limit",
      "50",
    ];
    expect(await run(argv)).toEqual({
      code: 0,
      out: `retried 2 jobs: pending again, retry budget restored\n  ${FAILED_1}\n  ${FAILED_2}\n`,
      err: "",
    });
    expect(JSON.parse((await run([...argv, "--json"])).out)).toEqual({
      retried: 2,
      job_ids: [FAILED_1, FAILED_2],
    });
    // Only the filters given are sent; the API's own limit (100) applies without --limit.
    expect(await run(["retry", "--created-before", "2026-11-24"])).toEqual({
      code: 0,
      out: "retried 0 jobs (only error jobs that were not cancelled are retried)\n",
      err: "",
    });
    expect(requests.map((r) => r.body)).toEqual([
      '{"error_prefix":"RunPod FAILED","created_after":"2026-11-24T10:00:00Z","limit":50}',
      '{"error_prefix":"RunPod FAILED","created_after":"2026-11-24T10:00:00Z","limit":50}',
      '{"created_before":"2026-11-24"}',
    ]);
  });

  it("a refused retry prints the API's validation issues, exit 1", async () => {
    expect(await run(["retry", "not-a-uuid"])).toEqual({
      code: 1,
      out: "",
      err: "error: invalid_request: the body is not valid; job_ids.0: Invalid UUID (HTTP 400)\n",
    });
  });

  it("an API error is printed with its code and HTTP status, exit 1", async () => {
    expect(await run(["replay", "dl-2"])).toEqual({
      code: 1,
      out: "",
      err: "error: already_replayed: replayed at 2026-11-24 11:00:00.000 (HTTP 409)\n",
    });
    expect(await run(["show", "missing"])).toMatchObject({
      code: 1,
      err: "error: not_found: no route for GET /dead-letters/missing (HTTP 404)\n",
    });
  });

  it("--url and --token override the environment; a wrong token is a 401", async () => {
    const env = { REEL_EXPORTS_URL: "http://127.0.0.1:1", ADMIN_TOKEN: "wrong" };
    expect(await run(["stats", "--url", `${origin}/`, "--token", TOKEN], env)).toMatchObject({
      code: 0,
    });
    expect(await run(["stats", "--url", origin], env)).toEqual({
      code: 1,
      out: "",
      err: "error: unauthorized: a valid bearer token is required (HTTP 401)\n",
    });
    expect(requests.map((r) => [r.url, r.authorization])).toEqual([
      ["/stats", `Bearer ${TOKEN}`],
      ["/stats", "Bearer wrong"],
    ]);
  });

  it("defaults to the local stack's URL and admin token", () => {
    expect(DEFAULT_URL).toBe("http://127.0.0.1:8787");
    expect(DEFAULT_TOKEN).toBe(LOCAL_DEFAULTS.ADMIN_TOKEN);
  });

  it("a refused connection or a non-JSON error answer exits 1 with a reason", async () => {
    // A port that was just listening and is now closed: a real refusal.
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const refused = await run(["stats"], { REEL_EXPORTS_URL: `http://127.0.0.1:${port}` });
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(new RegExp(`^error: cannot reach http://127.0.0.1:${port}: `));

    const gateway = createServer((_req, res) => {
      res.writeHead(502, { "content-type": "text/plain" }).end("Bad gateway");
    });
    await new Promise<void>((resolve) => gateway.listen(0, "127.0.0.1", resolve));
    const gatewayPort = (gateway.address() as AddressInfo).port;
    try {
      expect(
        await run(["stats"], { REEL_EXPORTS_URL: `http://127.0.0.1:${gatewayPort}` }),
      ).toMatchObject({
        code: 1,
        err: "error: unexpected_answer: Bad gateway (HTTP 502)\n",
      });
    } finally {
      await new Promise<void>((resolve) => gateway.close(() => resolve()));
    }
  });

  it("help prints usage and exits 0; usage errors print usage to stderr and exit 2", async () => {
    for (const argv of [[], ["help"], ["--help"], ["list", "-h"]]) {
      const { code, out, err } = await run(argv);
      expect({ code, err }).toEqual({ code: 0, err: "" });
      expect(out).toContain("Usage: npm run dlq -- <command>");
      expect(out).toContain("retry JOB_ID [JOB_ID...]");
      expect(out).toContain("retry --error-prefix TEXT [--created-after T]");
    }
    for (const [argv, message] of [
      [["frobnicate"], "unknown command: frobnicate"],
      [["show"], "show needs a dead letter ID"],
      [["replay"], "replay needs a dead letter ID"],
      [["delete", "a", "b"], "too many arguments: b"],
      [["list", "--limit", "0"], "--limit must be a positive integer: 0"],
      [["list", "--bogus"], "Unknown option '--bogus'"],
      [["retry"], "retry needs job IDs, or at least one of --error-prefix TEXT"],
      [["retry", "--error-prefix", ""], "retry needs job IDs, or at least one of"],
      [["retry", "--limit", "5"], "retry needs job IDs, or at least one of"],
      [["retry", FAILED_1, "--error-prefix", "x"], "retry takes job IDs or filter options"],
      [["retry", FAILED_1, "--limit", "5"], "retry takes job IDs or filter options"],
      [
        ["retry", ...Array.from({ length: 101 }, (_, i) => `id-${i}`)],
        "retry takes at most 100 job IDs at once, not 101",
      ],
      [
        ["retry", "--created-after", "yesterday"],
        "--created-after must be a UTC timestamp (YYYY-MM-DD[THH:MM[:SS]][Z]): yesterday",
      ],
      [["retry", "--error-prefix", "x", "--limit", "1001"], "--limit of retry is at most 1000"],
      [["list", "--error-prefix", "x"], "--error-prefix is an option of retry only"],
    ] as const) {
      const { code, out, err } = await run([...argv]);
      expect({ code, out }).toEqual({ code: 2, out: "" });
      expect(err).toContain(message);
      expect(err).toContain("Usage: npm run dlq -- <command>");
    }
    expect(requests).toEqual([]);
  });
});
