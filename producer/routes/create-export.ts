import { createRoute, type RouteHandler, z } from "@hono/zod-openapi";
import { fairKeyOf } from "../../shared/fair-queue.ts";
import { paramsHash, sha256OfJson } from "../../shared/identity.ts";
import { createJob, recordHolder } from "../../shared/job-state.ts";
import { log } from "../../shared/log.ts";
import type { CreateExportRequest as Request } from "../../shared/schemas.ts";
import { endpointRoutes, inputPrefixOf, tenancySettings } from "../../shared/settings.ts";
import { findJobByIdempotencyKey } from "../../shared/sql/jobs/reads.ts";
import { type JobRow, toJob } from "../../shared/sql/jobs/row.ts";
import {
  auth,
  errorReplies,
  header,
  JSON_BODY_ERRORS,
  jsonBody,
  projectNotAllowed,
  reply,
} from "../api.ts";
import { CreateExportRequest, JobEnvelope } from "../api-schemas.ts";
import { jobDeps, jobDepsWithRunpod } from "../deps.ts";
import { type AppContext, type AppEnv, apiError } from "../http.ts";
import { dispatcherHolds, jobWithQueue } from "../queue.ts";

const location = { Location: header("/exports/{id} of the job") };

export const createExportRoute = createRoute({
  method: "post",
  path: "/exports",
  operationId: "createExport",
  summary: "Create an export job",
  tags: ["exports"],
  ...auth("frontend"),
  request: {
    headers: z.object({
      "Idempotency-Key": z
        .string()
        .min(1, "must be 1 to 255 characters")
        .max(255, "must be 1 to 255 characters")
        .optional()
        .openapi({
          description:
            "Scoped per project: a repeat with the same body answers the first job (200) and " +
            "creates nothing; with another body, 422 idempotency_key_reused.",
        }),
    }),
    body: jsonBody(CreateExportRequest),
  },
  responses: {
    202: reply("accepted: the job is pending", JobEnvelope, location),
    200: reply("an Idempotency-Key repeat: the first job", JobEnvelope, location),
    ...errorReplies("frontend", {
      ...JSON_BODY_ERRORS,
      400: [...JSON_BODY_ERRORS[400], "input_key_outside_project"],
      403: ["project_not_allowed"],
      422: ["input_not_found", "idempotency_key_reused"],
      429: ["quota_exceeded", "rate_limited"],
    }),
  },
});

/** CREATE_LIMITER's period (wrangler.toml `simple.period`): Retry-After's upper bound. */
const LIMITER_PERIOD_S = 60;
/** Retry-After of quota_exceeded: a hint; a slot frees when one of the key's jobs ends. */
const QUOTA_RETRY_AFTER_S = 30;

/**
 * CREATE_LIMITER (the Workers Rate Limiting binding) for one create of `fairKey`. A Worker without
 * the binding, or a limiter that fails, does not refuse: the quota and fair dispatch still hold.
 */
async function underRateLimit(c: AppContext, fairKey: string): Promise<boolean> {
  const limiter = c.env.CREATE_LIMITER;
  if (!limiter) return true;
  try {
    return (await limiter.limit({ key: fairKey })).success;
  } catch (error) {
    log("warn", "CREATE_LIMITER failed; the create goes ahead", { error: String(error) });
    return true;
  }
}

/** SHA-256 of the canonical request body: equal bodies hash equally. */
const requestHash = (request: Request): Promise<string> => sha256OfJson(request);

/** A repeat of an Idempotency-Key: the first job (200) if the body is the same, else 422. */
async function answerRepeat(
  c: AppContext,
  existing: JobRow,
  hash: string,
  options: { raced?: boolean } = {},
) {
  if (existing.request_hash !== hash) {
    return apiError(
      c,
      422,
      "idempotency_key_reused",
      "this Idempotency-Key was used for a different request body",
    );
  }
  c.header("Location", `/exports/${existing.id}`);
  // A job no claim has taken, no consumer has held (due_at set) and the dispatcher does not hold
  // may never have been enqueued (the first request's offer and send both failed, or its answer
  // was lost): the repeat enqueues it. Otherwise a repeat enqueues nothing.
  // (A request that lost the race to insert answers the winner's job, which the winner enqueues.)
  const unsent =
    !options.raced &&
    existing.status === "pending" &&
    existing.attempt === 0 &&
    existing.due_at !== null &&
    !(await dispatcherHolds(c.env, existing));
  const job = unsent ? await enqueueNew(c, existing) : await jobWithQueue(c.env, toJob(existing));
  return c.json({ job }, 200);
}

/**
 * A job just inserted (or found never enqueued): the dispatcher holds it from now on (its
 * position counts it), then its message goes. The row is the truth: a send that fails is left to
 * the reconciler, which re-enqueues pending jobs whose message was lost, so the job is accepted
 * rather than failing a request whose retry would create a second job.
 */
async function enqueueNew(c: AppContext, row: JobRow) {
  const accepted = new Map<string, string>();
  let job = await jobWithQueue(c.env, toJob(row), { created: true, accepted });
  // Its type's first endpoint was down and another holds it (failover): D1 names the holder, so
  // that its batch never offers it to a second dispatcher.
  const holder = accepted.get(row.id);
  if (holder !== undefined && holder !== row.runpod_endpoint_id) {
    const moved = await recordHolder(jobDeps(c), row.id, holder).catch((error: unknown) => {
      log("warn", "recording a new job's holder failed", { job_id: row.id, error: String(error) });
      return null;
    });
    if (moved) job = { ...toJob(moved), queue: job.queue ?? null };
  }
  try {
    await c.env.EXPORT_QUEUE.send({ job_id: row.id });
  } catch (error) {
    log("error", "enqueue failed after insert", { job_id: row.id, error: String(error) });
  }
  return job;
}

/**
 * `POST /exports`: validate, check the input exists in R2, insert the `pending` row, then send
 * `{"job_id"}`. Nothing is written or sent before every check has passed. With an
 * `Idempotency-Key` (scoped per project, enforced by a unique index), a repeat of the same body
 * returns the first job and sends nothing (and supersedes nothing). With a `supersede_key`, the
 * insert ends the project's older jobs under it (shared/job-state.ts createJob). The input's ETag
 * and the identity hash make the job comparable with others (reuse, single flight).
 */
export const createExport: RouteHandler<typeof createExportRoute, AppEnv> = async (c) => {
  const key = c.req.valid("header")["Idempotency-Key"];
  const body = c.req.valid("json");
  // A scoped token creates in its projects only, and as its user when it names one.
  const client = c.get("client");
  if (client && !client.projectIds.includes(body.project_id)) {
    return projectNotAllowed(c, [body.project_id]);
  }
  const request: Request = client?.userId != null ? { ...body, user_id: client.userId } : body;
  const tenancy = tenancySettings(c.env);
  if (tenancy.inputKeyPrefix !== null) {
    const prefix = inputPrefixOf(tenancy.inputKeyPrefix, request.project_id);
    if (!request.input_video_key.startsWith(prefix)) {
      return apiError(
        c,
        400,
        "input_key_outside_project",
        `input_video_key must start with ${JSON.stringify(prefix)}`,
        [{ path: ["input_video_key"], message: `must start with ${prefix}` }],
      );
    }
  }

  const hash = key === undefined ? null : await requestHash(request);
  if (key !== undefined && hash !== null) {
    const existing = await findJobByIdempotencyKey(c.env.DB, request.project_id, key);
    if (existing) return answerRepeat(c, existing, hash);
  }

  const fairKey = fairKeyOf({ user_id: request.user_id ?? null, project_id: request.project_id });
  if (!(await underRateLimit(c, fairKey))) {
    c.header("Retry-After", String(LIMITER_PERIOD_S));
    return apiError(
      c,
      429,
      "rate_limited",
      `too many exports created for ${fairKey} in the last minute; retry later`,
    );
  }

  const input = await c.env.VIDEOS.head(request.input_video_key);
  if (!input) {
    return apiError(
      c,
      422,
      "input_not_found",
      `no object at input_video_key ${JSON.stringify(request.input_video_key)}`,
    );
  }

  const row = await createJob(jobDepsWithRunpod(c), {
    id: crypto.randomUUID(),
    ...request,
    idempotency: key !== undefined && hash !== null ? { key, requestHash: hash } : undefined,
    input_etag: input.etag,
    params_hash: await paramsHash(request),
    // Held by its type's first endpoint (RUNPOD_ENDPOINTS; a malformed value fails here, before
    // anything is written).
    endpoint_id: endpointRoutes(c.env)[request.type][0] ?? null,
    max_active: tenancy.maxActivePerUser,
  });
  if (!row) {
    // Another request with the same key won the race to insert: answer as its repeat. Else the
    // insert found the fairness key at its quota and wrote nothing.
    const winner =
      key === undefined ? null : await findJobByIdempotencyKey(c.env.DB, request.project_id, key);
    if (winner && hash !== null) return answerRepeat(c, winner, hash, { raced: true });
    c.header("Retry-After", String(QUOTA_RETRY_AFTER_S));
    return apiError(
      c,
      429,
      "quota_exceeded",
      `${fairKey} has ${tenancy.maxActivePerUser} exports pending or processing ` +
        "(MAX_ACTIVE_PER_USER); retry when one has finished",
    );
  }
  const job = await enqueueNew(c, row);
  c.header("Location", `/exports/${row.id}`);
  return c.json({ job }, 202);
};
