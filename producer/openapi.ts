// The producer's OpenAPI 3.1 document, generated from the zod schemas the routes validate with.
// Each route is one entry of ROUTES; the builder derives what its auth, query and body imply
// (parameters, 400/401/413/415/500 answers) and adds the route's own answers. Response bodies have
// doc-only zod schemas whose types tsc checks against the code's (Job, Stats, ...).

import { z } from "zod";
import type { DispatchStatus } from "../shared/dispatcher.ts";
import type { RunOutcome } from "../shared/job-state.ts";
import type { LiveMessage } from "../shared/live-publisher.ts";
import { liveTicketRequest } from "../shared/live-ticket.ts";
import {
  createExportRequest,
  JOB_TYPES,
  progressReport,
  r2Key,
  runpodStatusObject,
} from "../shared/schemas.ts";
import type { DeadLetterRow } from "../shared/sql/dead-letters.ts";
import type { Job } from "../shared/sql/jobs/row.ts";
import type { StatsWithArchive } from "../shared/sql/stats.ts";
import { MAX_BODY_BYTES } from "./http.ts";
import { adminQuery } from "./routes/admin-jobs.ts";
import { pageQuery } from "./routes/dead-letters.ts";
import { listQuery } from "./routes/list-exports.ts";
import { retryRequest } from "./routes/retry-jobs.ts";
import { attemptParam } from "./routes/runpod-callbacks.ts";

type JsonSchema = z.core.JSONSchema.BaseSchema;

// ---------------------------------------------------------------------------------------------
// Response schemas (doc-only). `exactly<T>()(schema)` compiles only while the schema's output
// type and T are assignable both ways, so a column added to the code breaks the build, not the doc.
// ---------------------------------------------------------------------------------------------

type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const exactly =
  <T>() =>
  <S extends z.ZodType>(
    schema: S,
    ..._mismatch: Same<z.output<S>, T> extends true ? [] : [never]
  ) =>
    schema;

const stamp = (what: string) => `${what}: UTC text "YYYY-MM-DD HH:MM:SS.SSS"`;
const jobStatus = z.enum(["pending", "processing", "complete", "error"]);

const job = exactly<Job>()(
  z
    .object({
      id: z.string().describe("UUID"),
      project_id: z.number().int(),
      type: z.enum(JOB_TYPES),
      status: jobStatus,
      progress: z.number().int().min(0).max(100),
      input_video_key: z.string(),
      output_video_key: z.string().nullable().describe("set when the job is complete"),
      params: z.record(z.string(), z.unknown()).describe("the request's params, as sent"),
      error: z.string().nullable().describe("the last failure, or 'cancelled'"),
      retry_count: z.number().int().min(0).describe("failed attempts so far"),
      runpod_job_id: z.string().nullable(),
      created_at: z.string().describe(stamp("created")),
      started_at: z.string().nullable().describe(stamp("last claimed")),
      completed_at: z.string().nullable().describe(stamp("completed")),
      due_at: z.string().nullable().describe(stamp("next attention (retry, claim deadline, poll)")),
      idempotency_key: z.string().nullable(),
      user_id: z
        .number()
        .int()
        .nullable()
        .describe("the project's owner, when the request named one"),
      attempt: z
        .number()
        .int()
        .min(0)
        .describe("raised by every claim; webhooks of any other attempt change nothing"),
      version: z
        .number()
        .int()
        .min(1)
        .describe("raised by every change of the job: keep the highest one you have seen"),
      archived: z
        .literal(true)
        .optional()
        .describe(
          "present when the job finished more than ARCHIVE_AFTER_S ago and is answered from its " +
            "archive in R2; such a job is no longer listed",
        ),
    })
    .describe("An export job: the export_jobs row with params parsed back to an object."),
);

const deadLetter = exactly<Omit<DeadLetterRow, "body"> & { body: unknown }>()(
  z
    .object({
      id: z.string().describe("the queue message id"),
      queue: z.string(),
      reason: z.enum(["dead_lettered", "unparseable"]),
      body: z.unknown().describe("the message body, parsed when it is JSON, else the raw text"),
      attempts: z.number().int(),
      received_at: z.string().describe(stamp("recorded")),
      job_id: z.string().nullable(),
      job_status: jobStatus.nullable().describe("the job's status when it was dead-lettered"),
      replayed_at: z.string().nullable().describe(stamp("replayed")),
    })
    .describe("A message the consumer gave up on."),
);

const issue = z.object({
  path: z.array(z.union([z.string(), z.number()])),
  message: z.string(),
  code: z.string().optional(),
});
const apiErrorBody = z
  .object({
    error: z.object({ code: z.string(), message: z.string(), issues: z.array(issue).optional() }),
  })
  .describe(
    "Every error answer. `code` is stable snake_case; `issues` lists what failed validation.",
  );

const stats = exactly<StatsWithArchive>()(
  z.object({
    jobs: z.object({
      pending: z.number().int(),
      processing: z.number().int(),
      complete: z.number().int(),
      error: z.number().int(),
    }),
    oldest_pending_created_at: z.string().nullable(),
    oldest_pending_age_s: z.number().int().nullable(),
    processing_without_run: z.number().int(),
    dead_letters: z.object({ total: z.number().int(), not_replayed: z.number().int() }),
    archived: z.number().int().describe("jobs archived to R2 and deleted from D1 so far"),
  }),
);

const dispatch = exactly<DispatchStatus>()(
  z
    .object({
      state: z.enum(["running", "paused", "probing"]),
      reason: z.string().nullable().describe("why dispatch paused"),
      since: z.string().describe("ISO 8601: when this state began"),
      runs_last_10s: z.number().int().describe("submissions let through in the last 10 s"),
      in_flight: z.number().int().describe("runs submitted and not finished"),
      max_in_flight: z.number().int().describe("RUNPOD_MAX_IN_FLIGHT"),
      waiting: z.number().int().describe("jobs waiting in the dispatcher for a slot"),
      waiting_keys: z
        .number()
        .int()
        .describe("fairness keys (users, else projects) with jobs waiting"),
    })
    .describe("The dispatch gate of this RunPod endpoint; null when it could not be reached."),
);

const webhookOutcome = exactly<RunOutcome | "unknown_job">()(
  z.enum(["completed", "retrying", "failed", "cancelled", "progress", "unchanged", "unknown_job"]),
);

const liveMessage = exactly<LiveMessage>()(
  z
    .discriminatedUnion("type", [
      z.object({
        type: z.literal("snapshot"),
        jobs: z
          .array(job)
          .describe("the active jobs of the ticket's projects and their 20 newest finished"),
      }),
      z.object({ type: z.literal("job"), job }),
    ])
    .describe(
      "A text frame of GET /live: one snapshot on connect, then one `job` per change, the job " +
        "as GET /exports/{id} answers it. Keep the highest `version` per job. Send `ping` to " +
        "get `pong`.",
    ),
);

const nextCursor = z
  .string()
  .nullable()
  .describe("pass as `cursor` for the next page; null on the last");

/** components.schemas; the keys are the ids the routes below refer to. */
const SCHEMAS = {
  CreateExportRequest: createExportRequest,
  RunpodStatus: runpodStatusObject,
  ProgressReport: progressReport,
  Error: apiErrorBody,
  Job: job,
  JobEnvelope: z.object({ job }),
  JobPage: z.object({ jobs: z.array(job), next_cursor: nextCursor }),
  DeadLetter: deadLetter,
  DeadLetterPage: z.object({ dead_letters: z.array(deadLetter), next_cursor: nextCursor }),
  DeadLetterDetail: z.object({ dead_letter: deadLetter, job: job.nullable() }),
  DeadLetterReplay: z.object({ dead_letter: deadLetter, job }),
  Stats: stats.extend({ dispatch: dispatch.nullable() }),
  RetryRequest: retryRequest,
  EventList: z.object({
    events: z.array(
      z.object({
        at: z.string().describe(stamp("happened")),
        attempt: z.number().int(),
        type: z.enum([
          "created",
          "claimed",
          "submitted",
          "submit_failed",
          "released",
          "progress",
          "completed",
          "failed",
          "cancelled",
          "dead_lettered",
          "replayed",
          "retried",
          "expired",
        ]),
        runpod_job_id: z.string().optional(),
        detail: z.string().optional().describe("why it failed; the progress reached; …"),
      }),
    ),
  }),
  RetryResult: z.object({ retried: z.number().int(), job_ids: z.array(z.string()) }),
  LiveTicketRequest: liveTicketRequest,
  LiveTicket: z.object({
    ticket: z.string().describe("pass as `ticket` to GET /live"),
    expires_at: z.string().describe("ISO 8601: GET /live refuses the ticket from then on"),
  }),
  LiveMessage: liveMessage,
  WebhookAck: z.object({ applied: z.boolean(), outcome: webhookOutcome }),
  Health: z.object({ ok: z.literal(true) }),
  OpenApiDocument: z.looseObject({ openapi: z.literal("3.1.0") }).describe("This document."),
} as const;
type SchemaId = keyof typeof SCHEMAS;

/** What the shared request schemas check that JSON Schema cannot say. */
const SCHEMA_NOTES: Partial<Record<SchemaId, string>> = {
  CreateExportRequest:
    "`params` is checked per `type`; unknown keys of `params` (and of its items) pass through. " +
    "Also checked, not expressible here: each highlight region's end_time > start_time, and " +
    "input_video_key is at most 1024 UTF-8 bytes.",
  RunpodStatus:
    "RunPod's job status object, as returned by /status/{id}; unknown keys pass through.",
};

// ---------------------------------------------------------------------------------------------
// Errors: every code an answer can carry, with what it means.
// ---------------------------------------------------------------------------------------------

const ERRORS = {
  invalid_json: "the body is not valid JSON",
  invalid_request: "the body, query or a header is not valid; `issues` says where",
  unauthorized: "the bearer token is missing or wrong",
  bad_signature: "`attempt`/`sig` are missing or do not match the id",
  not_found: "no such resource",
  already_finished: "the job is already complete or error",
  already_replayed: "the dead letter was replayed already",
  not_replayable: "the dead letter names no existing job",
  job_complete: "the dead letter's job completed",
  job_active: "the dead letter's job is still pending or processing",
  not_complete: "the job is not complete, so it has no output yet",
  output_missing: "the job completed, but its output is no longer in R2",
  range_not_satisfiable: "the Range lies outside the object (Content-Range: bytes */size)",
  job_cancelled: "the dead letter's job was cancelled, and cancelled jobs are never replayed",
  payload_too_large: `the body exceeds ${MAX_BODY_BYTES} bytes`,
  unsupported_media_type: "the body is not sent as application/json",
  input_not_found: "no R2 object at input_video_key",
  idempotency_key_reused: "this Idempotency-Key was used with a different body",
  not_configured:
    "a secret the route needs (its token; WEBHOOK_SECRET for live tickets) is not set on the " +
    "Worker, so every call fails closed",
  internal_error: "unexpected failure; the request may be retried",
  bad_ticket: "the live ticket is missing, forged or expired: mint a fresh one",
  upgrade_required: "GET /live answers only a WebSocket upgrade (Upgrade: websocket)",
  live_unavailable: "live status cannot be reached right now (Retry-After); D1 is unaffected",
} as const;
type ErrorCode = keyof typeof ERRORS;
type ErrorStatus = 400 | 401 | 404 | 409 | 413 | 415 | 416 | 422 | 426 | 500 | 503;

// ---------------------------------------------------------------------------------------------
// The routes.
// ---------------------------------------------------------------------------------------------

type Method = "get" | "post" | "delete";
/** apiOrAdminToken: either bearer token; liveTicket: `?ticket=` from POST /live-tickets. */
type Auth = "apiToken" | "adminToken" | "apiOrAdminToken" | "signedUrl" | "liveTicket" | "none";

interface Reply {
  description: string;
  schema?: SchemaId;
  headers?: Record<string, { description: string; schema: JsonSchema }>;
}

interface Route {
  method: Method;
  /** OpenAPI syntax: `{id}`. */
  path: `/${string}`;
  operationId: string;
  summary: string;
  tag: "exports" | "live" | "runpod" | "operators" | "meta";
  auth: Auth;
  /** The zod schema the route parses its query with; each key becomes a query parameter. */
  query?: z.ZodObject;
  /** Request headers, as a zod object keyed by header name. */
  headers?: z.ZodObject;
  /** Descriptions of path, query and header parameters (common ones have defaults). */
  params?: Record<string, string>;
  body?: { schema: SchemaId; anyContentType?: true };
  /** Success answers. */
  ok: Partial<Record<101 | 200 | 201 | 202 | 204 | 206 | 304, Reply>>;
  /** Error answers of the handler itself; those of auth, query and body are added. */
  errors?: Partial<Record<ErrorStatus, ErrorCode[]>>;
}

const location: Reply["headers"] = {
  Location: { description: "/exports/{id} of the job", schema: { type: "string" } },
};

/** `?attempt=N&sig=HEX` of the URLs the producer hands RunPod (sig is checked, not parsed). */
const signedQuery = z.object({ attempt: attemptParam, sig: z.string().min(1) });
/** `?ticket=` of GET /live (checked, not parsed: a bad one is 401 bad_ticket). */
const ticketQuery = z.object({ ticket: z.string().min(1) });

const JOB_ID = "the job's id (a UUID)";
const DEAD_LETTER_ID = "the dead letter's id (its queue message id)";

const ROUTES: Route[] = [
  {
    method: "get",
    path: "/health",
    operationId: "health",
    summary: "Liveness (no D1 round trip)",
    tag: "meta",
    auth: "none",
    ok: { 200: { description: "alive", schema: "Health" } },
  },
  {
    method: "get",
    path: "/openapi.json",
    operationId: "openapi",
    summary: "This OpenAPI document",
    tag: "meta",
    auth: "none",
    ok: {
      200: {
        description: "the document",
        schema: "OpenApiDocument",
        headers: {
          "Cache-Control": { description: "public, max-age=300", schema: { type: "string" } },
        },
      },
    },
  },
  {
    method: "post",
    path: "/exports",
    operationId: "createExport",
    summary: "Create an export job",
    tag: "exports",
    auth: "apiToken",
    headers: z.object({ "Idempotency-Key": z.string().min(1).max(255).optional() }),
    params: {
      "Idempotency-Key":
        "Scoped per project: a repeat with the same body answers the first job (200) and " +
        "creates nothing; with another body, 422 idempotency_key_reused.",
    },
    body: { schema: "CreateExportRequest" },
    ok: {
      202: {
        description: "accepted: the job is pending",
        schema: "JobEnvelope",
        headers: location,
      },
      200: {
        description: "an Idempotency-Key repeat: the first job",
        schema: "JobEnvelope",
        headers: location,
      },
    },
    errors: { 422: ["input_not_found", "idempotency_key_reused"] },
  },
  {
    method: "get",
    path: "/exports",
    operationId: "listExports",
    summary: "List the jobs of one or more projects, newest first",
    tag: "exports",
    auth: "apiToken",
    query: listQuery,
    params: {
      project_id: "Repeat for several projects (1 to 100): ?project_id=1&project_id=2",
      active: "true: only pending and processing jobs",
    },
    ok: { 200: { description: "one page", schema: "JobPage" } },
  },
  {
    method: "get",
    path: "/exports/{id}",
    operationId: "getExport",
    summary: "Get an export job",
    tag: "exports",
    auth: "apiToken",
    params: { id: JOB_ID },
    ok: {
      200: {
        description: "the job; from its archive in R2, `archived: true`, once it was archived",
        schema: "JobEnvelope",
      },
    },
    errors: { 404: ["not_found"] },
  },
  {
    method: "get",
    path: "/exports/{id}/events",
    operationId: "getExportEvents",
    summary: "A job's timeline, oldest first (API_TOKEN, or ADMIN_TOKEN for the dashboard)",
    tag: "exports",
    auth: "apiOrAdminToken",
    params: { id: JOB_ID },
    ok: { 200: { description: "the events", schema: "EventList" } },
    errors: { 404: ["not_found"] },
  },
  {
    method: "get",
    path: "/exports/{id}/output",
    operationId: "getExportOutput",
    summary:
      "Download a complete job's output from R2 (Range → 206, If-None-Match → 304; " +
      "Content-Type, Content-Length, ETag, Accept-Ranges: bytes)",
    tag: "exports",
    auth: "apiToken",
    params: { id: JOB_ID },
    ok: {
      200: { description: "the file (video/mp4 unless R2 says otherwise)" },
      206: { description: "the requested byte range, with Content-Range" },
      304: { description: "the client's copy (If-None-Match) is current" },
    },
    errors: {
      404: ["not_found", "output_missing"],
      409: ["not_complete"],
      416: ["range_not_satisfiable"],
    },
  },
  {
    method: "post",
    path: "/exports/{id}/cancel",
    operationId: "cancelExport",
    summary: "Cancel a pending or processing job (error 'cancelled'; RunPod's run is cancelled)",
    tag: "exports",
    auth: "apiToken",
    params: { id: JOB_ID },
    ok: { 200: { description: "the cancelled job", schema: "JobEnvelope" } },
    errors: { 404: ["not_found"], 409: ["already_finished"] },
  },
  {
    method: "post",
    path: "/live-tickets",
    operationId: "createLiveTicket",
    summary:
      "Mint a live-status ticket for GET /live: `project_ids` with either token, " +
      "`all_projects` (operators) with the ADMIN_TOKEN only; good for LIVE_TICKET_TTL_S (60 s)",
    tag: "live",
    auth: "apiOrAdminToken",
    body: { schema: "LiveTicketRequest" },
    ok: { 201: { description: "the signed ticket", schema: "LiveTicket" } },
  },
  {
    method: "get",
    path: "/live",
    operationId: "openLive",
    summary:
      "Upgrades to a WebSocket (101 Switching Protocols) carrying LiveMessage text frames: a " +
      "snapshot of the ticket's jobs, then every change of them; `ping` answers `pong`",
    tag: "live",
    auth: "liveTicket",
    params: { ticket: "`ticket` of POST /live-tickets, before its `expires_at`" },
    ok: {
      101: {
        description:
          "Switching Protocols: the WebSocket (frames: LiveMessage). Reconnect with a fresh " +
          "ticket when it closes; the new snapshot replaces what was missed.",
      },
    },
    errors: { 426: ["upgrade_required"], 503: ["live_unavailable"] },
  },
  {
    method: "post",
    path: "/runpod/webhook/{id}",
    operationId: "runpodWebhook",
    summary: "RunPod's completion webhook for one attempt",
    tag: "runpod",
    auth: "signedUrl",
    params: { id: JOB_ID },
    body: { schema: "RunpodStatus", anyContentType: true },
    ok: {
      200: {
        description:
          "applied, or ignored as a duplicate, stale, finished or unknown job (RunPod retries " +
          "every non-200)",
        schema: "WebhookAck",
      },
    },
  },
  {
    method: "post",
    path: "/runpod/progress/{id}",
    operationId: "runpodProgress",
    summary: "Progress report of one attempt (never lowers progress)",
    tag: "runpod",
    auth: "signedUrl",
    params: { id: JOB_ID },
    body: { schema: "ProgressReport", anyContentType: true },
    ok: { 204: { description: "recorded, or ignored when the attempt is not current" } },
  },
  {
    method: "get",
    path: "/dead-letters",
    operationId: "listDeadLetters",
    summary: "List dead letters, newest first",
    tag: "operators",
    auth: "adminToken",
    query: pageQuery,
    ok: { 200: { description: "one page", schema: "DeadLetterPage" } },
  },
  {
    method: "get",
    path: "/dead-letters/{id}",
    operationId: "getDeadLetter",
    summary: "Get a dead letter and its job",
    tag: "operators",
    auth: "adminToken",
    params: { id: DEAD_LETTER_ID },
    ok: { 200: { description: "job is null when it names none", schema: "DeadLetterDetail" } },
    errors: { 404: ["not_found"] },
  },
  {
    method: "post",
    path: "/dead-letters/{id}/replay",
    operationId: "replayDeadLetter",
    summary: "Replay: the job goes back to pending with its retry budget restored",
    tag: "operators",
    auth: "adminToken",
    params: { id: DEAD_LETTER_ID },
    ok: { 202: { description: "replayed and re-enqueued", schema: "DeadLetterReplay" } },
    errors: {
      404: ["not_found"],
      409: ["already_replayed", "not_replayable", "job_complete", "job_active", "job_cancelled"],
    },
  },
  {
    method: "delete",
    path: "/dead-letters/{id}",
    operationId: "deleteDeadLetter",
    summary: "Delete a dead letter",
    tag: "operators",
    auth: "adminToken",
    params: { id: DEAD_LETTER_ID },
    ok: { 204: { description: "deleted" } },
    errors: { 404: ["not_found"] },
  },
  {
    method: "get",
    path: "/stats",
    operationId: "stats",
    summary:
      "Jobs by status, oldest pending age, processing without a run, dead letters, jobs archived",
    tag: "operators",
    auth: "adminToken",
    ok: { 200: { description: "the counts", schema: "Stats" } },
  },
  {
    method: "get",
    path: "/admin/jobs",
    operationId: "listJobsForOperators",
    summary: "List jobs across projects, newest first (the dashboard's listing)",
    tag: "operators",
    auth: "adminToken",
    query: adminQuery,
    params: { project_id: "only this project", status: "only this status" },
    ok: { 200: { description: "one page", schema: "JobPage" } },
  },
  {
    method: "post",
    path: "/admin/jobs/retry",
    operationId: "retryErrorJobs",
    summary:
      "Put error jobs back to pending (retry_count 0, a fresh attempt), by ids or by a filter; " +
      "cancelled jobs and jobs that are not error are skipped",
    tag: "operators",
    auth: "adminToken",
    body: { schema: "RetryRequest" },
    ok: { 202: { description: "what was retried and re-enqueued", schema: "RetryResult" } },
  },
];

const COMMON_PARAMS: Record<string, string> = {
  limit: "page size",
  cursor: "`next_cursor` of the previous page",
  attempt: "the attempt number the URL was signed for",
  sig: 'lowercase hex HMAC-SHA256(WEBHOOK_SECRET, "webhook:<id>:<attempt>") for the webhook, "progress:<id>:<attempt>" for progress',
};

// ---------------------------------------------------------------------------------------------
// The builder.
// ---------------------------------------------------------------------------------------------

interface Parameter {
  name: string;
  in: "path" | "query" | "header";
  required: boolean;
  description?: string;
  schema: JsonSchema;
}
interface Response {
  description: string;
  headers?: Reply["headers"];
  content?: { "application/json": { schema: JsonSchema } };
}
interface Operation {
  operationId: string;
  summary: string;
  tags: string[];
  security: Record<string, string[]>[];
  parameters?: Parameter[];
  requestBody?: {
    required: true;
    description: string;
    content: { "application/json": { schema: JsonSchema } };
  };
  responses: Record<string, Response>;
}
export interface OpenApiDocument {
  openapi: "3.1.0";
  info: { title: string; version: string; description: string };
  tags: { name: string; description: string }[];
  paths: Record<string, Partial<Record<Method, Operation>>>;
  components: {
    securitySchemes: Record<string, { type: "http"; scheme: "bearer"; description: string }>;
    schemas: Record<string, JsonSchema>;
  };
}

const JSON_SCHEMA_OPTIONS = {
  target: "draft-2020-12",
  io: "input",
  unrepresentable: "any",
  override: ({ zodSchema, jsonSchema }) => {
    // r2Key's refinements: the same rules as a pattern, and a bound its byte limit implies.
    if (zodSchema === r2Key) {
      jsonSchema.pattern = "^(?!/)(?!(?:.*/)?\\.\\.?(?:/|$))[^\\u0000-\\u001f\\u007f]*$";
      jsonSchema.maxLength = 1024;
      jsonSchema.description =
        "A relative R2 key: no leading '/', no '.' or '..' segment, no control characters, " +
        "at most 1024 UTF-8 bytes.";
    }
  },
} satisfies z.core.ToJSONSchemaParams;

const ref = (id: SchemaId): JsonSchema => ({ $ref: `#/components/schemas/${id}` });

/** A JSON Schema without the keywords that only make sense at a document root. */
function embeddable(schema: JsonSchema): JsonSchema {
  const { $schema: _dialect, $id: _id, ...rest } = schema;
  return rest;
}

function componentSchemas(): Record<string, JsonSchema> {
  const registry = z.registry<{ id: string }>();
  for (const [id, schema] of Object.entries(SCHEMAS)) registry.add(schema, { id });
  const { schemas } = z.toJSONSchema(registry, {
    ...JSON_SCHEMA_OPTIONS,
    uri: (id) => `#/components/schemas/${id}`,
  });
  if ("__shared" in schemas) throw new Error("a schema needs $defs; give it an id in SCHEMAS");
  const out: Record<string, JsonSchema> = {};
  for (const [id, schema] of Object.entries(schemas)) {
    const note = SCHEMA_NOTES[id as SchemaId];
    out[id] = { ...embeddable(schema), ...(note ? { description: note } : {}) };
  }
  return out;
}

function objectParameters(
  schema: z.ZodObject,
  where: "query" | "header",
  docs: Record<string, string>,
): Parameter[] {
  const json = z.toJSONSchema(schema, JSON_SCHEMA_OPTIONS);
  const required = new Set(json.required ?? []);
  return Object.entries(json.properties ?? {}).flatMap(([name, property]) =>
    typeof property === "boolean"
      ? []
      : [
          {
            name,
            in: where,
            required: required.has(name),
            ...(docs[name] ? { description: docs[name] } : {}),
            schema: property,
          },
        ],
  );
}

function parameters(route: Route): Parameter[] {
  const docs = { ...COMMON_PARAMS, ...route.params };
  const path = [...route.path.matchAll(/\{(\w+)\}/g)].map(([, name = ""]): Parameter => {
    const description = docs[name];
    if (!description) throw new Error(`${route.path}: describe {${name}} in params`);
    return { name, in: "path", required: true, description, schema: { type: "string" } };
  });
  const query =
    route.auth === "signedUrl"
      ? signedQuery.extend(route.query?.shape ?? {})
      : route.auth === "liveTicket"
        ? ticketQuery
        : route.query;
  return [
    ...path,
    ...(query ? objectParameters(query, "query", docs) : []),
    ...(route.headers ? objectParameters(route.headers, "header", docs) : []),
  ];
}

const bearer = (route: Route) =>
  route.auth === "apiToken" || route.auth === "adminToken" || route.auth === "apiOrAdminToken";

const SECURITY: Record<Auth, Record<string, string[]>[]> = {
  apiToken: [{ apiToken: [] }],
  adminToken: [{ adminToken: [] }],
  apiOrAdminToken: [{ apiToken: [] }, { adminToken: [] }],
  signedUrl: [],
  liveTicket: [],
  none: [],
};

/** The error answers a route gives: its own, and those its auth, query and body imply. */
function errorCodes(route: Route): Map<ErrorStatus, ErrorCode[]> {
  const codes = new Map<ErrorStatus, ErrorCode[]>();
  const add = (status: ErrorStatus, ...more: ErrorCode[]) => {
    const list = codes.get(status) ?? [];
    codes.set(status, [...list, ...more.filter((code) => !list.includes(code))]);
  };
  if (bearer(route)) add(401, "unauthorized");
  if (route.auth === "signedUrl") add(401, "bad_signature");
  if (route.auth === "liveTicket") add(401, "bad_ticket");
  if (route.body) {
    add(400, "invalid_json", "invalid_request");
    add(413, "payload_too_large");
    if (!route.body.anyContentType) add(415, "unsupported_media_type");
  }
  if (route.query || route.headers) add(400, "invalid_request");
  for (const [status, list] of Object.entries(route.errors ?? {})) {
    add(Number(status) as ErrorStatus, ...list);
  }
  if (bearer(route) || route.auth === "liveTicket") add(500, "not_configured");
  add(500, "internal_error");
  return new Map([...codes].sort(([a], [b]) => a - b));
}

function json(schema: JsonSchema): { "application/json": { schema: JsonSchema } } {
  return { "application/json": { schema } };
}

function operation(route: Route): Operation {
  const responses: Record<string, Response> = {};
  for (const [status, reply] of Object.entries(route.ok)) {
    responses[status] = {
      description: reply.description,
      ...(reply.headers ? { headers: reply.headers } : {}),
      ...(reply.schema ? { content: json(ref(reply.schema)) } : {}),
    };
  }
  for (const [status, codes] of errorCodes(route)) {
    responses[status] = {
      description: `Error codes: ${codes.map((code) => `\`${code}\` (${ERRORS[code]})`).join("; ")}`,
      ...(status === 401 && bearer(route)
        ? {
            headers: {
              "WWW-Authenticate": {
                description: 'Bearer realm="reel-exports"',
                schema: { type: "string" },
              },
            },
          }
        : {}),
      content: json(ref("Error")),
    };
  }
  const params = parameters(route);
  return {
    operationId: route.operationId,
    summary: route.summary,
    tags: [route.tag],
    security: SECURITY[route.auth],
    ...(params.length > 0 ? { parameters: params } : {}),
    ...(route.body
      ? {
          requestBody: {
            required: true,
            description:
              `JSON, at most ${MAX_BODY_BYTES} bytes` +
              (route.body.anyContentType ? "; the Content-Type is not checked." : "."),
            content: json(ref(route.body.schema)),
          },
        }
      : {}),
    responses,
  };
}

export function buildOpenApiDocument(): OpenApiDocument {
  const paths: OpenApiDocument["paths"] = {};
  for (const route of ROUTES) {
    const item = paths[route.path] ?? {};
    if (item[route.method]) throw new Error(`${route.method} ${route.path} is declared twice`);
    item[route.method] = operation(route);
    paths[route.path] = item;
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "reel-exports producer",
      version: "0.1.0",
      description:
        "Export jobs for the frontend (bearer API_TOKEN), RunPod's callbacks (signed URLs) and " +
        "the operators' routes (bearer ADMIN_TOKEN). Every error is the `Error` envelope.",
    },
    tags: [
      { name: "exports", description: "The frontend's export jobs (API_TOKEN)" },
      {
        name: "runpod",
        description:
          "RunPod's callbacks; no bearer token: `attempt` and its HMAC `sig` in the query " +
          "authenticate the call",
      },
      {
        name: "live",
        description:
          "Live status: a signed ticket (either token), then a WebSocket of the ticket's jobs",
      },
      { name: "operators", description: "Dead letters, stats and listings (ADMIN_TOKEN)" },
      { name: "meta", description: "No auth" },
    ],
    paths,
    components: {
      securitySchemes: {
        apiToken: {
          type: "http",
          scheme: "bearer",
          description: "The frontend's token: the Worker's API_TOKEN secret",
        },
        adminToken: {
          type: "http",
          scheme: "bearer",
          description: "The operators' token: the Worker's ADMIN_TOKEN secret",
        },
      },
      schemas: componentSchemas(),
    },
  };
}

let cached: OpenApiDocument | undefined;

/** The document, built on first use and shared afterwards (do not mutate it). */
export function openApiDocument(): OpenApiDocument {
  cached ??= buildOpenApiDocument();
  return cached;
}
