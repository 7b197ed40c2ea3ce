// RunPod's calls back into the producer: the completion webhook and the progress reports.
// RunPod signs nothing, so the URL carries `attempt` and an HMAC of "<kind>:<id>:<attempt>".

import { createRoute, type RouteHandler, z } from "@hono/zod-openapi";
import type { MiddlewareHandler } from "hono";
import { applyRunStatus, reportProgress } from "../../shared/job-state.ts";
import { log } from "../../shared/log.ts";
import { type SignedUrlKind, verifyAttempt } from "../../shared/signing.ts";
import { getJob } from "../../shared/sql/jobs/reads.ts";
import {
  auth,
  BODY_ERRORS,
  errorReplies,
  jobIdParams,
  jsonBody,
  queryParam,
  reply,
} from "../api.ts";
import { ProgressReport, RunpodStatus, WebhookAck } from "../api-schemas.ts";
import { jobDeps } from "../deps.ts";
import { type AppEnv, apiError } from "../http.ts";

const attemptParam = z.coerce.number().int().min(0).max(1_000_000);

/** `?attempt=N&sig=HEX` of the URLs the producer hands RunPod. */
const signedQuery = z.object({
  // Said in full: a coerced number takes any input, so the generator would call it optional
  // and nullable.
  attempt: queryParam(attemptParam).openapi({
    type: "integer",
    minimum: 0,
    maximum: 1_000_000,
    description: "the attempt number the URL was signed for",
    param: { required: true },
  }),
  sig: queryParam(
    z
      .string()
      .min(1)
      .openapi({
        description:
          'lowercase hex HMAC-SHA256(WEBHOOK_SECRET, "webhook:<id>:<attempt>") for the webhook, ' +
          '"progress:<id>:<attempt>" for progress',
      }),
  ),
});

/**
 * The URL's signature, checked before anything else is read: 401 bad_signature unless `sig` is
 * the HMAC of this kind, id and attempt; the verified attempt is `c.get("attempt")`.
 */
function signedBy(kind: SignedUrlKind): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const query = signedQuery.safeParse({
      attempt: c.req.query("attempt"),
      sig: c.req.query("sig"),
    });
    const secrets = [c.env.WEBHOOK_SECRET, c.env.WEBHOOK_SECRET_PREVIOUS];
    const id = c.req.param("id") ?? "";
    if (
      !query.success ||
      !(await verifyAttempt(secrets, kind, id, query.data.attempt, query.data.sig))
    ) {
      return apiError(c, 401, "bad_signature", "the URL's signature does not match");
    }
    c.set("attempt", query.data.attempt);
    await next();
  };
}

export const runpodWebhookRoute = createRoute({
  method: "post",
  path: "/runpod/webhook/{id}",
  operationId: "runpodWebhook",
  summary: "RunPod's completion webhook for one attempt",
  tags: ["runpod"],
  ...auth("signedUrl", signedBy("webhook")),
  request: {
    params: jobIdParams,
    query: signedQuery,
    body: jsonBody(RunpodStatus, { anyContentType: true }),
  },
  responses: {
    200: reply(
      "applied, or ignored as a duplicate, stale, finished or unknown job (RunPod retries " +
        "every non-200)",
      WebhookAck,
    ),
    ...errorReplies("signedUrl", BODY_ERRORS),
  },
});

/**
 * `POST /runpod/webhook/{id}?attempt=N&sig=HEX`: RunPod's status object for one run. Anything
 * valid answers 200 — applied, or ignored as a duplicate, stale or finished — because RunPod
 * retries every non-200.
 */
export const runpodWebhook: RouteHandler<typeof runpodWebhookRoute, AppEnv> = async (c) => {
  const attempt = c.get("attempt");
  const status = c.req.valid("json");
  const job = await getJob(c.env.DB, c.req.valid("param").id);
  if (!job) return c.json({ applied: false, outcome: "unknown_job" as const }, 200);
  const outcome = await applyRunStatus(jobDeps(c), job, attempt, status);
  log("info", "runpod webhook", { job_id: job.id, attempt, status: status.status, outcome });
  return c.json({ applied: outcome !== "unchanged", outcome }, 200);
};

export const runpodProgressRoute = createRoute({
  method: "post",
  path: "/runpod/progress/{id}",
  operationId: "runpodProgress",
  summary: "Progress report of one attempt (never lowers progress)",
  tags: ["runpod"],
  ...auth("signedUrl", signedBy("progress")),
  request: {
    params: jobIdParams,
    query: signedQuery,
    body: jsonBody(ProgressReport, { anyContentType: true }),
  },
  responses: {
    204: {
      description:
        "recorded, or ignored: not higher than the progress known, or the attempt's job finished",
    },
    ...errorReplies("signedUrl", { ...BODY_ERRORS, 409: ["stale_attempt"] }),
  },
});

/**
 * `POST /runpod/progress/{id}?attempt=N&sig=HEX` body `{"progress": 0..100, "runpod_job_id"?}` →
 * 204.
 */
export const runpodProgress: RouteHandler<typeof runpodProgressRoute, AppEnv> = async (c) => {
  const report = c.req.valid("json");
  const outcome = await reportProgress(
    jobDeps(c),
    c.req.valid("param").id,
    c.get("attempt"),
    Math.floor(report.progress),
    report.runpod_job_id,
  );
  if (outcome.kind === "stale") {
    // The run of an attempt the job has moved past: its result will be discarded, so its
    // handler should stop rendering now (docs/gpu-worker.md).
    return apiError(
      c,
      409,
      "stale_attempt",
      `attempt ${c.get("attempt")} is not this job's current attempt: stop this run`,
    );
  }
  return c.body(null, 204);
};
