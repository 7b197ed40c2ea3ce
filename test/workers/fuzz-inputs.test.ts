// Property-based fuzzing (fast-check) of every input the pipeline takes from outside, through the
// real handlers and the real Miniflare bindings: POST /exports bodies and headers, the listings'
// query strings, POST /admin/jobs/retry, POST /live-tickets, GET /live tickets, RunPod's signed
// webhook and progress calls, and queue message bodies through the consumer's queue() handler.
//
// The contract checked for every input: a 4xx answer carries the error envelope
// {"error":{"code":<snake_case>,"message":<string>,"issues"?:[…]}}, nothing answers 5xx, and a
// rejected input writes no row, sends no queue message and publishes nothing (an operators' live
// socket is open for the whole file). An input that happens to be valid gets the success answer,
// and its effects are accounted for: every row, message and publication this file sees must be
// one of the jobs a valid POST /exports created (version 1, never changed afterwards).

import { env } from "cloudflare:workers";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeCursor, encodeCursor } from "../../producer/cursor.ts";
import { MAX_BODY_BYTES } from "../../producer/http.ts";
import { listQuery } from "../../producer/routes/list-exports.ts";
import { retryRequest } from "../../producer/routes/retry-jobs.ts";
import { encodeBase64Url } from "../../shared/base64url.ts";
import { mintSigned, type SigningKey, signingKey, signWith } from "../../shared/keys.ts";
import type { LiveMessage } from "../../shared/live-publisher.ts";
import { liveTicketRequest } from "../../shared/live-ticket.ts";
import {
  createExportRequest,
  jobMessage,
  MAX_PARAMS_DEPTH,
  progressReport,
  runpodStatusObject,
} from "../../shared/schemas.ts";
import { type SignedUrlKind, signAttempt } from "../../shared/signing.ts";
import type { Job, JobRow } from "../../shared/sql/jobs/row.ts";
import * as repo from "../../shared/sql/jobs/transitions.ts";
import {
  ADMIN_TOKEN,
  API_TOKEN,
  deliver,
  insertPendingJob,
  overlayRequest,
  postJson,
  producerFetch,
  putInput,
  readJob,
  sentMessagesFor,
  uniqueEndpoint,
  waitFor,
} from "./helpers.ts";

// ---------------------------------------------------------------------------------------------
// The file's own world: a range of project ids, one input object in R2, fixed jobs to aim at.

/** Every project id this file uses is in [BASE, BASE + RANGE). */
const BASE = 7_000_000_000 + Math.floor(Math.random() * 1_000_000) * 1000;
const RANGE = 1000;
const SENTINEL_PROJECT = BASE + RANGE - 1;
/** The only input object of this file: a valid request must name it to be accepted. */
const KEY = `uploads/fuzz-${crypto.randomUUID()}/in.mp4`;
const SECRET = env.WEBHOOK_SECRET as string;
const KiB = 1024;

/** Inputs tried per route, and the answers they got, printed at the end. */
const tried = new Map<string, number>();
const answers = new Map<string, Map<number | string, number>>();
function count(route: string): void {
  tried.set(route, (tried.get(route) ?? 0) + 1);
}
function tally(route: string, answer: number | string): void {
  const seen = answers.get(route) ?? new Map<number | string, number>();
  seen.set(answer, (seen.get(answer) ?? 0) + 1);
  answers.set(route, seen);
}

/** Jobs a valid POST /exports created (the only effects any input may have). */
const created = new Set<string>();

/** Rows this file set up directly in D1 (no publication); they must never change. */
interface Fixtures {
  /** processing, attempt ATTEMPT, with a run. */
  processing: JobRow;
  complete: JobRow;
  cancelled: JobRow;
}
const ATTEMPT = 7;
let fixtures: Fixtures;

async function setUpFixtures(): Promise<Fixtures> {
  const pending = await insertPendingJob(BASE + 1);
  const [claimed] = await repo.claimJobs(env.DB, [pending.id], 3600);
  if (!claimed) throw new Error("claim failed");
  await env.DB.prepare("UPDATE export_jobs SET attempt = ? WHERE id = ?")
    .bind(ATTEMPT, claimed.id)
    .run();
  const processing = await repo.recordRun(env.DB, claimed.id, ATTEMPT, "run-fuzz", 3600);
  if (!processing) throw new Error("record failed");
  const done = await insertPendingJob(BASE + 2);
  await env.DB.prepare(
    `UPDATE export_jobs SET status = 'complete', progress = 100, attempt = 1,
       runpod_job_id = 'run-done', output_video_key = 'exports/x/y.mp4' WHERE id = ?`,
  )
    .bind(done.id)
    .run();
  const gone = await insertPendingJob(BASE + 3);
  await env.DB.prepare(
    "UPDATE export_jobs SET status = 'error', error = 'cancelled', attempt = 1 WHERE id = ?",
  )
    .bind(gone.id)
    .run();
  return {
    processing,
    complete: (await readJob(done.id)) as JobRow,
    cancelled: (await readJob(gone.id)) as JobRow,
  };
}

// ---------------------------------------------------------------------------------------------
// The operators' live socket: every publication of every project reaches it.

class OperatorsSocket {
  readonly jobs: Job[] = [];
  readonly ws: WebSocket;
  constructor(ws: WebSocket) {
    this.ws = ws;
    ws.addEventListener("message", (event) => {
      const data = event.data as string;
      if (data === "pong") return;
      const message = JSON.parse(data) as LiveMessage;
      if (message.type === "job") this.jobs.push(message.job);
    });
    ws.accept();
  }
}
let operators: OperatorsSocket;

async function connectOperators(): Promise<OperatorsSocket> {
  const minted = await postJson("/live-tickets", { all_projects: true }, { token: ADMIN_TOKEN });
  expect(minted.status).toBe(201);
  const { ticket } = (await minted.json()) as { ticket: string };
  const res = await producerFetch(`/live?ticket=${encodeURIComponent(ticket)}`, {
    token: null,
    headers: { Upgrade: "websocket" },
  });
  expect(res.status).toBe(101);
  if (!res.webSocket) throw new Error("no WebSocket");
  return new OperatorsSocket(res.webSocket);
}

/**
 * The file's invariant, checked after each route's fuzzing. A sentinel job is created first:
 * once its queue message and its publication have arrived, every earlier one has too.
 */
async function expectOnlyCreatedJobsChanged(): Promise<void> {
  const res = await postJson("/exports", overlayRequest(SENTINEL_PROJECT, KEY));
  expect(res.status).toBe(202);
  const sentinel = ((await res.json()) as { job: Job }).job.id;
  created.add(sentinel);

  // The queue: every created job's message arrives (the sentinel's last), then none for anything
  // else was sent.
  const sent = await waitFor(async () => {
    await sentMessagesFor("");
    const { results } = await env.DB.prepare("SELECT body FROM test_sent_messages").all<{
      body: string;
    }>();
    const ids = results.map((m) => (JSON.parse(m.body) as { job_id?: unknown }).job_id);
    return [...created].every((id) => ids.includes(id)) ? ids : undefined;
  }, "a queue message for every created job");
  expect(sent.filter((id) => !created.has(id as string))).toEqual([]);
  expect(sent.length).toBe(created.size);

  // Live: one publication per created job (its creation), none for anything else.
  const published = await waitFor(async () => {
    const ids = operators.jobs.map((job) => job.id);
    return [...created].every((id) => ids.includes(id)) ? ids : undefined;
  }, "a publication of every created job");
  expect(published.filter((id) => !created.has(id))).toEqual([]);
  expect(published.length).toBe(created.size);
  expect(operators.jobs.every((job) => job.version === 1)).toBe(true);

  // D1 (this file's own database): the fixtures, unchanged, and the created jobs, as created.
  const { results: rows } = await env.DB.prepare("SELECT * FROM export_jobs").all<JobRow>();
  const fixtureRows = [fixtures.processing, fixtures.complete, fixtures.cancelled];
  for (const fixture of fixtureRows) {
    expect(rows.find((row) => row.id === fixture.id)).toEqual(fixture);
  }
  const others = rows.filter((row) => !fixtureRows.some((fixture) => fixture.id === row.id));
  expect(others.filter((row) => !created.has(row.id)).map((row) => row.id)).toEqual([]);
  expect(others.length).toBe(created.size);
  for (const row of others) {
    expect({ status: row.status, version: row.version }).toEqual({ status: "pending", version: 1 });
  }
  const inRange = rows.filter((row) => row.project_id >= BASE && row.project_id < BASE + RANGE);
  expect(inRange.length).toBeGreaterThanOrEqual(fixtureRows.length + 1);
}

// ---------------------------------------------------------------------------------------------
// Answers.

interface ErrorBody {
  error: { code: string; message: string; issues?: unknown[] };
}

/** A 4xx with exactly the error envelope; returns its code. */
async function expectErrorEnvelope(res: Response, status?: number): Promise<string> {
  if (status !== undefined) expect(res.status).toBe(status);
  expect(res.status).toBeGreaterThanOrEqual(400);
  expect(res.status).toBeLessThan(500);
  expect(res.headers.get("content-type") ?? "").toMatch(/^application\/json/);
  const body = (await res.json()) as ErrorBody;
  expect(Object.keys(body)).toEqual(["error"]);
  expect(typeof body.error.code).toBe("string");
  expect(body.error.code).toMatch(/^[a-z]+(_[a-z]+)*$/);
  expect(typeof body.error.message).toBe("string");
  expect(body.error.message.length).toBeGreaterThan(0);
  for (const key of Object.keys(body.error)) expect(["code", "message", "issues"]).toContain(key);
  if (body.error.issues !== undefined) expect(Array.isArray(body.error.issues)).toBe(true);
  return body.error.code;
}

function expectNot5xx(res: Response, what: unknown): void {
  if (res.status >= 500) {
    throw new Error(`5xx (${res.status}) for ${JSON.stringify(what)?.slice(0, 500)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Generators of hostile text.

const INJECTIONS = [
  "'; DROP TABLE export_jobs; --",
  '" OR 1=1 --',
  "1; DELETE FROM dead_letters",
  "../",
  "../../etc/passwd",
  "uploads/../x.mp4",
  "uploads/./x.mp4",
  "./x.mp4",
  "..",
  ".",
  "/abs.mp4",
  "uploads//x.mp4",
  "%2e%2e",
  "%2e%2e/%2e%2e/x",
  "uploads/%2e%2e/x.mp4",
  "..%2f..%2fx",
  "..\\..\\x",
  "\u0000",
  "a\u0000b",
  "%00",
  "uploads/\u202egpm.exe",
  "\u200b\u200c\u200d\ufeff",
  "\u200f\u202b\u202a",
  "\ud800",
  "x\udfffy",
  "\ud83d",
  "\u2028\u2029",
  "\r\nX-Injected: 1",
  "$" + "{jndi:ldap://x}",
  "<script>alert(1)</script>",
  "{{7*7}}",
  "__proto__",
  "constructor",
  "null",
  "%",
  "%zz",
  "😀".repeat(300),
  "a".repeat(1025),
  "é".repeat(513),
];

const hostileChar = fc.oneof(
  fc.string({ unit: "binary", minLength: 1, maxLength: 1 }),
  fc.string({ unit: "binary-ascii", minLength: 1, maxLength: 1 }),
  fc.integer({ min: 0xd800, max: 0xdfff }).map((code) => String.fromCharCode(code)),
  fc.constantFrom(
    "\u0000",
    "\u001f",
    "\u007f",
    "\u202e",
    "\u200b",
    "\u200f",
    "\ufeff",
    "/",
    ".",
    "%",
    "\\",
    "'",
    '"',
    ";",
    "&",
    "=",
    "?",
    "#",
    "+",
    " ",
  ),
);

const hostileString = fc.oneof(
  { weight: 3, arbitrary: fc.string({ unit: hostileChar, maxLength: 24 }) },
  { weight: 2, arbitrary: fc.constantFrom(...INJECTIONS) },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.constantFrom(...INJECTIONS), fc.string({ unit: hostileChar, maxLength: 8 }))
      .map(([a, b]) => a + b),
  },
  { weight: 1, arbitrary: fc.string({ maxLength: 16 }) },
);

/** Any value, with hostile strings and odd numbers among its leaves. */
const anyValue = fc.anything({
  maxDepth: 3,
  maxKeys: 5,
  withNullPrototype: true,
  values: [
    hostileString,
    fc.double(),
    fc.integer(),
    fc.constantFrom(0, -0, -1, 1.5, 2 ** 53, 1e308, Number.MAX_SAFE_INTEGER, Number.NaN),
    fc.boolean(),
    fc.constant(null),
  ],
});

const oddNumber = fc.oneof(
  fc.constantFrom<unknown>(
    0,
    -0,
    -1,
    1.5,
    2 ** 53,
    2 ** 53 + 2,
    1e308,
    -1e308,
    Number.NaN,
    Number.POSITIVE_INFINITY,
    "1",
    "",
    null,
    true,
    [],
    {},
    [1],
  ),
  fc.double(),
  fc.integer({ min: -10, max: 10 }),
  hostileString,
);

const toJsonText = (value: unknown): string => JSON.stringify(value) ?? "undefined";

/** Percent-encodes the UTF-8 of `text` (lone surrogates become U+FFFD, as any client's would). */
function percentEncode(text: string): string {
  let out = "";
  for (const byte of new TextEncoder().encode(text)) {
    const ch = String.fromCharCode(byte);
    out += /[A-Za-z0-9\-_.~]/.test(ch)
      ? ch
      : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** What a server sees of a string sent as UTF-8: lone surrogates replaced by U+FFFD. */
const wellFormed = (text: string) =>
  text.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, "\ufffd");

// ---------------------------------------------------------------------------------------------

beforeAll(async () => {
  await putInput(KEY);
  fixtures = await setUpFixtures();
  operators = await connectOperators();
});

afterAll(() => {
  operators?.ws.close(1000, "done");
  const total = [...tried.values()].reduce((a, b) => a + b, 0);
  const perRoute = [...tried].map(([route, n]) => {
    const seen = [...(answers.get(route) ?? [])].sort(([a], [b]) =>
      String(a).localeCompare(String(b)),
    );
    return `${route}: ${n} (${seen.map(([answer, k]) => `${answer}×${k}`).join(", ")})`;
  });
  console.log(`fuzz inputs tried: ${total} in all\n${perRoute.join("\n")}`);
});

// =============================================================================================
// POST /exports

type JobTypeName = "framing" | "overlay" | "annotate";

const tenths = (min: number, max: number) => fc.integer({ min, max }).map((n) => n / 10);

const validParams: Record<JobTypeName, fc.Arbitrary<Record<string, unknown>>> = {
  framing: fc.record({
    crop_keyframes: fc.array(
      fc.record({
        time: tenths(0, 100_000),
        x: tenths(-10_000, 10_000),
        y: tenths(-10_000, 10_000),
        width: tenths(1, 10_000),
        height: tenths(1, 10_000),
      }),
      { minLength: 1, maxLength: 3 },
    ),
  }),
  overlay: fc.record({
    highlight_regions: fc.array(
      fc
        .tuple(fc.integer({ min: 0, max: 100_000 }), fc.integer({ min: 1, max: 100_000 }))
        .map(([start, length]) => ({ start_time: start / 10, end_time: (start + length) / 10 })),
      { minLength: 1, maxLength: 3 },
    ),
  }),
  annotate: fc.record({
    annotations: fc.array(fc.jsonValue({ maxDepth: 2 }), { minLength: 1, maxLength: 3 }),
  }),
};

const validRequest = fc.constantFrom<JobTypeName>("framing", "overlay", "annotate").chain((type) =>
  fc.record(
    {
      project_id: fc.integer({ min: BASE + 10, max: BASE + RANGE - 2 }),
      user_id: fc.integer({ min: 1, max: 1_000 }),
      type: fc.constant(type),
      input_video_key: fc.constant(KEY),
      params: fc
        .tuple(validParams[type], fc.dictionary(hostileString, anyValue, { maxKeys: 3 }))
        .map(([required, extra]) => ({ ...extra, ...required })),
      extra_top_level: anyValue,
    },
    { requiredKeys: ["project_id", "type", "input_video_key", "params"] },
  ),
);

const FIELDS = ["project_id", "user_id", "type", "input_video_key", "params"] as const;

/** A valid request, then zero to three mutations. */
const mutatedRequest = fc
  .tuple(
    validRequest,
    fc.array(
      fc.oneof(
        fc.record({ kind: fc.constant("delete" as const), field: fc.constantFrom(...FIELDS) }),
        fc.record({
          kind: fc.constant("set" as const),
          field: fc.constantFrom(...FIELDS),
          value: anyValue,
        }),
        fc.record({ kind: fc.constant("key" as const), value: hostileString }),
        fc.record({
          kind: fc.constant("id" as const),
          field: fc.constantFrom("project_id", "user_id"),
          value: oddNumber,
        }),
        fc.record({
          kind: fc.constant("type" as const),
          value: fc.oneof(
            fc.constantFrom("framing", "overlay", "annotate", "FRAMING", ""),
            hostileString,
          ),
        }),
        fc.record({
          kind: fc.constant("params" as const),
          value: fc.constantFrom<unknown>(
            null,
            [],
            {},
            "x",
            { highlight_regions: [] },
            { highlight_regions: [{ start_time: 2, end_time: 1 }] },
            { highlight_regions: [{ start_time: -1, end_time: 1 }] },
            { highlight_regions: [{ start_time: 1, end_time: 1 }] },
            { crop_keyframes: [{ time: 0, x: 0, y: 0, width: 0, height: 1 }] },
            { crop_keyframes: [{ time: 0, x: "0", y: 0, width: 1, height: 1 }] },
            { annotations: [] },
            { annotations: "not an array" },
          ),
        }),
      ),
      { maxLength: 3 },
    ),
  )
  .map(([request, mutations]) => {
    const body: Record<string, unknown> = { ...request };
    for (const mutation of mutations) {
      if (mutation.kind === "delete") delete body[mutation.field];
      else if (mutation.kind === "set" || mutation.kind === "id") {
        body[mutation.field] = mutation.value;
      } else if (mutation.kind === "key") body.input_video_key = mutation.value;
      else if (mutation.kind === "type") body.type = mutation.value;
      else body.params = mutation.value;
    }
    return toJsonText(body);
  });

/** Bodies that are not a request at all. */
const strangeBody = fc.oneof(
  fc.jsonValue().map(toJsonText),
  anyValue.map(toJsonText),
  fc.string({ unit: "binary", maxLength: 64 }),
  hostileString,
  fc.constantFrom(
    "",
    " ",
    "{",
    "}",
    "[",
    "null",
    "true",
    "0",
    '""',
    "{}",
    "[]",
    '{"a":1,}',
    "\u0000",
  ),
  validRequest.map((request) => `${toJsonText(request)}garbage`),
  validRequest.map((request) => toJsonText([request])),
  validRequest.map((request) => toJsonText(toJsonText(request))),
);

const CONTENT_TYPES_ACCEPTED = [
  "application/json",
  "application/json; charset=utf-8",
  "APPLICATION/JSON",
  "application/vnd.api+json",
  "application/problem+json;charset=UTF-8",
];
const CONTENT_TYPES_REFUSED = [
  "text/plain",
  "text/json",
  "application/jsonx",
  "application/x-www-form-urlencoded",
  "multipart/form-data; boundary=x",
  "application/octet-stream",
  "json",
  "",
];

interface CreateInput {
  body: string | Uint8Array;
  contentType: string | null;
  idempotencyKey: string | undefined;
}

const idempotencyKey = fc.oneof(
  { weight: 6, arbitrary: fc.constant(undefined) },
  { weight: 2, arbitrary: fc.stringMatching(/^[A-Za-z0-9_.:-]{1,40}$/) },
  { weight: 1, arbitrary: fc.constantFrom("k-1", "k-2", "k-3") },
  { weight: 1, arbitrary: fc.constantFrom("", "x".repeat(256), "y".repeat(300), "z".repeat(255)) },
);

/**
 * Requests sent again and again under one Idempotency-Key each: the first is accepted (202), the
 * same body again (keys in any order) answers 200 with that job, another body 422.
 */
const REPEATED = [0, 1, 2].map((i) => overlayRequest(BASE + 900 + i, KEY));
const repeatedInput: fc.Arbitrary<CreateInput> = fc
  .record({
    i: fc.constantFrom(0, 1, 2),
    variant: fc.constantFrom("same", "same", "reordered", "other_params", "other_user"),
  })
  .map(({ i, variant }) => {
    const request = REPEATED[i] as ReturnType<typeof overlayRequest>;
    const body =
      variant === "same"
        ? request
        : variant === "reordered"
          ? Object.fromEntries(Object.entries(request).reverse())
          : variant === "other_params"
            ? { ...request, params: { ...request.params, note: "another body" } }
            : { ...request, user_id: 5 };
    return {
      body: toJsonText(body),
      contentType: "application/json",
      idempotencyKey: `repeat-${BASE}-${i}`,
    };
  });

const createInput: fc.Arbitrary<CreateInput> = fc.oneof(
  { weight: 1, arbitrary: repeatedInput },
  {
    weight: 12,
    arbitrary: fc.record({
      body: fc.oneof(
        { weight: 4, arbitrary: mutatedRequest },
        { weight: 2, arbitrary: validRequest.map(toJsonText) },
        { weight: 3, arbitrary: strangeBody },
        { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }) },
      ),
      contentType: fc.oneof(
        { weight: 8, arbitrary: fc.constant("application/json") },
        { weight: 1, arbitrary: fc.constantFrom(...CONTENT_TYPES_ACCEPTED) },
        { weight: 1, arbitrary: fc.constantFrom<string | null>(...CONTENT_TYPES_REFUSED, null) },
      ),
      idempotencyKey,
    }),
  },
);

/** JSON with object keys sorted at every level (how the contract compares repeated bodies). */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    const entries = Object.entries(value).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/** The first request of each (project, Idempotency-Key): its canonical body and its job. */
const idempotent = new Map<string, { canonical: string; jobId: string }>();

type Expected =
  | { status: 400 | 401 | 404 | 413 | 415 | 422; code: string }
  | { status: 200 | 201 | 202 | 204; code?: undefined };

function expectedCreate(input: CreateInput): Expected {
  const key = input.idempotencyKey;
  if (key !== undefined && (key.length < 1 || key.length > 255)) {
    return { status: 400, code: "invalid_request" };
  }
  const contentType = input.contentType ?? "";
  if (!CONTENT_TYPES_ACCEPTED.includes(contentType)) {
    return { status: 415, code: "unsupported_media_type" };
  }
  const bytes = typeof input.body === "string" ? new TextEncoder().encode(input.body) : input.body;
  if (bytes.byteLength > MAX_BODY_BYTES) return { status: 413, code: "payload_too_large" };
  let data: unknown;
  try {
    data = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return { status: 400, code: "invalid_json" };
  }
  const parsed = createExportRequest.safeParse(data);
  if (!parsed.success) return { status: 400, code: "invalid_request" };
  if (key !== undefined) {
    const first = idempotent.get(`${parsed.data.project_id}:${key}`);
    if (first) {
      return first.canonical === canonical(parsed.data)
        ? { status: 200 }
        : { status: 422, code: "idempotency_key_reused" };
    }
  }
  if (parsed.data.input_video_key !== KEY) return { status: 422, code: "input_not_found" };
  return { status: 202 };
}

async function tryCreate(input: CreateInput, route = "POST /exports"): Promise<void> {
  count(route);
  const expected = expectedCreate(input);
  const headers: Record<string, string> = {};
  if (input.contentType !== null) headers["content-type"] = input.contentType;
  if (input.idempotencyKey !== undefined) headers["idempotency-key"] = input.idempotencyKey;
  const body = input.body;
  const res = await producerFetch("/exports", {
    method: "POST",
    headers,
    // A Blob keeps the content type ours (a string body would default to text/plain).
    body: new Blob([typeof body === "string" ? new TextEncoder().encode(body) : body]),
  });
  expectNot5xx(res, input);
  tally(route, res.status);
  if (expected.code !== undefined) {
    const code = await expectErrorEnvelope(res);
    expect({ status: res.status, code }).toEqual({ status: expected.status, code: expected.code });
    return;
  }
  expect(res.status).toBe(expected.status);
  const { job } = (await res.json()) as { job: Job };
  expect(res.headers.get("location")).toBe(`/exports/${job.id}`);
  const text = typeof body === "string" ? body : new TextDecoder().decode(body);
  const request = createExportRequest.parse(JSON.parse(text));
  expect(job).toMatchObject({
    project_id: request.project_id,
    type: request.type,
    input_video_key: KEY,
    status: "pending",
    version: 1,
    attempt: 0,
    user_id: request.user_id ?? null,
  });
  expect(job.params).toEqual(JSON.parse(JSON.stringify(request.params)));
  const key = input.idempotencyKey;
  if (res.status === 202) {
    expect(created.has(job.id)).toBe(false);
    created.add(job.id);
    if (key !== undefined) {
      idempotent.set(`${request.project_id}:${key}`, {
        canonical: canonical(request),
        jobId: job.id,
      });
    }
  } else {
    expect(job.id).toBe(idempotent.get(`${request.project_id}:${key}`)?.jobId);
  }
}

describe("fuzz POST /exports", () => {
  it("answers every body, content type and Idempotency-Key with the contract, never a 5xx", async () => {
    await fc.assert(
      fc.asyncProperty(createInput, (input) => tryCreate(input)),
      {
        numRuns: 1200,
      },
    );
    await expectOnlyCreatedJobsChanged();
  });

  it("refuses bodies over 256 KiB with 413 (valid JSON or not) and takes those up to it", async () => {
    const sizes = fc.oneof(
      fc.integer({ min: MAX_BODY_BYTES - 64, max: MAX_BODY_BYTES + 64 }),
      fc.constantFrom(
        MAX_BODY_BYTES - 1,
        MAX_BODY_BYTES,
        MAX_BODY_BYTES + 1,
        512 * KiB,
        1024 * KiB,
      ),
    );
    const huge = fc
      .record({
        size: sizes,
        shape: fc.constantFrom("valid", "invalid_json", "huge_key", "multibyte"),
        request: validRequest,
      })
      .map(({ size, shape, request }): CreateInput => {
        const skeleton = (pad: string) =>
          shape === "huge_key"
            ? toJsonText({ ...request, input_video_key: pad })
            : toJsonText({ ...request, params: { ...request.params, pad } });
        const room = Math.max(0, size - new TextEncoder().encode(skeleton("")).length);
        let text: string;
        if (shape === "invalid_json") text = `{${"x".repeat(size - 1)}`;
        else if (shape === "multibyte") {
          // "é" is two bytes, "😀" four: the limit is on bytes, not characters.
          text = skeleton("😀".repeat(Math.floor(room / 4)) + "é".repeat((room % 4) >> 1));
        } else text = skeleton("x".repeat(room));
        return { body: text, contentType: "application/json", idempotencyKey: undefined };
      });
    await fc.assert(
      fc.asyncProperty(huge, (input) => tryCreate(input, "POST /exports (near 256 KiB)")),
      { numRuns: 40 },
    );
    await expectOnlyCreatedJobsChanged();
  });
});

// =============================================================================================
// Listings: GET /exports, GET /admin/jobs, GET /dead-letters

const idText = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: BASE, max: BASE + RANGE - 1 }).map(String) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 1000 }).map(String) },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      "0",
      "-1",
      "1.5",
      "1e3",
      "0x10",
      " 7 ",
      "",
      "9007199254740991",
      "9007199254740992",
      "NaN",
      "Infinity",
      "1,2",
      "+5",
    ),
  },
  { weight: 2, arbitrary: hostileString },
);

const cursorText = fc.oneof(
  fc.string({ maxLength: 24 }),
  hostileString,
  fc
    .tuple(
      fc.oneof(fc.string(), fc.constant("2026-01-01 00:00:00.000")),
      fc.oneof(fc.uuid(), fc.string()),
    )
    .map(([createdAt, id]) => encodeCursor({ created_at: createdAt, id })),
  anyValue.map((value) => encodeBase64Url(wellFormed(toJsonText(value)))),
  fc.constantFrom("", "=", "e30", "W10", "WyIiLCIiXQ", "bnVsbA", "!!!", "%%%"),
);

interface ListInput {
  project_id: string[];
  user_id: string | undefined;
  active: string | undefined;
  limit: string | undefined;
  cursor: string | undefined;
  extra: [string, string][];
  raw: string;
}

/** Cursors the listing handed out, to page on with. */
const realCursors: string[] = [];

const activeText = fc.oneof(
  { weight: 3, arbitrary: fc.constant(undefined) },
  { weight: 2, arbitrary: fc.constantFrom("true", "false") },
  { weight: 1, arbitrary: fc.oneof(fc.constantFrom("TRUE", "1", "", "yes"), hostileString) },
);
const limitText = fc.oneof(
  { weight: 3, arbitrary: fc.constant(undefined) },
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 100 }).map(String) },
  {
    weight: 2,
    arbitrary: fc.oneof(
      fc.integer({ min: -5, max: 105 }).map(String),
      fc.constantFrom("", "abc", "1.5", " 20", "1e2", "0x10"),
      hostileString,
    ),
  },
);
const cursorOrNot = fc.oneof(
  { weight: 4, arbitrary: fc.constant(undefined) },
  {
    weight: 2,
    arbitrary: fc.nat().map((i) => realCursors[i % Math.max(1, realCursors.length)] ?? "e30"),
  },
  { weight: 2, arbitrary: cursorText },
);
const rawSuffix = fc.oneof(
  { weight: 6, arbitrary: fc.constant("") },
  {
    weight: 1,
    arbitrary: fc.constantFrom("&", "&&", "&=", "&%", "&%zz=1", "&project_id", "&limit=%ED%A0%80"),
  },
);
const extraParams = fc.array(fc.tuple(hostileString, hostileString), { maxLength: 2 });
const ourProject = fc.integer({ min: BASE, max: BASE + RANGE - 1 }).map(String);

const listInput: fc.Arbitrary<ListInput> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      project_id: fc.array(
        fc.oneof({ weight: 6, arbitrary: ourProject }, { weight: 1, arbitrary: idText }),
        { minLength: 1, maxLength: 4 },
      ),
      user_id: fc.constant(undefined),
      active: activeText,
      limit: limitText,
      cursor: cursorOrNot,
      extra: extraParams,
      raw: rawSuffix,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      project_id: fc.constant<string[]>([]),
      user_id: fc.oneof(fc.integer({ min: 1, max: 1000 }).map(String), idText),
      active: activeText,
      limit: limitText,
      cursor: cursorOrNot,
      extra: extraParams,
      raw: rawSuffix,
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      project_id: fc.oneof(
        fc.array(idText, { maxLength: 3 }),
        fc.array(idText, { minLength: 99, maxLength: 102 }),
      ),
      user_id: fc.option(idText, { nil: undefined }),
      active: activeText,
      limit: limitText,
      cursor: cursorOrNot,
      extra: extraParams,
      raw: rawSuffix,
    }),
  },
);

function listQueryString(input: ListInput): string {
  const params = new URLSearchParams();
  for (const id of input.project_id) params.append("project_id", id);
  if (input.user_id !== undefined) params.append("user_id", input.user_id);
  if (input.active !== undefined) params.append("active", input.active);
  if (input.limit !== undefined) params.append("limit", input.limit);
  if (input.cursor !== undefined) params.append("cursor", input.cursor);
  for (const [name, value] of input.extra) params.append(name, value);
  return `${params.toString()}${input.raw}`;
}

describe("fuzz the listings' query strings", () => {
  it("GET /exports: 200 with the asked-for jobs, or 400 invalid_request; never a 5xx", async () => {
    let ok = 0;
    await fc.assert(
      fc.asyncProperty(listInput, async (input) => {
        count("GET /exports");
        const query = listQueryString(input);
        const res = await producerFetch(`/exports?${query}`);
        expectNot5xx(res, query);
        tally("GET /exports", res.status);
        // What the route reads, as it reads it: URLSearchParams of the URL.
        const seen = new URL(`https://exports.test/exports?${query}`).searchParams;
        const parsed = listQuery.safeParse({
          project_id: seen.getAll("project_id"),
          user_id: seen.get("user_id") ?? undefined,
          active: seen.get("active") ?? undefined,
          limit: seen.get("limit") ?? undefined,
          cursor: seen.get("cursor") ?? undefined,
        });
        const cursor = seen.get("cursor");
        const valid = parsed.success && (cursor === null || decodeCursor(cursor) !== null);
        // Independent of the schema: the contract's own limits.
        const projects = seen.getAll("project_id");
        if (projects.length > 100 || (projects.length > 0 && seen.has("user_id"))) {
          expect(valid).toBe(false);
        }
        if (!valid) {
          expect(await expectErrorEnvelope(res, 400)).toBe("invalid_request");
          return;
        }
        ok += 1;
        expect(res.status).toBe(200);
        const page = (await res.json()) as { jobs: Job[]; next_cursor: string | null };
        expect(Object.keys(page).sort()).toEqual(["jobs", "next_cursor"]);
        const q = parsed.data;
        expect(page.jobs.length).toBeLessThanOrEqual(q.limit);
        for (const job of page.jobs) {
          if (q.user_id !== undefined) expect(job.user_id).toBe(q.user_id);
          else expect(q.project_id).toContain(job.project_id);
          if (q.active === "true") expect(["pending", "processing"]).toContain(job.status);
        }
        if (page.next_cursor !== null) {
          expect(decodeCursor(page.next_cursor)).not.toBeNull();
          realCursors.push(page.next_cursor);
        }
      }),
      { numRuns: 700 },
    );
    expect(ok).toBeGreaterThan(0);
  });

  it("GET /admin/jobs and GET /dead-letters: 200 or 400 invalid_request; never a 5xx", async () => {
    const adminInput = fc.record({
      route: fc.constantFrom("/admin/jobs", "/dead-letters"),
      project_id: fc.oneof(
        { weight: 2, arbitrary: fc.constant(undefined) },
        { weight: 2, arbitrary: ourProject },
        { weight: 1, arbitrary: idText },
      ),
      status: fc.oneof(
        { weight: 2, arbitrary: fc.constant(undefined) },
        { weight: 2, arbitrary: fc.constantFrom("pending", "processing", "complete", "error") },
        { weight: 1, arbitrary: fc.oneof(fc.constantFrom("active", "", "PENDING"), hostileString) },
      ),
      limit: limitText,
      cursor: cursorOrNot,
      raw: rawSuffix,
    });
    await fc.assert(
      fc.asyncProperty(adminInput, async (input) => {
        count(`GET ${input.route}`);
        const params = new URLSearchParams();
        for (const name of ["project_id", "status", "limit", "cursor"] as const) {
          const value = input[name];
          if (value !== undefined) params.append(name, value);
        }
        const path = `${input.route}?${params.toString()}${input.raw}`;
        const res = await producerFetch(path, { token: ADMIN_TOKEN });
        expectNot5xx(res, path);
        tally(`GET ${input.route}`, res.status);
        if (res.status !== 200) {
          expect(await expectErrorEnvelope(res, 400)).toBe("invalid_request");
          return;
        }
        const body = (await res.json()) as Record<string, unknown>;
        const list = input.route === "/admin/jobs" ? "jobs" : "dead_letters";
        expect(Object.keys(body).sort()).toEqual([list, "next_cursor"].sort());
        expect(Array.isArray(body[list])).toBe(true);
      }),
      { numRuns: 400 },
    );
    await expectOnlyCreatedJobsChanged();
  });
});

// =============================================================================================
// POST /admin/jobs/retry

describe("fuzz POST /admin/jobs/retry", () => {
  it("answers every body with 202 (nothing retryable here) or a 4xx, and changes nothing", async () => {
    // Nothing in this file may be retried: no error job other than the cancelled fixture.
    const retryable = await env.DB.prepare(
      "SELECT COUNT(*) AS n FROM export_jobs WHERE status = 'error' AND error IS NOT 'cancelled'",
    ).first<{ n: number }>();
    expect(retryable?.n).toBe(0);
    const jobIds = fc.oneof(
      fc.constant(fixtures.cancelled.id),
      fc.constant(fixtures.complete.id),
      fc.constant(fixtures.processing.id),
      fc.uuid(),
      hostileString,
    );
    const timestamp = fc.oneof(
      fc.constantFrom(
        "2026-01-01",
        "2026-01-01 00:00",
        "2026-01-01T00:00:00Z",
        "2026-01-01 00:00:00.123",
        "2026-13-45 99:99:99",
        "yesterday",
        "",
        "2026-01-01'; DROP TABLE export_jobs; --",
      ),
      hostileString,
      fc.date({ noInvalidDate: true }).map((date) => date.toISOString()),
    );
    const validish = fc.oneof(
      fc.record({ job_ids: fc.array(jobIds, { maxLength: 4 }) }),
      fc.record({ job_ids: fc.array(fc.uuid(), { minLength: 100, maxLength: 101 }) }),
      fc.record(
        {
          error_prefix: fc.oneof(hostileString, fc.constant("RunPod FAILED"), fc.constant("")),
          created_after: timestamp,
          created_before: timestamp,
          limit: oddNumber,
          extra: anyValue,
        },
        { requiredKeys: [] },
      ),
    );
    const input = fc.record({
      body: fc.oneof(
        { weight: 4, arbitrary: validish.map(toJsonText) },
        { weight: 2, arbitrary: strangeBody },
        {
          weight: 1,
          arbitrary: fc.constantFrom(
            `{"error_prefix":"${"x".repeat(1001)}"}`,
            '{"limit":1000,"created_after":"2000-01-01"}',
            '{"limit":1001,"created_after":"2000-01-01"}',
            `{"job_ids":[],"error_prefix":"x"}`,
            "{}",
          ),
        },
      ),
      contentType: fc.oneof(
        { weight: 9, arbitrary: fc.constant<string | null>("application/json") },
        { weight: 1, arbitrary: fc.constantFrom<string | null>(...CONTENT_TYPES_REFUSED, null) },
      ),
    });
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(input, async ({ body, contentType }) => {
        count("POST /admin/jobs/retry");
        const headers: Record<string, string> = {};
        if (contentType !== null) headers["content-type"] = contentType;
        const res = await producerFetch("/admin/jobs/retry", {
          method: "POST",
          token: ADMIN_TOKEN,
          headers,
          body: new Blob([new TextEncoder().encode(body)]),
        });
        expectNot5xx(res, body);
        tally("POST /admin/jobs/retry", res.status);
        let data: unknown;
        let json = true;
        try {
          data = JSON.parse(body);
        } catch {
          json = false;
        }
        if (!CONTENT_TYPES_ACCEPTED.includes(contentType ?? "")) {
          expect(await expectErrorEnvelope(res, 415)).toBe("unsupported_media_type");
        } else if (!json) {
          expect(await expectErrorEnvelope(res, 400)).toBe("invalid_json");
        } else if (!retryRequest.safeParse(data).success) {
          expect(await expectErrorEnvelope(res, 400)).toBe("invalid_request");
        } else {
          accepted += 1;
          expect(res.status).toBe(202);
          expect(await res.json()).toEqual({ retried: 0, job_ids: [] });
        }
      }),
      { numRuns: 600 },
    );
    expect(accepted).toBeGreaterThan(0);
    await expectOnlyCreatedJobsChanged();
  });
});

// =============================================================================================
// POST /live-tickets and GET /live

const TICKET = /^[0-9a-f]{8}\.[A-Za-z0-9_-]+\.[0-9a-f]{64}$/;

let liveKey: SigningKey;
let otherLiveKey: SigningKey;
beforeAll(async () => {
  liveKey = (await signingKey(env, "live-ticket")) as SigningKey;
  otherLiveKey = (await signingKey(
    { WEBHOOK_SECRET: "not-the-secret" },
    "live-ticket",
  )) as SigningKey;
});

describe("fuzz live tickets", () => {
  it("POST /live-tickets: 201 for 1-100 project ids (or all with the ADMIN_TOKEN), else a 4xx", async () => {
    const projectIds = fc.oneof(
      fc.array(fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }), {
        minLength: 1,
        maxLength: 5,
      }),
      fc.array(oddNumber, { maxLength: 4 }),
      fc.array(fc.integer({ min: 1, max: 1000 }), { minLength: 99, maxLength: 102 }),
      oddNumber,
    );
    const body = fc.oneof(
      { weight: 3, arbitrary: fc.record({ project_ids: projectIds }).map(toJsonText) },
      {
        weight: 1,
        arbitrary: fc
          .record({ all_projects: fc.oneof(fc.constant(true), oddNumber) })
          .map(toJsonText),
      },
      {
        weight: 1,
        arbitrary: fc
          .record(
            { project_ids: projectIds, all_projects: fc.constant(true), extra: anyValue },
            {
              requiredKeys: [],
            },
          )
          .map(toJsonText),
      },
      { weight: 2, arbitrary: strangeBody },
    );
    const input = fc.record({
      body,
      token: fc.constantFrom(API_TOKEN, ADMIN_TOKEN),
      contentType: fc.oneof(
        { weight: 9, arbitrary: fc.constant<string | null>("application/json") },
        { weight: 1, arbitrary: fc.constantFrom<string | null>(...CONTENT_TYPES_REFUSED, null) },
      ),
    });
    let minted = 0;
    await fc.assert(
      fc.asyncProperty(input, async ({ body, token, contentType }) => {
        count("POST /live-tickets");
        const headers: Record<string, string> = {};
        if (contentType !== null) headers["content-type"] = contentType;
        const res = await producerFetch("/live-tickets", {
          method: "POST",
          token,
          headers,
          body: new Blob([new TextEncoder().encode(body)]),
        });
        expectNot5xx(res, body);
        tally("POST /live-tickets", res.status);
        let data: unknown;
        let json = true;
        try {
          data = JSON.parse(body);
        } catch {
          json = false;
        }
        const parsed = json ? liveTicketRequest.safeParse(data) : null;
        if (!CONTENT_TYPES_ACCEPTED.includes(contentType ?? "")) {
          expect(await expectErrorEnvelope(res, 415)).toBe("unsupported_media_type");
        } else if (!json) {
          expect(await expectErrorEnvelope(res, 400)).toBe("invalid_json");
        } else if (!parsed?.success) {
          expect(await expectErrorEnvelope(res, 400)).toBe("invalid_request");
        } else if ("all_projects" in parsed.data && token !== ADMIN_TOKEN) {
          expect(await expectErrorEnvelope(res, 401)).toBe("unauthorized");
        } else {
          minted += 1;
          expect(res.status).toBe(201);
          const answer = (await res.json()) as { ticket: string; expires_at: string };
          expect(answer.ticket).toMatch(TICKET);
          expect(Number.isNaN(Date.parse(answer.expires_at))).toBe(false);
          // The ticket opens GET /live (426 without the upgrade: it was accepted).
          const open = await producerFetch(`/live?ticket=${answer.ticket}`, { token: null });
          expect(open.status).toBe(426);
        }
      }),
      { numRuns: 500 },
    );
    expect(minted).toBeGreaterThan(0);
  });

  it("GET /live: 401 bad_ticket for every ticket it did not mint or that is not valid now", async () => {
    const now = Date.now();
    const goodPayload = {
      v: 1,
      id: crypto.randomUUID(),
      p: [BASE + 5],
      exp: now + 60_000,
    };
    /** Signed payloads, valid or not by construction. */
    const payload = fc.oneof(
      fc.constant({ value: goodPayload, valid: true }),
      fc.constant({ value: { ...goodPayload, p: "all" }, valid: true }),
      fc
        .constantFrom<Record<string, unknown>>(
          { v: 2 },
          { v: "1" },
          { id: "not-a-uuid" },
          { p: [] },
          { p: [0] },
          { p: [1.5] },
          { p: "ALL" },
          { p: Array.from({ length: 101 }, (_, i) => i + 1) },
          { exp: now - 1 },
          { exp: 0 },
          { exp: String(now + 60_000) },
          { exp: now + 60_000.5 },
          { extra: true },
        )
        .map((change) => ({ value: { ...goodPayload, ...change }, valid: false })),
      anyValue.map((value) => ({ value, valid: false })),
    );
    const ticket = fc.oneof(
      {
        weight: 3,
        arbitrary: payload.chain(({ value, valid }) =>
          fc.constant({ text: encodeBase64Url(wellFormed(toJsonText(value))), valid }),
        ),
      },
      {
        weight: 1,
        arbitrary: fc.string({ maxLength: 40 }).map((text) => ({ text, valid: false })),
      },
      {
        weight: 1,
        arbitrary: hostileString.map((text) => ({
          text: encodeBase64Url(wellFormed(text)),
          valid: false,
        })),
      },
    );
    const input = fc.record({
      ticket,
      signing: fc.constantFrom(
        "right",
        "right",
        "right",
        "wrong_secret",
        "random",
        "none",
        "upper",
      ),
      suffix: fc.constantFrom("", "", "", "x", "."),
    });
    await fc.assert(
      fc.asyncProperty(input, async ({ ticket: { text, valid }, signing, suffix }) => {
        count("GET /live");
        const key = signing === "wrong_secret" ? otherLiveKey : liveKey;
        const head = `${key.kid}.${text}`;
        let sig = "";
        if (signing === "right" || signing === "wrong_secret") sig = await signWith(key, head);
        else if (signing === "upper") sig = (await signWith(key, head)).toUpperCase();
        else if (signing === "random") sig = "0123456789abcdef".repeat(4);
        const full = signing === "none" ? head : `${head}.${sig}${suffix}`;
        const res = await producerFetch(`/live?ticket=${percentEncode(full)}`, { token: null });
        expectNot5xx(res, full);
        tally("GET /live", res.status);
        const accepted = valid && signing === "right" && suffix === "";
        if (accepted) {
          expect(await expectErrorEnvelope(res, 426)).toBe("upgrade_required");
        } else {
          expect(await expectErrorEnvelope(res, 401)).toBe("bad_ticket");
        }
      }),
      { numRuns: 400 },
    );
    await expectOnlyCreatedJobsChanged();
  });
});

// =============================================================================================
// Scoped client tokens (as bearers) and signed download URLs

let clientKey: SigningKey;
let otherClientKey: SigningKey;
beforeAll(async () => {
  clientKey = (await signingKey(env, "client-token")) as SigningKey;
  otherClientKey = (await signingKey(
    { WEBHOOK_SECRET: "not-the-secret" },
    "client-token",
  )) as SigningKey;
});

/** Ways to spoil a credential: each leaves it unusable. */
const spoil = fc.oneof(
  fc.nat().map((cut) => (text: string) => text.slice(0, cut % Math.max(1, text.length))),
  fc.constantFrom(
    (text: string) => `${text}x`,
    (text: string) => `${text}.`,
    (text: string) => `x${text}`,
    (text: string) => text.toUpperCase(),
    (text: string) => text.replace(/[0-9a-f](?=[^.]*$)/, (c) => (c === "0" ? "1" : "0")),
    (text: string) => text.split(".").reverse().join("."),
    (text: string) => text.repeat(3),
    (text: string) => `${text}${"a".repeat(70_000)}`,
  ),
);

describe("fuzz client tokens and download URLs", () => {
  it("a bearer that is not a valid, unexpired client token of the project is 401, never 5xx", async () => {
    const projectId = BASE + 7;
    const good = { v: 1, p: [projectId], u: null, exp: Date.now() + 600_000 };
    const payload = fc.oneof(
      { weight: 2, arbitrary: fc.constant({ value: good as unknown, valid: true }) },
      {
        weight: 3,
        arbitrary: fc
          .constantFrom<Record<string, unknown>>(
            { v: 2 },
            { p: [] },
            { p: [0] },
            { p: [1.5] },
            { p: "all" },
            { p: Array.from({ length: 101 }, (_, i) => i + 1) },
            { u: 0 },
            { u: "7" },
            { exp: Date.now() - 1 },
            { exp: 0 },
            { extra: true },
          )
          .map((change) => ({ value: { ...good, ...change } as unknown, valid: false })),
      },
      { weight: 1, arbitrary: anyValue.map((value) => ({ value, valid: false })) },
    );
    const input = fc.record({
      payload,
      signing: fc.constantFrom("right", "right", "wrong_secret", "wrong_kid", "none"),
      spoiled: fc.option(spoil, { freq: 2 }),
      raw: fc.option(fc.oneof(hostileString, fc.string({ maxLength: 300 })), { freq: 6 }),
    });
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(input, async ({ payload: { value, valid }, signing, spoiled, raw }) => {
        count("client token");
        const key = signing === "wrong_secret" ? otherClientKey : clientKey;
        const minted = await mintSigned(key, value);
        let token = minted;
        if (signing === "wrong_kid") token = `${"0".repeat(8)}${token.slice(8)}`;
        if (signing === "none") token = token.slice(0, token.lastIndexOf("."));
        if (spoiled) token = spoiled(token);
        // Printable ASCII: what a header value can carry at all.
        if (raw !== null) token = raw.replace(/[^\x21-\x7e]/g, "");
        const ok = token === minted && valid && signing === "right";
        const res = await producerFetch(`/exports?project_id=${projectId}`, {
          headers: { authorization: `Bearer ${token}` },
          token: null,
        });
        expectNot5xx(res, token.slice(0, 200));
        tally("client token", res.status);
        if (ok) {
          accepted += 1;
          expect(res.status).toBe(200);
        } else {
          expect(await expectErrorEnvelope(res, 401)).toBe("unauthorized");
        }
      }),
      { numRuns: 300 },
    );
    expect(accepted).toBeGreaterThan(0);
  });

  it("a download URL whose expires, kid or sig is not the one minted for this job is 401, never 5xx", async () => {
    const job = fixtures.complete;
    const minted = await producerFetch(`/exports/${job.id}/download-url`, { method: "POST" });
    expect(minted.status).toBe(200);
    const { url } = (await minted.json()) as { url: string };
    const right = new URL(url).searchParams;
    const field = (name: "expires" | "kid" | "sig") =>
      fc.oneof(
        { weight: 4, arbitrary: fc.constant<string | null>(right.get(name)) },
        { weight: 1, arbitrary: fc.constant<string | null>(null) },
        {
          weight: 1,
          arbitrary: spoil.map((spoiled) => spoiled(right.get(name) ?? "")),
        },
        { weight: 1, arbitrary: fc.oneof(hostileString, fc.string({ maxLength: 80 })) },
        {
          weight: 1,
          arbitrary: fc.constantFrom(
            "0",
            "-1",
            "1e3",
            String(Math.floor(Date.now() / 1000) - 1),
            "99999999999999999999",
          ),
        },
      );
    const input = fc.record({
      expires: field("expires"),
      kid: field("kid"),
      sig: field("sig"),
      otherJob: fc.boolean(),
    });
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(input, async ({ expires, kid, sig, otherJob }) => {
        count("download URL");
        const query = new URLSearchParams();
        if (expires !== null) query.set("expires", expires);
        if (kid !== null) query.set("kid", kid);
        // No `sig` at all is a bearer request (401 without one): the same answer.
        if (sig !== null) query.set("sig", sig);
        const id = otherJob ? fixtures.cancelled.id : job.id;
        const res = await producerFetch(`/exports/${id}/output?${query}`, { token: null });
        expectNot5xx(res, { expires, kid, sig });
        tally("download URL", res.status);
        const ok =
          !otherJob &&
          expires === right.get("expires") &&
          kid === right.get("kid") &&
          sig === right.get("sig");
        if (ok) {
          accepted += 1;
          // Signed and good: the route's own answer (the fixture's output is not in R2).
          expect(await expectErrorEnvelope(res, 404)).toBe("output_missing");
        } else {
          expect(res.status).toBe(401);
          expect(["bad_signature", "unauthorized"]).toContain(await expectErrorEnvelope(res, 401));
        }
      }),
      { numRuns: 300 },
    );
    expect(accepted).toBeGreaterThan(0);
  });
});

// =============================================================================================
// RunPod's signed callbacks

interface CallbackInput {
  id: string;
  attempt: string | undefined;
  signing: "right" | "other_kind" | "other_job" | "other_attempt" | "random" | "arbitrary" | "none";
  arbitrarySig: string;
  body: string;
  contentType: string | null;
}

function callbackInput(kind: SignedUrlKind): fc.Arbitrary<CallbackInput> {
  const strictStatusBody = fc
    .record(
      {
        id: fc.constantFrom("run-fuzz", "run-done", "run-other"),
        status: fc.constantFrom(
          "IN_QUEUE",
          "IN_PROGRESS",
          "COMPLETED",
          "FAILED",
          "CANCELLED",
          "TIMED_OUT",
        ),
        output: fc.oneof(
          fc.record({ progress: fc.integer({ min: 0, max: 100 }) }),
          fc.record({ output_video_key: fc.constantFrom("exports/x/y.mp4", "../x", KEY) }),
          fc.jsonValue({ maxDepth: 2 }),
        ),
        error: fc.oneof(fc.string(), fc.jsonValue({ maxDepth: 1 })),
        delayTime: fc.integer({ min: 0, max: 10_000 }),
        executionTime: fc.integer({ min: 0, max: 10_000 }),
      },
      { requiredKeys: ["id", "status"] },
    )
    .map(toJsonText);
  const statusBody = fc
    .record(
      {
        id: fc.oneof(fc.constantFrom("run-fuzz", "run-done", ""), hostileString),
        status: fc.oneof(
          fc.constantFrom(
            "IN_QUEUE",
            "IN_PROGRESS",
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMED_OUT",
          ),
          hostileString,
        ),
        output: fc.oneof(
          anyValue,
          fc.record({ progress: oddNumber }),
          fc.record({ output_video_key: hostileString }),
        ),
        error: anyValue,
        delayTime: oddNumber,
        executionTime: oddNumber,
      },
      { requiredKeys: [] },
    )
    .map(toJsonText);
  const progressBody = fc
    .oneof(
      fc.record({ progress: fc.oneof(fc.double({ min: 0, max: 100 }), oddNumber) }),
      fc.record({ progress: fc.integer({ min: 0, max: 100 }), extra: anyValue }),
    )
    .map(toJsonText);
  return fc.record({
    id: fc.oneof(
      {
        weight: 3,
        arbitrary: fc.constantFrom(
          fixtures.processing.id,
          fixtures.complete.id,
          fixtures.cancelled.id,
        ),
      },
      { weight: 2, arbitrary: fc.uuid() },
      { weight: 3, arbitrary: hostileString },
    ),
    attempt: fc.oneof(
      { weight: 4, arbitrary: fc.integer({ min: 0, max: 12 }).map(String) },
      {
        weight: 2,
        arbitrary: fc.constantFrom(
          "",
          "-1",
          "1.5",
          "1e3",
          "0x1",
          "01",
          " 1",
          "NaN",
          "1000000",
          "1000001",
          "99999999999999999999",
        ),
      },
      { weight: 1, arbitrary: hostileString },
      { weight: 1, arbitrary: fc.constant(undefined) },
    ),
    signing: fc.constantFrom(
      "right",
      "right",
      "right",
      "other_kind",
      "other_job",
      "other_attempt",
      "random",
      "arbitrary",
      "none",
    ),
    arbitrarySig: hostileString,
    body: fc.oneof(
      { weight: 2, arbitrary: kind === "webhook" ? strictStatusBody : progressBody },
      { weight: 2, arbitrary: kind === "webhook" ? statusBody : progressBody },
      { weight: 1, arbitrary: kind === "webhook" ? progressBody : statusBody },
      { weight: 2, arbitrary: strangeBody },
    ),
    contentType: fc.constantFrom<string | null>(
      "application/json",
      "application/json",
      "text/plain",
      null,
    ),
  });
}

/** The attempt the route reads from `?attempt=`, or null when it is not one. */
function attemptOf(text: string | undefined): number | null {
  if (text === undefined) return null;
  const n = Number(text);
  return Number.isInteger(n) && n >= 0 && n <= 1_000_000 ? n : null;
}

async function tryCallback(kind: SignedUrlKind, input: CallbackInput): Promise<void> {
  count(`POST /runpod/${kind}/{id}`);
  const other: SignedUrlKind = kind === "webhook" ? "progress" : "webhook";
  const serverId = wellFormed(input.id);
  const attempt = attemptOf(input.attempt);
  const signedAttempt = attempt ?? 1;
  let sig: string | undefined;
  switch (input.signing) {
    case "right":
      sig = await signAttempt(SECRET, kind, serverId, signedAttempt);
      break;
    case "other_kind":
      sig = await signAttempt(SECRET, other, serverId, signedAttempt);
      break;
    case "other_job":
      sig = await signAttempt(SECRET, kind, `${serverId}x`, signedAttempt);
      break;
    case "other_attempt":
      sig = await signAttempt(SECRET, kind, serverId, signedAttempt + 1);
      break;
    case "random":
      sig = "ab".repeat(32);
      break;
    case "arbitrary":
      sig = input.arbitrarySig;
      break;
    case "none":
      sig = undefined;
  }
  const query = [
    input.attempt === undefined ? null : `attempt=${percentEncode(input.attempt)}`,
    sig === undefined ? null : `sig=${percentEncode(sig)}`,
  ]
    .filter((part) => part !== null)
    .join("&");
  const path = `/runpod/${kind}/${percentEncode(input.id)}?${query}`;
  const headers: Record<string, string> = {};
  if (input.contentType !== null) headers["content-type"] = input.contentType;
  const res = await producerFetch(path, {
    method: "POST",
    token: null,
    headers,
    body: new Blob([new TextEncoder().encode(input.body)]),
  });
  expectNot5xx(res, { path, body: input.body });
  tally(`POST /runpod/${kind}/{id}`, res.status);
  // "", "." and ".." are no path segment of an id: no such route.
  if (["", ".", ".."].includes(input.id)) {
    expect(await expectErrorEnvelope(res, 404)).toBe("not_found");
    return;
  }
  const verified = input.signing === "right" && attempt !== null;
  if (!verified) {
    expect(await expectErrorEnvelope(res, 401)).toBe("bad_signature");
    return;
  }
  let data: unknown;
  try {
    data = JSON.parse(input.body);
  } catch {
    expect(await expectErrorEnvelope(res, 400)).toBe("invalid_json");
    return;
  }
  const schema = kind === "webhook" ? runpodStatusObject : progressReport;
  if (!schema.safeParse(data).success) {
    expect(await expectErrorEnvelope(res, 400)).toBe("invalid_request");
    return;
  }
  if (kind === "progress") {
    // Another attempt of a known job: 409 stale_attempt (its run should stop); the current
    // attempt of a finished job, or an unknown job: 204, nothing changes.
    const job = [fixtures.processing, fixtures.complete, fixtures.cancelled].find(
      (known) => known.id === serverId,
    );
    if (job && attempt !== job.attempt) {
      expect(await expectErrorEnvelope(res, 409)).toBe("stale_attempt");
    } else {
      expect(res.status).toBe(204);
    }
    return;
  }
  expect(res.status).toBe(200);
  const known = [fixtures.processing, fixtures.complete, fixtures.cancelled].some(
    (job) => job.id === serverId,
  );
  expect(await res.json()).toEqual({
    applied: false,
    outcome: known ? "unchanged" : "unknown_job",
  });
}

describe("fuzz RunPod's callbacks", () => {
  // The processing fixture's own attempt is the one input that may legitimately change it; every
  // other (id, attempt) is stale, finished or unknown and must change nothing.
  // A forged signature or a bad body for that attempt must change nothing all the same.
  const notCurrent = (kind: SignedUrlKind) => (input: CallbackInput) => {
    if (wellFormed(input.id) !== fixtures.processing.id || attemptOf(input.attempt) !== ATTEMPT) {
      return true;
    }
    if (input.signing !== "right") return true;
    let data: unknown;
    try {
      data = JSON.parse(input.body);
    } catch {
      return true;
    }
    return !(kind === "webhook" ? runpodStatusObject : progressReport).safeParse(data).success;
  };

  it("POST /runpod/webhook/{id}: 401 unless signed for this job, attempt and kind; stale news changes nothing", async () => {
    await fc.assert(
      fc.asyncProperty(callbackInput("webhook").filter(notCurrent("webhook")), (input) =>
        tryCallback("webhook", input),
      ),
      { numRuns: 700 },
    );
    await expectOnlyCreatedJobsChanged();
  });

  it("POST /runpod/progress/{id}: 401 unless signed for this job, attempt and kind; stale news changes nothing", async () => {
    await fc.assert(
      fc.asyncProperty(callbackInput("progress").filter(notCurrent("progress")), (input) =>
        tryCallback("progress", input),
      ),
      { numRuns: 600 },
    );
    await expectOnlyCreatedJobsChanged();
  });

  it("refuses a signed callback over 256 KiB with 413 before parsing it", async () => {
    const input = fc.record({
      kind: fc.constantFrom<SignedUrlKind>("webhook", "progress"),
      size: fc.integer({ min: MAX_BODY_BYTES + 1, max: MAX_BODY_BYTES + 4 * KiB }),
      json: fc.boolean(),
    });
    await fc.assert(
      fc.asyncProperty(input, async ({ kind, size, json }) => {
        count(`POST /runpod/${kind}/{id} (over 256 KiB)`);
        const id = crypto.randomUUID();
        const sig = await signAttempt(SECRET, kind, id, 1);
        const skeleton = toJsonText({ id: "r", status: "IN_PROGRESS", pad: "" });
        const body = json
          ? skeleton.replace('"pad":""', `"pad":"${"x".repeat(size - skeleton.length)}"`)
          : `{${"x".repeat(size - 1)}`;
        const res = await postJson(`/runpod/${kind}/${id}?attempt=1&sig=${sig}`, body, {
          token: null,
        });
        tally(`POST /runpod/${kind}/{id} (over 256 KiB)`, res.status);
        expect(await expectErrorEnvelope(res, 413)).toBe("payload_too_large");
      }),
      { numRuns: 20 },
    );
  });
});

// =============================================================================================
// Queue message bodies through the consumer's queue() handler

describe("fuzz the routes' path ids and the output's headers", () => {
  const ROUTES: [string, string][] = [
    ["GET", "/exports/{id}"],
    ["POST", "/exports/{id}/cancel"],
    ["GET", "/exports/{id}/events"],
    ["GET", "/exports/{id}/output"],
    ["GET", "/dead-letters/{id}"],
    ["POST", "/dead-letters/{id}/replay"],
    ["DELETE", "/dead-letters/{id}"],
  ];

  it("answers unknown ids 404 not_found, known ones as the contract says; never a 5xx", async () => {
    const input = fc.record({
      route: fc.constantFrom(...ROUTES),
      id: fc.oneof(
        {
          weight: 1,
          arbitrary: fc.constantFrom(
            fixtures.complete.id,
            fixtures.cancelled.id,
            fixtures.processing.id,
          ),
        },
        { weight: 1, arbitrary: fc.uuid() },
        { weight: 4, arbitrary: hostileString },
      ),
    });
    await fc.assert(
      fc.asyncProperty(input, async ({ route: [method, template], id }) => {
        // Cancelling the processing fixture would be a legitimate change: not this test's.
        if (template.endsWith("/cancel") && id === fixtures.processing.id) return;
        const route = `${method} ${template}`;
        count(route);
        const path = template.replace("{id}", percentEncode(id));
        const token = template.startsWith("/dead-letters") ? ADMIN_TOKEN : API_TOKEN;
        const res = await producerFetch(path, { method, token });
        expectNot5xx(res, { route, id });
        tally(route, res.status);
        if (["", ".", ".."].includes(id)) {
          // No id segment (".", ".." are resolved away by the URL): no such route, or no job.
          expect(await expectErrorEnvelope(res, 404)).toBe("not_found");
          return;
        }
        const fixture = [fixtures.complete, fixtures.cancelled, fixtures.processing].find(
          (job) => job.id === wellFormed(id),
        );
        if (!fixture || template.startsWith("/dead-letters")) {
          expect(await expectErrorEnvelope(res, 404)).toBe("not_found");
          return;
        }
        if (template === "/exports/{id}" || template === "/exports/{id}/events") {
          expect(res.status).toBe(200);
        } else if (template === "/exports/{id}/cancel") {
          expect(await expectErrorEnvelope(res, 409)).toBe("already_finished");
        } else if (fixture === fixtures.complete) {
          expect(await expectErrorEnvelope(res, 404)).toBe("output_missing");
        } else {
          expect(await expectErrorEnvelope(res, 409)).toBe("not_complete");
        }
      }),
      { numRuns: 500 },
    );
    await expectOnlyCreatedJobsChanged();
  });

  it("GET /exports/{id}/output: any Range and If-None-Match gets 200, 206, 304 or 416; never a 5xx", async () => {
    // Complete jobs with outputs of 0, 1, 10 and 1000 bytes (rows outside this file's fixtures
    // are removed again at the end, so the file's invariant still holds).
    const outputs: { id: string; bytes: Uint8Array }[] = [];
    for (const size of [0, 1, 10, 1000]) {
      const job = await insertPendingJob(BASE + 30 + size);
      const bytes = Uint8Array.from({ length: size }, (_, i) => i % 251);
      const key = `exports/${job.project_id}/${job.id}.mp4`;
      await env.VIDEOS.put(key, bytes);
      await env.DB.prepare(
        "UPDATE export_jobs SET status = 'complete', progress = 100, output_video_key = ? WHERE id = ?",
      )
        .bind(key, job.id)
        .run();
      outputs.push({ id: job.id, bytes });
    }
    try {
      const number = fc.oneof(
        fc.nat({ max: 1100 }).map(String),
        fc.constantFrom("", "0", "00", "9".repeat(25), "9".repeat(400), "-0"),
      );
      const range = fc.oneof(
        fc.tuple(number, number).map(([a, b]) => `bytes=${a}-${b}`),
        fc.tuple(number, number, number).map(([a, b, c]) => `bytes=${a}-${b},${c}-`),
        fc.constantFrom(
          "bytes=-0",
          "bytes=-",
          "bytes=0-0",
          "bytes= 1-2",
          "items=0-1",
          "bytes=1-0",
          "",
        ),
        hostileString,
      );
      const input = fc.record({
        output: fc.constantFrom(...outputs.keys()),
        range: fc.option(range, { nil: undefined }),
        ifNoneMatch: fc.option(
          fc.oneof(
            fc.constantFrom("*", "W/*", '""', "etag", "W/etag"),
            hostileString.map((t) => t.replace(/[^\x20-\x7e]/g, "")),
          ),
          { nil: undefined },
        ),
      });
      await fc.assert(
        fc.asyncProperty(input, async ({ output, range, ifNoneMatch }) => {
          const { id, bytes } = outputs[output] as (typeof outputs)[number];
          // A suffix range of an empty output is the 500 of the regression test below.
          if (bytes.length === 0 && /^\s*bytes=-\d*[1-9]/.test(range ?? "")) return;
          count("GET /exports/{id}/output (headers)");
          const head = await env.VIDEOS.head(
            `exports/${(await readJob(id))?.project_id}/${id}.mp4`,
          );
          const etag = head?.httpEtag ?? "";
          const headers: Record<string, string> = {};
          if (range !== undefined) headers.range = range.replace(/[^\x20-\x7e]/g, "");
          if (ifNoneMatch !== undefined) {
            headers["if-none-match"] =
              ifNoneMatch === "etag" ? etag : ifNoneMatch === "W/etag" ? `W/${etag}` : ifNoneMatch;
          }
          const res = await producerFetch(`/exports/${id}/output`, { headers });
          expectNot5xx(res, { size: bytes.length, headers });
          tally("GET /exports/{id}/output (headers)", res.status);
          expect([200, 206, 304, 416]).toContain(res.status);
          if (res.status === 416) {
            expect(await expectErrorEnvelope(res)).toBe("range_not_satisfiable");
            expect(res.headers.get("content-range")).toBe(`bytes */${bytes.length}`);
            return;
          }
          const body = new Uint8Array(await res.arrayBuffer());
          if (res.status === 304) {
            expect(body.length).toBe(0);
            return;
          }
          if (res.status === 200) {
            expect(body).toEqual(bytes);
            return;
          }
          const match = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(res.headers.get("content-range") ?? "");
          expect(match).not.toBeNull();
          const [, first, last, total] = (match as RegExpExecArray).map(Number) as number[];
          expect(total).toBe(bytes.length);
          expect(body).toEqual(bytes.slice(first, (last as number) + 1));
          expect(res.headers.get("content-length")).toBe(String(body.length));
        }),
        { numRuns: 400 },
      );
    } finally {
      const ids = outputs.map((o) => o.id);
      await env.DB.prepare(
        "DELETE FROM export_job_events WHERE job_id IN (SELECT value FROM json_each(?))",
      )
        .bind(JSON.stringify(ids))
        .run();
      await env.DB.prepare("DELETE FROM export_jobs WHERE id IN (SELECT value FROM json_each(?))")
        .bind(JSON.stringify(ids))
        .run();
    }
  });
});

describe("fuzz queue message bodies", () => {
  let messageCounter = 0;

  const queueBody = () =>
    fc.oneof(
      {
        weight: 4,
        arbitrary: fc.anything({
          maxDepth: 3,
          maxKeys: 4,
          withBigInt: true,
          withBoxedValues: true,
          withDate: true,
          withMap: true,
          withSet: true,
          withNullPrototype: true,
          withObjectString: true,
          withSparseArray: true,
          withTypedArray: true,
          values: [hostileString, fc.double(), fc.integer(), fc.boolean(), fc.constant(null)],
        }),
      },
      { weight: 1, arbitrary: hostileString },
      // Bodies JSON cannot show, whose String() works (see the regression test below for those
      // whose String() throws).
      {
        weight: 1,
        arbitrary: fc.constantFrom<unknown>([1n], 2n, { big: 3n }, { nested: [{ big: 4n }] }),
      },
      {
        weight: 2,
        arbitrary: fc.oneof(
          fc.record({ job_id: fc.oneof(fc.uuid(), hostileString, oddNumber) }),
          fc.record({ job_id: fc.uuid(), extra: anyValue }),
          fc.record({ JOB_ID: fc.uuid() }),
          fc.uuid().map((id) => [{ job_id: id }]),
          fc.uuid().map((id) => JSON.stringify({ job_id: id })),
          fc.uuid().map((id) => id),
          fc.uuid().map((id) => ({ job_id: id.toUpperCase() })),
          fc.uuid().map((id) => ({ job_id: ` ${id}` })),
        ),
      },
      {
        weight: 1,
        arbitrary: fc
          .constantFrom(fixtures.processing.id, fixtures.complete.id, fixtures.cancelled.id)
          .map((id) => ({ job_id: id })),
      },
    );

  /** What the handler records as a dead letter's body (consumer/dead-letters.ts, as documented). */
  function recordedText(body: unknown): string | null {
    try {
      return typeof body === "string"
        ? JSON.stringify(body)
        : (JSON.stringify(body) ?? String(body));
    } catch {
      return null;
    }
  }

  for (const queue of ["export-jobs", "export-jobs-dlq"] as const) {
    it(`${queue}: every body is acked, never throws; unparseable ones are dead letters; no job changes`, async () => {
      const testEnv = { ...env, RUNPOD_ENDPOINT_ID: uniqueEndpoint("fuzz") };
      const batchInput = fc.array(
        fc.record({ body: queueBody(), attempts: fc.integer({ min: 1, max: 100 }) }),
        { minLength: 1, maxLength: 8 },
      );
      await fc.assert(
        fc.asyncProperty(batchInput, async (entries) => {
          const messages = entries.map(({ body, attempts }) => {
            messageCounter += 1;
            count(`queue ${queue}`);
            return {
              id: `fuzz-${queue}-${messageCounter}-${crypto.randomUUID()}`,
              timestamp: new Date(),
              attempts,
              body,
            };
          });
          const result = await deliver(messages, { queue, env: testEnv });
          expect(result.retryBatch.retry).toBe(false);
          expect(result.retryMessages).toEqual([]);
          if (!result.ackAll) {
            expect([...result.explicitAcks].sort()).toEqual(messages.map((m) => m.id).sort());
          }
          const { results: letters } = await env.DB.prepare(
            "SELECT * FROM dead_letters WHERE id IN (SELECT value FROM json_each(?))",
          )
            .bind(JSON.stringify(messages.map((m) => m.id)))
            .all<{
              id: string;
              queue: string;
              reason: string;
              body: string;
              attempts: number;
              job_id: string | null;
            }>();
          for (const message of messages) {
            const parsed = jobMessage.safeParse(message.body);
            const letter = letters.find((row) => row.id === message.id);
            tally(`queue ${queue}`, letter ? `dead letter ${letter.reason}` : "job message");
            if (queue === "export-jobs" && parsed.success) {
              expect(letter).toBeUndefined();
              continue;
            }
            expect(letter).toMatchObject({
              queue,
              reason: queue === "export-jobs" ? "unparseable" : "dead_lettered",
              attempts: message.attempts,
              job_id: parsed.success ? parsed.data.job_id : null,
            });
            const text = recordedText(message.body);
            if (text !== null) expect(letter?.body).toBe(text);
          }
        }),
        { numRuns: 200 },
      );
      await expectOnlyCreatedJobsChanged();
    });
  }
});

// =============================================================================================
// Bugs the fuzzing found, each as its smallest reproducer. These assert the contract and fail
// until the source is fixed.

/** Polls `check` for up to two seconds. */
async function within2s(check: () => boolean): Promise<boolean> {
  for (let i = 0; i < 80 && !check(); i++) await new Promise((r) => setTimeout(r, 25));
  return check();
}

describe("found by fuzzing", () => {
  const deepParams = (depth: number) =>
    toJsonText({
      ...overlayRequest(BASE + 20, KEY),
      params: { ...overlayRequest(0, KEY).params, pad: "@@" },
    }).replace('"@@"', `${"[".repeat(depth)}${"]".repeat(depth)}`);

  it("POST /exports with params nested deeper than MAX_PARAMS_DEPTH answers 400, not 500, and writes nothing", async () => {
    // It used to overflow the stack in canonicalJson (the Idempotency-Key's request hash): 500.
    const before = await env.DB.prepare("SELECT COUNT(*) AS n FROM export_jobs").first<{
      n: number;
    }>();
    for (const idempotency of [true, false]) {
      const res = await postJson("/exports", deepParams(5000), {
        headers: idempotency ? { "idempotency-key": `deep-${crypto.randomUUID()}` } : {},
      });
      expect(res.status).toBe(400);
      const body = (await res.json()) as { error: { code: string; issues: { path: unknown[] }[] } };
      expect(body.error.code).toBe("invalid_request");
      expect(body.error.issues[0]?.path).toEqual(["params"]);
    }
    const after = await env.DB.prepare("SELECT COUNT(*) AS n FROM export_jobs").first<{
      n: number;
    }>();
    expect(after?.n).toBe(before?.n);
  });

  it("a job with params as deep as allowed is created and published to live clients like any other", async () => {
    // A 5000-deep job used to be accepted and then never published (the RPC to the LiveHub could
    // not serialize it); now the schema bounds the depth, and the deepest allowed job goes through.
    const res = await postJson("/exports", deepParams(MAX_PARAMS_DEPTH - 2), {
      headers: { "idempotency-key": `deep-ok-${crypto.randomUUID()}` },
    });
    expect(res.status).toBe(202);
    const { job } = (await res.json()) as { job: Job };
    expect(await within2s(() => operators.jobs.some((seen) => seen.id === job.id))).toBe(true);
    const tooDeep = await postJson("/exports", deepParams(MAX_PARAMS_DEPTH));
    expect(tooDeep.status).toBe(400);
  });

  it("GET /exports/{id}/output of an empty output with a suffix Range answers 416, not 500", async () => {
    // parseRange turns "bytes=-1" on 0 bytes into {offset: 0, length: 0}, which R2's get refuses.
    const job = await insertPendingJob(BASE + 40);
    const key = `exports/${job.project_id}/${job.id}.mp4`;
    await env.VIDEOS.put(key, new Uint8Array(0));
    await env.DB.prepare(
      "UPDATE export_jobs SET status = 'complete', progress = 100, output_video_key = ? WHERE id = ?",
    )
      .bind(key, job.id)
      .run();
    const whole = await producerFetch(`/exports/${job.id}/output`);
    expect(whole.status).toBe(200);
    const res = await producerFetch(`/exports/${job.id}/output`, {
      headers: { range: "bytes=-1" },
    });
    expect(res.status).toBe(416);
  });

  for (const queue of ["export-jobs", "export-jobs-dlq"] as const) {
    it(`${queue}: a body whose String() throws is recorded as a dead letter and acked, with its batch`, async () => {
      // {toString: 0, big: 1n} survives a queue's structured clone; JSON.stringify throws (BigInt)
      // and String() throws (no callable toString), so bodyAsText throws, the whole batch's
      // dead letters are not recorded and queue() retries the batch: every delivery, then the DLQ,
      // where the same happens again.
      const poison = {
        id: `poison-${crypto.randomUUID()}`,
        timestamp: new Date(),
        attempts: 1,
        body: { toString: 0, big: 1n },
      };
      const plain = {
        id: `plain-${crypto.randomUUID()}`,
        timestamp: new Date(),
        attempts: 1,
        body: "not a job message",
      };
      const result = await deliver([poison, plain], {
        queue,
        env: { ...env, RUNPOD_ENDPOINT_ID: uniqueEndpoint("poison") },
      });
      expect(result.retryBatch.retry).toBe(false);
      expect([...result.explicitAcks].sort()).toEqual([poison.id, plain.id].sort());
      const { results } = await env.DB.prepare("SELECT id FROM dead_letters WHERE id IN (?, ?)")
        .bind(poison.id, plain.id)
        .all<{ id: string }>();
      expect(results.map((row) => row.id).sort()).toEqual([poison.id, plain.id].sort());
    });
  }
});
