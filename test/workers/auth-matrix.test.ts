// The auth matrix of every route the producer serves, built from the Hono app's own route table
// (a route without an entry here fails the first test), through the real handlers and bindings:
// {no token, wrong token, the other role's token, the right token} for the bearer routes; the
// signatures of RunPod's callbacks (another job, another attempt, the other kind); live tickets
// (another project, expired, forged); CORS headers for CORS_ORIGIN only; and the 256 KiB body
// limit, which answers 413 before any parsing.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { MAX_BODY_BYTES } from "../../producer/http.ts";
import app from "../../producer/index.ts";
import { decodeBase64Url, encodeBase64Url } from "../../shared/base64url.ts";
import { mintClientToken } from "../../shared/client-token.ts";
import { type SigningKey, signingKey } from "../../shared/keys.ts";
import type { LiveMessage } from "../../shared/live-publisher.ts";
import { signAttempt } from "../../shared/signing.ts";
import type { Job, JobRow } from "../../shared/sql/jobs/row.ts";
import {
  ADMIN_TOKEN,
  API_TOKEN,
  callbackPath,
  deliver,
  type FetchInit,
  freshProjectId,
  insertPendingJob,
  overlayRequest,
  postJson,
  processingJob,
  producerFetch,
  putInput,
  putOutput,
  readJob,
  waitFor,
} from "./helpers.ts";

const SECRET = env.WEBHOOK_SECRET as string;

/** Who may call a route. */
type Auth =
  | "none"
  /** bearer API_TOKEN only (POST /client-tokens) */
  | "api"
  /** bearer API_TOKEN, or a scoped client token of the job's project */
  | "frontend"
  /** bearer ADMIN_TOKEN only */
  | "admin"
  /** any bearer token: API_TOKEN, a scoped token, ADMIN_TOKEN (the dashboard shares these) */
  | "either"
  /** the HMAC in the URL */
  | "signed"
  /** a live ticket in the query */
  | "ticket";

interface Call {
  path: string;
  init?: FetchInit;
  /** The project the call is about: a scoped token of it is let in, one of another is not. */
  projectId?: number;
  /** After the call: the state it must not have changed when it was refused. */
  unchanged?: () => Promise<void>;
}

interface RouteCase {
  auth: Auth;
  /** The answer of an authorised call. */
  ok: number;
  /**
   * The answer to a scoped token of another project (frontend and either routes): 404 where the
   * call names a job (its existence is not revealed), 403 where it names projects.
   */
  outside?: 403 | 404;
  /** Reads a JSON body (so the 256 KiB limit applies). */
  body?: boolean;
  /** A fresh, otherwise valid call (its credentials are the matrix's to set). */
  call: () => Promise<Call>;
}

// ---- fixtures, each made fresh for the call that needs it ----

async function inputKey(projectId: number): Promise<string> {
  const key = `uploads/${projectId}/auth.mp4`;
  await putInput(key);
  return key;
}

async function pendingJob(): Promise<JobRow> {
  return insertPendingJob(freshProjectId());
}

/** The job must be exactly as it was. */
function unchangedJob(job: JobRow): () => Promise<void> {
  return async () => {
    expect(await readJob(job.id)).toEqual(job);
  };
}

let letterCounter = 0;
/** A dead letter recorded by the consumer of export-jobs-dlq, naming `job`. */
async function deadLetter(job: JobRow): Promise<string> {
  letterCounter += 1;
  const id = `auth-${letterCounter}-${crypto.randomUUID()}`;
  const result = await deliver([{ id, body: { job_id: job.id } }], {
    queue: "export-jobs-dlq",
    attempts: 11,
  });
  expect(result.explicitAcks).toEqual([id]);
  return id;
}

async function deadLetterRow(id: string) {
  return env.DB.prepare("SELECT * FROM dead_letters WHERE id = ?").bind(id).first();
}

async function completeJobWithOutput(): Promise<JobRow> {
  const job = await pendingJob();
  const key = await putOutput(job);
  await env.DB.prepare(
    `UPDATE export_jobs SET status = 'complete', progress = 100, attempt = 1,
       runpod_job_id = 'run-auth', output_video_key = ? WHERE id = ?`,
  )
    .bind(key, job.id)
    .run();
  return (await readJob(job.id)) as JobRow;
}

async function countAllJobs(): Promise<number> {
  const row = await env.DB.prepare("SELECT COUNT(*) AS n FROM export_jobs").first<{ n: number }>();
  return row?.n ?? 0;
}

const json = (body: unknown): FetchInit => ({
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify(body),
});

/** A notification that gave up (an outbox row as the consumer leaves it), for its redelivery. */
async function failedNotification(): Promise<string> {
  const job = await pendingJob();
  const id = `msg_auth_${crypto.randomUUID().replaceAll("-", "")}`;
  await env.DB.prepare(
    `INSERT INTO notifications (id, job_id, version, type, ended_at, status, attempts,
       window_from, last_error)
     VALUES (?, ?, 1, 'export.failed', datetime('now'), 'failed', 7, datetime('now'), 'HTTP 500')`,
  )
    .bind(id, job.id)
    .run();
  return id;
}

function notificationRow(id: string) {
  return env.DB.prepare("SELECT * FROM notifications WHERE id = ?").bind(id).first();
}

/** A call about `job`, at the path `pathOf` its id. */
function ofJob(job: JobRow, pathOf: (id: string) => string): Call {
  return { path: pathOf(job.id), projectId: job.project_id };
}

/** One entry per served (method, path); the test below fails for a route missing here. */
const MATRIX: Record<string, RouteCase> = {
  "GET /health": { auth: "none", ok: 200, call: async () => ({ path: "/health" }) },
  "GET /openapi.json": { auth: "none", ok: 200, call: async () => ({ path: "/openapi.json" }) },
  "POST /exports": {
    auth: "frontend",
    ok: 202,
    outside: 403,
    body: true,
    call: async () => {
      const projectId = freshProjectId();
      const body = overlayRequest(projectId, await inputKey(projectId));
      const before = await countAllJobs();
      return {
        path: "/exports",
        projectId,
        init: json(body),
        unchanged: async () => expect(await countAllJobs()).toBe(before),
      };
    },
  },
  "POST /exports/batch": {
    auth: "frontend",
    ok: 202,
    outside: 403,
    body: true,
    call: async () => {
      const projectId = freshProjectId();
      const body = { exports: [overlayRequest(projectId, await inputKey(projectId))] };
      const before = await countAllJobs();
      return {
        path: "/exports/batch",
        projectId,
        init: json(body),
        unchanged: async () => expect(await countAllJobs()).toBe(before),
      };
    },
  },
  "GET /exports": {
    auth: "frontend",
    ok: 200,
    outside: 403,
    call: async () => {
      const job = await pendingJob();
      return { path: `/exports?project_id=${job.project_id}`, projectId: job.project_id };
    },
  },
  "GET /exports/:id": {
    auth: "frontend",
    ok: 200,
    outside: 404,
    call: async () => ofJob(await pendingJob(), (id) => `/exports/${id}`),
  },
  "POST /exports/:id/cancel": {
    auth: "frontend",
    ok: 200,
    outside: 404,
    call: async () => {
      const job = await pendingJob();
      return {
        path: `/exports/${job.id}/cancel`,
        projectId: job.project_id,
        init: { method: "POST" },
        unchanged: unchangedJob(job),
      };
    },
  },
  "GET /exports/:id/events": {
    auth: "either",
    ok: 200,
    outside: 404,
    call: async () => ofJob(await pendingJob(), (id) => `/exports/${id}/events`),
  },
  "GET /exports/:id/output": {
    auth: "frontend",
    ok: 200,
    outside: 404,
    call: async () => ofJob(await completeJobWithOutput(), (id) => `/exports/${id}/output`),
  },
  "POST /exports/:id/download-url": {
    auth: "frontend",
    ok: 200,
    outside: 404,
    call: async () => ({
      ...ofJob(await completeJobWithOutput(), (id) => `/exports/${id}/download-url`),
      init: { method: "POST" },
    }),
  },
  "POST /client-tokens": {
    auth: "api",
    ok: 201,
    body: true,
    call: async () => ({ path: "/client-tokens", init: json({ project_ids: [freshProjectId()] }) }),
  },
  "POST /live-tickets": {
    auth: "either",
    ok: 201,
    outside: 403,
    body: true,
    call: async () => {
      const projectId = freshProjectId();
      return { path: "/live-tickets", projectId, init: json({ project_ids: [projectId] }) };
    },
  },
  "GET /live": {
    auth: "ticket",
    // Without an Upgrade header a valid ticket gets 426 (the 101 is tested below).
    ok: 426,
    call: async () => {
      const res = await postJson("/live-tickets", { project_ids: [freshProjectId()] });
      const { ticket } = (await res.json()) as { ticket: string };
      return { path: `/live?ticket=${ticket}` };
    },
  },
  "POST /runpod/webhook/:id": {
    auth: "signed",
    ok: 200,
    body: true,
    call: async () => {
      const job = await processingJob();
      return {
        path: await callbackPath("webhook", job.id, job.attempt),
        init: json({ id: job.runpod_job_id, status: "IN_PROGRESS" }),
        unchanged: unchangedJob(job),
      };
    },
  },
  "POST /runpod/progress/:id": {
    auth: "signed",
    ok: 204,
    body: true,
    call: async () => {
      const job = await processingJob();
      return {
        path: await callbackPath("progress", job.id, job.attempt),
        init: json({ progress: 30 }),
        unchanged: unchangedJob(job),
      };
    },
  },
  "GET /dead-letters": { auth: "admin", ok: 200, call: async () => ({ path: "/dead-letters" }) },
  "GET /dead-letters/:id": {
    auth: "admin",
    ok: 200,
    call: async () => ({ path: `/dead-letters/${await deadLetter(await pendingJob())}` }),
  },
  "POST /dead-letters/:id/replay": {
    auth: "admin",
    ok: 202,
    call: async () => {
      const job = await pendingJob();
      const id = await deadLetter(job);
      const letter = await deadLetterRow(id);
      return {
        path: `/dead-letters/${id}/replay`,
        init: { method: "POST" },
        unchanged: async () => {
          await unchangedJob(job)();
          expect(await deadLetterRow(id)).toEqual(letter);
        },
      };
    },
  },
  "DELETE /dead-letters/:id": {
    auth: "admin",
    ok: 204,
    call: async () => {
      const id = await deadLetter(await pendingJob());
      const letter = await deadLetterRow(id);
      return {
        path: `/dead-letters/${id}`,
        init: { method: "DELETE" },
        unchanged: async () => expect(await deadLetterRow(id)).toEqual(letter),
      };
    },
  },
  "GET /stats": { auth: "admin", ok: 200, call: async () => ({ path: "/stats" }) },
  "GET /metrics": { auth: "admin", ok: 200, call: async () => ({ path: "/metrics" }) },
  "GET /admin/notifications": {
    auth: "admin",
    ok: 200,
    call: async () => ({ path: "/admin/notifications?status=failed" }),
  },
  "POST /admin/notifications/:id/redeliver": {
    auth: "admin",
    ok: 202,
    call: async () => {
      const id = await failedNotification();
      const before = await notificationRow(id);
      return {
        path: `/admin/notifications/${id}/redeliver`,
        init: { method: "POST" },
        unchanged: async () => expect(await notificationRow(id)).toEqual(before),
      };
    },
  },
  "GET /usage": {
    auth: "admin",
    ok: 200,
    call: async () => ({ path: "/usage?group_by=project" }),
  },
  "GET /admin/jobs": { auth: "admin", ok: 200, call: async () => ({ path: "/admin/jobs" }) },
  "POST /admin/jobs/retry": {
    auth: "admin",
    ok: 202,
    body: true,
    call: async () => {
      // An operator's retry of a failed job: refused, the job stays failed.
      const job = await pendingJob();
      await env.DB.prepare(
        "UPDATE export_jobs SET status = 'error', error = 'RunPod FAILED: auth matrix' WHERE id = ?",
      )
        .bind(job.id)
        .run();
      const failed = (await readJob(job.id)) as JobRow;
      return {
        path: "/admin/jobs/retry",
        init: json({ job_ids: [job.id] }),
        unchanged: unchangedJob(failed),
      };
    },
  },
};

/** `METHOD /path` of every route the app serves (middleware, registered for ALL, left out). */
function servedRoutes(): string[] {
  return [
    ...new Set(
      app.routes
        .filter((route) => route.method !== "ALL")
        .map((route) => `${route.method} ${route.path}`),
    ),
  ].sort();
}

/** Credentials a request can present in place of the right one. */
function wrongAuthorizations(valid: string): string[] {
  return [
    "Bearer nope",
    `Bearer ${valid}x`,
    `Bearer ${valid.slice(0, -1)}`,
    `Bearer x${valid}`,
    `Basic ${btoa(`user:${valid}`)}`,
    `Token ${valid}`,
    valid,
    "Bearer",
    "Bearer ",
    "",
  ];
}

async function send(call: Call, credentials: { token?: string | null; authorization?: string }) {
  const headers = new Headers(call.init?.headers);
  if (credentials.authorization !== undefined) {
    headers.set("authorization", credentials.authorization);
  }
  return producerFetch(call.path, {
    ...call.init,
    headers,
    token: credentials.authorization !== undefined ? null : (credentials.token ?? null),
  });
}

async function expectError(res: Response, status: number, code: string): Promise<void> {
  expect(res.status).toBe(status);
  const body = (await res.json()) as { error: { code: string; message: string } };
  expect(body.error.code).toBe(code);
  expect(typeof body.error.message).toBe("string");
}

const BEARER_AUTHS: Auth[] = ["api", "frontend", "admin", "either"];
const AUTH_NAMES: Record<Auth, string> = {
  none: "none",
  api: "API_TOKEN",
  frontend: "API_TOKEN or a scoped token",
  admin: "ADMIN_TOKEN",
  either: "API_TOKEN, a scoped token or ADMIN_TOKEN",
  signed: "signed URL",
  ticket: "live ticket",
};
const tokenFor = (auth: Auth): string => (auth === "admin" ? ADMIN_TOKEN : API_TOKEN);
const otherToken = (auth: Auth): string => (auth === "admin" ? API_TOKEN : ADMIN_TOKEN);

describe("the auth matrix", () => {
  it("has an entry for exactly the routes the app serves", () => {
    expect(Object.keys(MATRIX).sort()).toEqual(servedRoutes());
  });

  for (const route of servedRoutes()) {
    const entry = MATRIX[route];
    if (!entry || !BEARER_AUTHS.includes(entry.auth)) {
      continue;
    }
    const { auth, ok } = entry;
    const valid = tokenFor(auth);

    it(`${route} (${AUTH_NAMES[auth]}): 401 without it, ${ok} with it`, async () => {
      // No token, and every wrong credential: 401 unauthorized with a Bearer challenge, and the
      // request changed nothing.
      const refusals: { token?: string | null; authorization?: string }[] = [
        { token: null },
        ...wrongAuthorizations(valid).map((authorization) => ({ authorization })),
      ];
      if (auth !== "either") refusals.push({ token: otherToken(auth) });
      for (const credentials of refusals) {
        const call = await entry.call();
        const res = await send(call, credentials);
        expect({ route, credentials, status: res.status }).toEqual({
          route,
          credentials,
          status: 401,
        });
        expect(res.headers.get("www-authenticate")).toContain("Bearer");
        await expectError(res, 401, "unauthorized");
        await call.unchanged?.();
      }
      // The right token, in any case of the scheme: the route's answer.
      const accepted = auth === "either" ? [API_TOKEN, ADMIN_TOKEN] : [valid];
      for (const token of accepted) {
        for (const scheme of ["Bearer", "bearer"]) {
          const res = await send(await entry.call(), { authorization: `${scheme} ${token}` });
          expect({ route, token, scheme, status: res.status }).toEqual({
            route,
            token,
            scheme,
            status: ok,
          });
        }
      }
    });
  }

  for (const route of servedRoutes().filter((r) => MATRIX[r]?.auth === "none")) {
    it(`${route} (no auth): ${MATRIX[route]?.ok} with any credentials or none`, async () => {
      const entry = MATRIX[route] as RouteCase;
      for (const credentials of [
        { token: null },
        { token: "nope" },
        { token: API_TOKEN },
        { token: ADMIN_TOKEN },
      ]) {
        const res = await send(await entry.call(), credentials);
        expect({ route, credentials, status: res.status }).toEqual({
          route,
          credentials,
          status: entry.ok,
        });
      }
    });
  }

  it("a refused bearer request is refused before its body or its id is looked at", async () => {
    // 401, not 400/404/413: nothing about the request is read before the token.
    const cases: [string, FetchInit][] = [
      ["/exports", { method: "POST", headers: { "content-type": "text/plain" }, body: "{nope" }],
      ["/exports", { method: "POST", body: "x".repeat(MAX_BODY_BYTES + 1) }],
      ["/exports/no-such-job", {}],
      ["/exports/no-such-job/cancel", { method: "POST" }],
      ["/exports/no-such-job/output", {}],
      ["/exports/no-such-job/events", {}],
      ["/exports?project_id=0", {}],
      ["/dead-letters/no-such-letter", {}],
      ["/dead-letters/no-such-letter/replay", { method: "POST" }],
      ["/dead-letters/no-such-letter", { method: "DELETE" }],
      ["/admin/jobs?status=nope", {}],
      ["/admin/jobs/retry", { method: "POST", body: "{nope" }],
      ["/live-tickets", { method: "POST", body: "{nope" }],
    ];
    for (const [path, init] of cases) {
      for (const token of [null, "nope"]) {
        const res = await producerFetch(path, { ...init, token });
        expect({ path, token, status: res.status }).toEqual({ path, token, status: 401 });
        await expectError(res, 401, "unauthorized");
      }
    }
  });
});

// =============================================================================================

/** The credentials of the tenancy matrix, for a call about `projectId` (a fresh one if none). */
type ScopedCredential = "api" | "scoped" | "scopedOther" | "expired" | "tampered" | "admin";
const SCOPED_CREDENTIALS: ScopedCredential[] = [
  "api",
  "scoped",
  "scopedOther",
  "expired",
  "tampered",
  "admin",
];

async function clientToken(projectIds: number[], extra: Record<string, unknown> = {}) {
  const res = await postJson("/client-tokens", { project_ids: projectIds, ...extra });
  expect(res.status).toBe(201);
  return ((await res.json()) as { token: string }).token;
}

async function credentialFor(which: ScopedCredential, projectId: number): Promise<string> {
  switch (which) {
    case "api":
      return API_TOKEN;
    case "admin":
      return ADMIN_TOKEN;
    case "scoped":
      return clientToken([projectId]);
    case "scopedOther":
      return clientToken([freshProjectId()]);
    case "expired": {
      // Properly signed, but its expiry has passed.
      const key = (await signingKey(env, "client-token")) as SigningKey;
      return mintClientToken(key, {
        projectIds: [projectId],
        userId: null,
        expiresAt: Date.now() - 1,
      });
    }
    case "tampered": {
      // Another project's token, its payload rewritten to name this project.
      const [kid, payload, sig] = (await clientToken([freshProjectId()])).split(".") as [
        string,
        string,
        string,
      ];
      const claims = JSON.parse(decodeBase64Url(payload)) as Record<string, unknown>;
      return `${kid}.${encodeBase64Url(JSON.stringify({ ...claims, p: [projectId] }))}.${sig}`;
    }
  }
}

/** What `which` gets from a route: its answer, 401, or the answer to another project. */
function expectedStatus(entry: RouteCase, which: ScopedCredential): number {
  const outside = entry.outside ?? 401;
  switch (entry.auth) {
    case "api":
      return which === "api" ? entry.ok : 401;
    case "admin":
      return which === "admin" ? entry.ok : 401;
    case "frontend":
      return which === "api" || which === "scoped"
        ? entry.ok
        : which === "scopedOther"
          ? outside
          : 401;
    case "either":
      return which === "api" || which === "scoped" || which === "admin"
        ? entry.ok
        : which === "scopedOther"
          ? outside
          : 401;
    default:
      throw new Error(`${entry.auth} takes no bearer token`);
  }
}

describe("scoped client tokens: every bearer route × {API token, scoped token of the project, of another project, expired, tampered, admin token}", () => {
  for (const route of servedRoutes()) {
    const entry = MATRIX[route];
    if (!entry || !BEARER_AUTHS.includes(entry.auth)) continue;
    it(`${route}`, async () => {
      for (const which of SCOPED_CREDENTIALS) {
        const call = await entry.call();
        const token = await credentialFor(which, call.projectId ?? freshProjectId());
        const res = await send(call, { token });
        const status = expectedStatus(entry, which);
        expect({ route, which, status: res.status }).toEqual({ route, which, status });
        if (status === entry.ok) continue;
        const body = (await res.json()) as { error: { code: string } };
        expect(body.error.code).toBe(
          status === 401 ? "unauthorized" : status === 403 ? "project_not_allowed" : "not_found",
        );
        await call.unchanged?.();
      }
    });
  }
});

// =============================================================================================

describe("RunPod's signed callbacks", () => {
  for (const kind of ["webhook", "progress"] as const) {
    const other = kind === "webhook" ? "progress" : "webhook";
    const okStatus = kind === "webhook" ? 200 : 204;
    const body = (job: JobRow) =>
      kind === "webhook" ? { id: job.runpod_job_id, status: "IN_PROGRESS" } : { progress: 30 };

    it(`POST /runpod/${kind}/{id}: 401 bad_signature for any signature but this job's, attempt's and kind's`, async () => {
      const job = await processingJob();
      const neighbour = await processingJob();
      const sign = (k: typeof kind | typeof other, id: string, attempt: number, secret = SECRET) =>
        signAttempt(secret, k, id, attempt);
      const right = await sign(kind, job.id, job.attempt);
      const forged: Record<string, string> = {
        none: "",
        onlyAttempt: `?attempt=${job.attempt}`,
        onlySig: `?sig=${right}`,
        ofAnotherJob: `?attempt=${job.attempt}&sig=${await sign(kind, neighbour.id, job.attempt)}`,
        ofAnotherAttempt: `?attempt=${job.attempt}&sig=${await sign(kind, job.id, job.attempt + 1)}`,
        forAnotherAttempt: `?attempt=${job.attempt + 1}&sig=${right}`,
        ofTheOtherKind: `?attempt=${job.attempt}&sig=${await sign(other, job.id, job.attempt)}`,
        ofAnotherSecret: `?attempt=${job.attempt}&sig=${await sign(kind, job.id, job.attempt, "not-the-secret")}`,
        uppercase: `?attempt=${job.attempt}&sig=${right.toUpperCase()}`,
        truncated: `?attempt=${job.attempt}&sig=${right.slice(0, 63)}`,
        extended: `?attempt=${job.attempt}&sig=${right}0`,
        notHex: `?attempt=${job.attempt}&sig=${"z".repeat(64)}`,
      };
      for (const [name, query] of Object.entries(forged)) {
        for (const token of [null, API_TOKEN, ADMIN_TOKEN]) {
          const res = await postJson(`/runpod/${kind}/${job.id}${query}`, body(job), { token });
          expect({ name, token, status: res.status }).toEqual({ name, token, status: 401 });
          await expectError(res, 401, "bad_signature");
        }
      }
      // The bearer tokens are no substitute either, and nothing changed.
      expect(await readJob(job.id)).toEqual(job);
      // The neighbour's own signature works for the neighbour only.
      const neighbourSig = await sign(kind, neighbour.id, neighbour.attempt);
      const res = await postJson(
        `/runpod/${kind}/${job.id}?attempt=${job.attempt}&sig=${neighbourSig}`,
        body(job),
        { token: null },
      );
      expect(res.status).toBe(401);

      const accepted = await postJson(
        `/runpod/${kind}/${job.id}?attempt=${job.attempt}&sig=${right}`,
        body(job),
        { token: null },
      );
      expect(accepted.status).toBe(okStatus);
    });
  }

  it("a signature is checked before the body: a forged call with a bad body is 401, not 400/413", async () => {
    const job = await processingJob();
    for (const kind of ["webhook", "progress"] as const) {
      for (const bad of ["{nope", "x".repeat(MAX_BODY_BYTES + 1)]) {
        const res = await postJson(
          `/runpod/${kind}/${job.id}?attempt=1&sig=${"0".repeat(64)}`,
          bad,
          {
            token: null,
          },
        );
        expect(res.status).toBe(401);
      }
    }
  });
});

// =============================================================================================

/** The test's end of a live socket. */
class LiveClient {
  readonly jobs: Job[] = [];
  snapshots = 0;
  readonly ws: WebSocket;
  constructor(ws: WebSocket) {
    this.ws = ws;
    ws.addEventListener("message", (event) => {
      const data = event.data as string;
      if (data === "pong") return;
      const message = JSON.parse(data) as LiveMessage;
      if (message.type === "job") this.jobs.push(message.job);
      else this.snapshots += 1;
    });
    ws.accept();
  }
}

async function mint(body: unknown, init: FetchInit = {}): Promise<string> {
  const res = await postJson("/live-tickets", body, init);
  expect(res.status).toBe(201);
  return ((await res.json()) as { ticket: string }).ticket;
}

function openLive(ticket: string, init: FetchInit = {}): Promise<Response> {
  return producerFetch(`/live?ticket=${encodeURIComponent(ticket)}`, {
    token: null,
    ...init,
    headers: { Upgrade: "websocket", ...(init.headers as Record<string, string> | undefined) },
  });
}

async function connect(ticket: string): Promise<LiveClient> {
  const res = await openLive(ticket);
  expect(res.status).toBe(101);
  if (!res.webSocket) throw new Error("no WebSocket");
  const client = new LiveClient(res.webSocket);
  await waitFor(async () => (client.snapshots > 0 ? true : undefined), "the snapshot");
  return client;
}

async function createJob(projectId: number): Promise<Job> {
  const res = await postJson("/exports", overlayRequest(projectId, await inputKey(projectId)));
  expect(res.status).toBe(202);
  return ((await res.json()) as { job: Job }).job;
}

describe("live tickets", () => {
  it("a ticket sees its own projects' jobs, never a job of another project", async () => {
    const [mine, alsoMine, theirs] = [freshProjectId(), freshProjectId(), freshProjectId()];
    const single = await connect(await mint({ project_ids: [mine] }));
    const several = await connect(await mint({ project_ids: [mine, alsoMine] }));
    // Theirs first: were it forwarded to our hubs, it would arrive before ours.
    const foreign = await createJob(theirs);
    const own = await createJob(mine);
    const ownToo = await createJob(alsoMine);
    await waitFor(async () => (single.jobs.some((j) => j.id === own.id) ? true : undefined), "own");
    await waitFor(
      async () => (several.jobs.some((j) => j.id === ownToo.id) ? true : undefined),
      "own too",
    );
    for (const client of [single, several]) {
      expect(client.jobs.map((j) => j.id)).not.toContain(foreign.id);
      expect(client.jobs.every((j) => j.project_id === mine || j.project_id === alsoMine)).toBe(
        true,
      );
    }
    expect(single.jobs.map((j) => j.id)).not.toContain(ownToo.id);
    single.ws.close(1000, "done");
    several.ws.close(1000, "done");
  });

  it("401 bad_ticket for an expired, forged or missing ticket, and for bearer tokens instead", async () => {
    const projectId = freshProjectId();
    const shortLived = await mint(
      { project_ids: [projectId] },
      { vars: { LIVE_TICKET_TTL_S: "0.05" } },
    );
    const otherSecret = await mint(
      { project_ids: [projectId] },
      { vars: { WEBHOOK_SECRET: "another-secret" } },
    );
    await new Promise((resolve) => setTimeout(resolve, 120));
    const good = await mint({ project_ids: [projectId] });
    const [kid, payload, sig] = good.split(".") as [string, string, string];
    const refused: Record<string, Promise<Response>> = {
      expired: openLive(shortLived),
      anotherSecret: openLive(otherSecret),
      payloadOnly: openLive(payload),
      sigOnly: openLive(sig),
      swapped: openLive(`${kid}.${sig}.${payload}`),
      empty: openLive(""),
      noParam: producerFetch("/live", { token: null, headers: { Upgrade: "websocket" } }),
      apiToken: producerFetch("/live", { token: API_TOKEN, headers: { Upgrade: "websocket" } }),
      adminToken: producerFetch("/live", { token: ADMIN_TOKEN, headers: { Upgrade: "websocket" } }),
      ticketAsBearer: producerFetch("/live", { token: good, headers: { Upgrade: "websocket" } }),
    };
    for (const [name, pending] of Object.entries(refused)) {
      const res = await pending;
      expect({ name, status: res.status }).toEqual({ name, status: 401 });
      await expectError(res, 401, "bad_ticket");
    }
    // The good one opens.
    const client = await connect(good);
    client.ws.close(1000, "done");
  });

  it("an operators' ticket needs the ADMIN_TOKEN", async () => {
    const res = await postJson("/live-tickets", { all_projects: true }, { token: API_TOKEN });
    await expectError(res, 401, "unauthorized");
    await mint({ all_projects: true }, { token: ADMIN_TOKEN });
  });
});

// =============================================================================================

describe("CORS", () => {
  const ORIGIN = "https://editor.test";
  const vars = { CORS_ORIGIN: ORIGIN };
  const corsHeaders = (res: Response) =>
    [...res.headers.keys()].filter((name) => name.startsWith("access-control-"));

  it("answers CORS_ORIGIN with its CORS headers on every route, success or error", async () => {
    for (const route of servedRoutes()) {
      const entry = MATRIX[route] as RouteCase;
      const call = await entry.call();
      const token =
        entry.auth === "admin"
          ? ADMIN_TOKEN
          : entry.auth === "api" || entry.auth === "frontend" || entry.auth === "either"
            ? API_TOKEN
            : null;
      for (const credentials of [token, "nope"]) {
        const fresh = credentials === token ? call : await entry.call();
        const headers = new Headers(fresh.init?.headers);
        headers.set("origin", ORIGIN);
        const res = await producerFetch(fresh.path, {
          ...fresh.init,
          headers,
          token: credentials,
          vars,
        });
        expect(res.status).toBeLessThan(500);
        expect({
          route,
          credentials,
          status: res.status,
          allow: res.headers.get("access-control-allow-origin"),
        }).toEqual({
          route,
          credentials,
          status: res.status,
          allow: ORIGIN,
        });
        expect(res.headers.get("vary") ?? "").toMatch(/origin/i);
        expect(res.headers.get("access-control-allow-credentials")).toBeNull();
      }
    }
  });

  it("answers a preflight from CORS_ORIGIN with the API's headers and none to another origin", async () => {
    const preflight = (origin: string) =>
      producerFetch("/exports", {
        method: "OPTIONS",
        token: null,
        headers: {
          origin,
          "access-control-request-method": "POST",
          "access-control-request-headers": "authorization,content-type,idempotency-key",
        },
      });
    const ok = await producerFetch("/exports", {
      method: "OPTIONS",
      token: null,
      vars,
      headers: {
        origin: ORIGIN,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type,idempotency-key",
      },
    });
    expect(ok.status).toBe(204);
    expect(ok.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    const allowed = (ok.headers.get("access-control-allow-headers") ?? "").toLowerCase();
    for (const header of ["authorization", "content-type", "idempotency-key"]) {
      expect(allowed.split(",")).toContain(header);
    }
    expect(ok.headers.get("access-control-allow-methods") ?? "").toContain("POST");

    for (const origin of [
      "https://evil.test",
      "https://editor.test.evil.test",
      "null",
      "http://editor.test",
    ]) {
      const res = await producerFetch("/exports", {
        method: "OPTIONS",
        token: null,
        vars,
        headers: {
          origin,
          "access-control-request-method": "POST",
          "access-control-request-headers": "authorization",
        },
      });
      expect({ origin, allow: res.headers.get("access-control-allow-origin") }).toEqual({
        origin,
        allow: null,
      });
      expect(res.headers.get("access-control-allow-credentials")).toBeNull();
    }
    // No CORS_ORIGIN: no preflight route at all, and no CORS header.
    const none = await preflight(ORIGIN);
    expect(none.status).toBe(404);
    expect(corsHeaders(none)).toEqual([]);
  });

  it("sends no CORS header to another origin, nor to anyone without CORS_ORIGIN", async () => {
    for (const route of servedRoutes()) {
      const entry = MATRIX[route] as RouteCase;
      const token =
        entry.auth === "admin"
          ? ADMIN_TOKEN
          : entry.auth === "api" || entry.auth === "frontend" || entry.auth === "either"
            ? API_TOKEN
            : null;
      for (const [origin, withVars] of [
        ["https://evil.test", true],
        ["https://editor.test.evil.test", true],
        [ORIGIN, false],
        ["https://evil.test", false],
      ] as const) {
        const call = await entry.call();
        const headers = new Headers(call.init?.headers);
        headers.set("origin", origin);
        const res = await producerFetch(call.path, {
          ...call.init,
          headers,
          token,
          ...(withVars ? { vars } : {}),
        });
        expect({ route, origin, withVars, cors: corsHeaders(res) }).toEqual({
          route,
          origin,
          withVars,
          cors: [],
        });
      }
    }
  });
});

// =============================================================================================

describe("the 256 KiB body limit", () => {
  const bodyRoutes = () => servedRoutes().filter((route) => MATRIX[route]?.body);

  /** A chunked body (no Content-Length) of `size` bytes: "{" and then "x"s, never valid JSON. */
  function chunked(size: number): ReadableStream<Uint8Array> {
    let sent = 0;
    return new ReadableStream<Uint8Array>({
      pull(controller) {
        const length = Math.min(16 * 1024, size - sent);
        if (length <= 0) {
          controller.close();
          return;
        }
        const chunk = new Uint8Array(length).fill("x".charCodeAt(0));
        if (sent === 0) chunk[0] = "{".charCodeAt(0);
        sent += length;
        controller.enqueue(chunk);
      },
    });
  }

  async function authorised(route: string) {
    const entry = MATRIX[route] as RouteCase;
    const call = await entry.call();
    const token = entry.auth === "admin" ? ADMIN_TOKEN : entry.auth === "signed" ? null : API_TOKEN;
    return { call, token };
  }

  it("answers 413 to a body over the limit that is not even JSON, declared or chunked", async () => {
    const routes = bodyRoutes();
    expect(routes.sort()).toEqual(
      [
        "POST /admin/jobs/retry",
        "POST /client-tokens",
        "POST /exports",
        "POST /exports/batch",
        "POST /live-tickets",
        "POST /runpod/progress/:id",
        "POST /runpod/webhook/:id",
      ].sort(),
    );
    for (const route of routes) {
      for (const shape of ["declared", "chunked"] as const) {
        for (const size of [MAX_BODY_BYTES + 1, 4 * MAX_BODY_BYTES]) {
          const { call, token } = await authorised(route);
          const before = await countAllJobs();
          const body = shape === "declared" ? `{${"x".repeat(size - 1)}` : chunked(size);
          const res = await producerFetch(call.path, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body,
            token,
            ...(shape === "chunked" ? { duplex: "half" } : {}),
          } as FetchInit);
          expect({ route, shape, size, status: res.status }).toEqual({
            route,
            shape,
            size,
            status: 413,
          });
          await expectError(res, 413, "payload_too_large");
          expect(await countAllJobs()).toBe(before);
          await call.unchanged?.();
        }
      }
    }
  });

  it("reads a body of exactly the limit: invalid JSON then is 400 invalid_json, not 413", async () => {
    for (const route of bodyRoutes()) {
      for (const shape of ["declared", "chunked"] as const) {
        const { call, token } = await authorised(route);
        const body =
          shape === "declared" ? `{${"x".repeat(MAX_BODY_BYTES - 1)}` : chunked(MAX_BODY_BYTES);
        const res = await producerFetch(call.path, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body,
          token,
          ...(shape === "chunked" ? { duplex: "half" } : {}),
        } as FetchInit);
        expect({ route, shape, status: res.status }).toEqual({ route, shape, status: 400 });
        await expectError(res, 400, "invalid_json");
      }
    }
  });
});
