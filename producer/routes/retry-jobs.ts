// `POST /admin/jobs/retry` (ADMIN_TOKEN): operators put `error` jobs back to pending, by ids or by
// a filter, after an incident. Cancelled jobs and jobs that are not `error` are skipped.
import { createRoute, type RouteHandler, z } from "@hono/zod-openapi";
import { retryJobs } from "../../shared/job-state.ts";
import { auth, errorReplies, JSON_BODY_ERRORS, jsonBody, reply } from "../api.ts";
import { component } from "../api-schemas.ts";
import { jobDeps } from "../deps.ts";
import type { AppEnv } from "../http.ts";

const timestamp = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?)?Z?$/, "a UTC timestamp");

export const retryRequest = component(
  "RetryRequest",
  z.union([
    z.strictObject({ job_ids: z.array(z.uuid()).min(1).max(100) }),
    z
      .strictObject({
        error_prefix: z.string().max(1000).default(""),
        created_after: timestamp.optional(),
        created_before: timestamp.optional(),
        limit: z.number().int().min(1).max(1000).default(100),
      })
      .refine(
        (filter) =>
          filter.error_prefix !== "" ||
          filter.created_after !== undefined ||
          filter.created_before !== undefined,
        { message: "give job_ids, or at least one of error_prefix, created_after, created_before" },
      ),
  ]),
);

const RetryResult = component(
  "RetryResult",
  z.object({ retried: z.number().int(), job_ids: z.array(z.string()) }),
);

export const retryErrorJobsRoute = createRoute({
  method: "post",
  path: "/admin/jobs/retry",
  operationId: "retryErrorJobs",
  summary:
    "Put error jobs back to pending (retry_count 0, a fresh attempt), by ids or by a filter; " +
    "cancelled jobs and jobs that are not error are skipped",
  tags: ["operators"],
  ...auth("adminToken"),
  request: { body: jsonBody(retryRequest) },
  responses: {
    202: reply("what was retried and re-enqueued", RetryResult),
    ...errorReplies("adminToken", JSON_BODY_ERRORS),
  },
});

/** D1's text form of a timestamp: "YYYY-MM-DD HH:MM:SS.SSS". */
const asStored = (value: string) => value.replace("T", " ").replace(/Z$/, "");

export const retryErrorJobs: RouteHandler<typeof retryErrorJobsRoute, AppEnv> = async (c) => {
  const request = c.req.valid("json");
  const rows = await retryJobs(
    jobDeps(c),
    "job_ids" in request
      ? { ids: [...new Set(request.job_ids)] }
      : {
          errorPrefix: request.error_prefix,
          createdAfter: request.created_after ? asStored(request.created_after) : "",
          createdBefore: request.created_before ? asStored(request.created_before) : "9999-12-31",
          limit: request.limit,
        },
  );
  return c.json({ retried: rows.length, job_ids: rows.map((row) => row.id) }, 202);
};
