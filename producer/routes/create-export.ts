import { createRoute, type RouteHandler, z } from "@hono/zod-openapi";
import { fairKeyOf } from "../../shared/fair-queue.ts";
import { createJob } from "../../shared/job-state.ts";
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
import {
  asCaller,
  enqueueNew,
  LIMITER_PERIOD_S,
  missingPrefix,
  neverSent,
  newJobOf,
  QUOTA_RETRY_AFTER_S,
  requestHash,
  underRateLimit,
} from "../create.ts";
import { jobDepsWithRunpod } from "../deps.ts";
import { type AppContext, type AppEnv, apiError } from "../http.ts";
import { jobWithQueue } from "../queue.ts";

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
  // A repeat enqueues nothing, unless the job may never have been enqueued. (A request that lost
  // the race to insert answers the winner's job, which the winner enqueues.)
  const unsent = !options.raced && (await neverSent(c, existing));
  const [job] = unsent
    ? await enqueueNew(c, [existing])
    : [await jobWithQueue(c.env, toJob(existing))];
  return c.json({ job: job ?? toJob(existing) }, 200);
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
  const request = asCaller(c, body);
  if (!request) return projectNotAllowed(c, [body.project_id]);
  const prefix = missingPrefix(c, request);
  if (prefix !== null) {
    return apiError(
      c,
      400,
      "input_key_outside_project",
      `input_video_key must start with ${JSON.stringify(prefix)}`,
      [{ path: ["input_video_key"], message: `must start with ${prefix}` }],
    );
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

  const idempotency = key !== undefined && hash !== null ? { key, requestHash: hash } : undefined;
  const newJob = await newJobOf(c, request, input.etag, idempotency);
  const row = await createJob(jobDepsWithRunpod(c), newJob);
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
      `${fairKey} has ${newJob.max_active} exports pending or processing ` +
        "(MAX_ACTIVE_PER_USER); retry when one has finished",
    );
  }
  const [job] = await enqueueNew(c, [row]);
  c.header("Location", `/exports/${row.id}`);
  return c.json({ job: job ?? toJob(row) }, 202);
};
