// The API's named schemas shared by routes: the shapes of the answers, and the request bodies
// under the names the OpenAPI document gives them (a route's own, like RetryRequest, is named in
// its file with the same `component`). Each is registered once with `component(name, schema)`; routes use
// the returned schema, so the document refers to it as `#/components/schemas/<name>`.
// `exactly<T>()(schema)` compiles only while the schema's output type and T are assignable both
// ways, so a column added to the code breaks the build, not the document.

import { z } from "@hono/zod-openapi";
import { clientTokenRequest } from "../shared/client-token.ts";
import type { DispatchStatus } from "../shared/dispatcher.ts";
import type { RunOutcome } from "../shared/job-state.ts";
import type { LiveMessage } from "../shared/live-keys.ts";
import { liveTicketRequest } from "../shared/live-ticket.ts";
import type { QueueInfo } from "../shared/queue-estimate.ts";
import {
  batchCreateRequest,
  createExportRequest,
  JOB_TYPES,
  progressReport,
  runpodStatusObject,
} from "../shared/schemas.ts";
import type { DeadLetterRow } from "../shared/sql/dead-letters.ts";
import { EVENT_TYPES } from "../shared/sql/events.ts";
import type { Job } from "../shared/sql/jobs/row.ts";
import type { StatsWithArchive } from "../shared/sql/stats.ts";

export interface Component {
  schema: z.ZodType;
  /** What the document says of it: the schema's description, or a note in its place. */
  note?: string;
}
const COMPONENTS = new Map<string, Component>();

/** Names `schema` as a component of the document; use the schema this returns. */
export function component<S extends z.ZodType>(name: string, schema: S, note?: string): S {
  if (COMPONENTS.has(name)) throw new Error(`component ${name} is declared twice`);
  // A clone: a schema made before @hono/zod-openapi extended zod (shared/ never imports it) has
  // no .openapi(); its clone, made now, does.
  const named = schema.clone().openapi(name) as S;
  // The clone is not the described schema: its description travels as the note.
  const description = note ?? schema.description;
  COMPONENTS.set(name, { schema: named, ...(description ? { note: description } : {}) });
  return named;
}

/** Every named schema, by name (the document's components). */
export function components(): ReadonlyMap<string, Component> {
  return COMPONENTS;
}

type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const exactly =
  <T>() =>
  <S extends z.ZodType>(
    schema: S,
    ..._mismatch: Same<z.output<S>, T> extends true ? [] : [never]
  ) =>
    schema;

const stamp = (what: string) => `${what}: UTC text "YYYY-MM-DD HH:MM:SS.SSS"`;
export const jobStatus = z.enum(["pending", "processing", "complete", "error"]);

export const QueueSchema = component(
  "Queue",
  exactly<QueueInfo>()(
    z
      .object({
        position: z
          .number()
          .int()
          .min(0)
          .describe(
            "how many jobs will start before it given today's backlog, under the dispatcher's " +
              "order (fair shares, not arrival): 0 is next; later jobs of a less-served user may pass it",
          ),
        eta_s: z
          .number()
          .int()
          .min(0)
          .describe("expected seconds until its run starts, from the fleet's size and run lengths"),
        lane: z.enum(["interactive", "standard", "batch"]),
        at: z.string().describe("ISO 8601: when the counts behind the estimate were read"),
      })
      .describe("An estimate, cached for a few seconds."),
  ),
);

export const JobSchema = component(
  "Job",
  exactly<Job>()(
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
        error: z
          .string()
          .nullable()
          .describe("the last failure, 'cancelled', or 'superseded by <newer job id>'"),
        retry_count: z.number().int().min(0).describe("failed attempts so far"),
        runpod_job_id: z.string().nullable(),
        runpod_endpoint_id: z
          .string()
          .nullable()
          .describe(
            "the RunPod endpoint of the current attempt, or of the dispatcher holding the job " +
              "while it waits (RUNPOD_ENDPOINTS); null: RUNPOD_ENDPOINT_ID",
          ),
        created_at: z.string().describe(stamp("created")),
        started_at: z.string().nullable().describe(stamp("last claimed")),
        completed_at: z.string().nullable().describe(stamp("completed")),
        due_at: z
          .string()
          .nullable()
          .describe(
            stamp(
              "internal bookkeeping: when the job next needs attention, which its status says " +
                "(pending: retry time, or null while it waits for a slot; processing: claim " +
                "deadline, or poll time once its run is recorded; error 'cancelled': when " +
                "RunPod's /cancel is tried again; otherwise null)",
            ),
          ),
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
        gpu_ms: z
          .number()
          .int()
          .min(0)
          .describe(
            "GPU time of the job's runs (RunPod's executionTime), failed runs included, as known " +
              "when each run's news reached the job; 0 for a job archived before it was counted",
          ),
        queue_ms: z
          .number()
          .int()
          .min(0)
          .describe("time the job's runs waited at RunPod for a worker (RunPod's delayTime)"),
        priority: z
          .enum(["interactive", "standard", "batch"])
          .describe(
            "its lane: slots go to the lanes with jobs waiting by weighted round robin " +
              "(PRIORITY_WEIGHTS, 8,4,1); batch runs never make RunPod add workers",
          ),
        input_etag: z
          .string()
          .nullable()
          .describe("the input object's R2 ETag when the job was created (part of its identity)"),
        supersede_key: z
          .string()
          .nullable()
          .describe("the request's supersede_key: a newer job under it ends this one"),
        reuse: z
          .boolean()
          .describe('false when the request said `"reuse": false` (no reuse, no following)'),
        follows: z
          .string()
          .nullable()
          .describe(
            "the identical job whose output this one takes: a complete one (copied at once), or " +
              "one still on its way, which it waits for (single flight); if that one ends " +
              "without an output, this job follows another identical job or runs on its own",
          ),
        reused_from: z
          .string()
          .nullable()
          .describe(
            "set when the job completed with a copy of this identical job's output, no run",
          ),
        archived: z
          .literal(true)
          .optional()
          .describe(
            "present when the job finished more than ARCHIVE_AFTER_S ago and is answered from " +
              "its archive in R2; such a job is no longer listed",
          ),
        queue: QueueSchema.nullable()
          .optional()
          .describe(
            "a pending job's place in the queue (null once it runs or ended; not part of the " +
              "row: it never raises `version`; live `job` messages leave it out)",
          ),
      })
      .describe("An export job: the export_jobs row with params parsed back to an object."),
  ),
);

export const DeadLetterSchema = component(
  "DeadLetter",
  exactly<Omit<DeadLetterRow, "body"> & { body: unknown }>()(
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
  ),
);

const issue = z.object({
  path: z.array(z.union([z.string(), z.number()])),
  message: z.string(),
  code: z.string().optional(),
});
export const ErrorSchema = component(
  "Error",
  z
    .object({
      error: z.object({
        code: z.string(),
        message: z.string(),
        issues: z.array(issue).optional(),
      }),
    })
    .describe(
      "Every error answer. `code` is stable snake_case; `issues` lists what failed validation.",
    ),
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
      mode: z
        .enum(["auto", "fixed"])
        .describe("auto: the cap follows the fleet; fixed: RUNPOD_MAX_IN_FLIGHT is a number"),
      max_in_flight: z.number().int().describe("the cap on runs in flight now"),
      cap_reason: z.string().describe("why the cap is what it is"),
      fleet: z
        .object({
          ready: z.number().int(),
          running: z.number().int(),
          initializing: z.number().int(),
          throttled: z.number().int(),
          in_queue: z.number().int().describe("runs waiting in RunPod's own queue"),
          at: z.string().describe("ISO 8601: when RunPod's /health was read"),
        })
        .nullable()
        .describe("the endpoint's workers as RunPod's /health told them; null until read"),
      waiting: z.number().int().describe("jobs waiting in the dispatcher for a slot"),
      waiting_keys: z
        .number()
        .int()
        .describe("fairness keys (users, else projects) with jobs waiting, per lane"),
      waiting_by_lane: z
        .object({
          interactive: z.number().int(),
          standard: z.number().int(),
          batch: z.number().int(),
        })
        .describe("jobs waiting in each lane"),
    })
    .describe("The dispatch gate of this RunPod endpoint; null when it could not be reached."),
);

export const StatsSchema = component(
  "Stats",
  stats.extend({
    dispatch: dispatch.nullable().describe("RUNPOD_ENDPOINT_ID's dispatcher"),
    dispatch_by_endpoint: z
      .record(z.string(), dispatch.nullable())
      .describe("every endpoint RUNPOD_ENDPOINTS names (RUNPOD_ENDPOINT_ID's too), by id"),
  }),
);

const webhookOutcome = exactly<RunOutcome | "unknown_job">()(
  z.enum(["completed", "retrying", "failed", "cancelled", "progress", "unchanged", "unknown_job"]),
);

export const LiveMessageSchema = component(
  "LiveMessage",
  exactly<LiveMessage>()(
    z
      .discriminatedUnion("type", [
        z.object({
          type: z.literal("snapshot"),
          jobs: z
            .array(JobSchema)
            .describe("the active jobs of the ticket's projects and their 20 newest finished"),
        }),
        z.object({ type: z.literal("job"), job: JobSchema }),
        z
          .object({
            type: z.literal("queue"),
            jobs: z.array(z.object({ id: z.string(), queue: QueueSchema })),
          })
          .describe(
            "pending jobs' queue positions, outside their versions: at most one per project " +
              "every 5 s while the project has pending jobs",
          ),
        z
          .object({
            type: z.literal("progress"),
            job_id: z.string(),
            project_id: z.number().int(),
            attempt: z.number().int(),
            version: z.number().int(),
            progress: z.number().int().min(0).max(100),
          })
          .describe(
            "a progress report D1 did not record (it records one per 25 points or per 60 s), " +
              "outside the job's version: apply it to the job known at exactly `version` and " +
              "`attempt`, raising its progress",
          ),
      ])
      .describe(
        "A text frame of GET /live: one snapshot on connect, then one `job` per change, the " +
          "job as GET /exports/{id} answers it (without `queue`), and `queue` and `progress` " +
          "messages outside the versions. Keep the highest `version` per job. Send `ping` to " +
          "get `pong`.",
      ),
  ),
);

const nextCursor = z
  .string()
  .nullable()
  .describe("pass as `cursor` for the next page; null on the last");

export const JobEnvelope = component("JobEnvelope", z.object({ job: JobSchema }));
export const JobList = component(
  "JobList",
  z.object({ jobs: z.array(JobSchema).describe("in the order of the request's items") }),
);
export const JobPage = component(
  "JobPage",
  z.object({ jobs: z.array(JobSchema), next_cursor: nextCursor }),
);
export const DeadLetterPage = component(
  "DeadLetterPage",
  z.object({ dead_letters: z.array(DeadLetterSchema), next_cursor: nextCursor }),
);
export const DeadLetterDetail = component(
  "DeadLetterDetail",
  z.object({ dead_letter: DeadLetterSchema, job: JobSchema.nullable() }),
);
export const DeadLetterReplay = component(
  "DeadLetterReplay",
  z.object({ dead_letter: DeadLetterSchema, job: JobSchema }),
);

export const EventList = component(
  "EventList",
  z.object({
    events: z.array(
      z.object({
        at: z.string().describe(stamp("happened")),
        attempt: z.number().int(),
        type: z.enum(EVENT_TYPES),
        runpod_job_id: z.string().optional(),
        detail: z.string().optional().describe("why it failed; the progress reached; …"),
      }),
    ),
  }),
);

export const LiveTicketRequest = component("LiveTicketRequest", liveTicketRequest);
export const LiveTicket = component(
  "LiveTicket",
  z.object({
    ticket: z.string().describe("pass as `ticket` to GET /live"),
    expires_at: z.string().describe("ISO 8601: GET /live refuses the ticket from then on"),
  }),
);
export const ClientTokenRequest = component(
  "ClientTokenRequest",
  clientTokenRequest,
  "`ttl_s` defaults to CLIENT_TOKEN_MAX_TTL_S (3600) and may not exceed it.",
);
export const ClientToken = component(
  "ClientToken",
  z.object({
    token: z
      .string()
      .describe("send as `Authorization: Bearer …` from the browser; it names its projects"),
    expires_at: z.string().describe("ISO 8601: refused (401) from then on"),
  }),
);
export const DownloadUrl = component(
  "DownloadUrl",
  z.object({
    url: z
      .string()
      .describe(
        "GET it without a bearer (Range and If-None-Match as for /exports/{id}/output); " +
          "401 bad_signature once it expired",
      ),
    expires_at: z.string().describe("ISO 8601: when the URL stops working"),
  }),
);
const notification = z.object({
  id: z.string().describe("the webhook-id: stable per event (the job and its ending version)"),
  job_id: z.string(),
  version: z.number().int().describe("the job's version that ended it"),
  type: z.enum(["export.completed", "export.failed"]),
  ended_at: z.string().describe(stamp("when the job ended")),
  status: z.enum(["pending", "delivered", "failed"]),
  attempts: z.number().int().describe("tries of the current series"),
  next_attempt_at: z.string().nullable().describe("pending: when the next try is due"),
  window_from: z.string().describe(stamp("the series' start: it gives up 24 h after")),
  last_status: z.number().int().nullable().describe("the receiver's last HTTP status"),
  last_error: z.string().nullable().describe("the last try's failure (status, timeout, …)"),
  delivered_at: z.string().nullable(),
});
export const NotificationSchema = component("Notification", notification);
export const NotificationPage = component(
  "NotificationPage",
  z.object({ notifications: z.array(NotificationSchema), next_cursor: z.string().nullable() }),
);
export const NotificationEnvelope = component(
  "NotificationEnvelope",
  z.object({ notification: NotificationSchema }),
);
export const WebhookAck = component(
  "WebhookAck",
  z.object({ applied: z.boolean(), outcome: webhookOutcome }),
);
export const Health = component("Health", z.object({ ok: z.literal(true) }));
export const OpenApiDocumentSchema = component(
  "OpenApiDocument",
  z.looseObject({ openapi: z.literal("3.1.0") }).describe("This document."),
);

export const BatchCreateRequest = component(
  "BatchCreateRequest",
  batchCreateRequest,
  "1 to 100 CreateExportRequest bodies, each with an optional `idempotency_key` (1–255 " +
    "characters) that behaves as POST /exports' Idempotency-Key header. All or nothing: an " +
    "invalid item refuses the batch, with its path (`exports.3.params…`) in `issues`.",
);
export const CreateExportRequest = component(
  "CreateExportRequest",
  createExportRequest,
  "`params` is checked per `type`; unknown keys of `params` (and of its items) pass through. " +
    "Also checked, not expressible here: each highlight region's end_time > start_time, and " +
    "input_video_key is at most 1024 UTF-8 bytes.",
);
export const RunpodStatus = component(
  "RunpodStatus",
  runpodStatusObject,
  "RunPod's job status object, as returned by /status/{id}; unknown keys pass through.",
);
export const ProgressReport = component("ProgressReport", progressReport);

const usageRow = z.object({
  key: z.number().int().describe("the user_id or project_id"),
  exports: z.number().int().describe("jobs created in the window"),
  complete: z.number().int().describe("jobs that reached complete in the window"),
  error: z
    .number()
    .int()
    .describe("jobs that reached error in the window (failed, cancelled, expired)"),
  gpu_seconds: z
    .number()
    .describe("execution time of the runs that ended in the window (RunPod's executionTime)"),
  est_cost_usd: z
    .number()
    .describe(
      "gpu_seconds × GPU_PRICE_PER_S: execution only; RunPod also bills workers' start-up and " +
        "idle time, which no run reports",
    ),
});

export const UsageSchema = component(
  "Usage",
  z
    .object({
      group_by: z.enum(["user", "project"]),
      from: z.string().describe("first UTC day counted (YYYY-MM-DD)"),
      to: z.string().describe("last UTC day counted (YYYY-MM-DD)"),
      price_per_s: z.number().describe("GPU_PRICE_PER_S, USD"),
      rows: z.array(usageRow).describe("one per key with activity in the window, most GPU first"),
    })
    .describe("GPU usage and exports per user or project over whole UTC days"),
);
