// `POST /exports/batch`: 1 to 100 exports in one request ("export every clip of this game"). All or
// nothing: every item is validated, checked (scope, input prefix, Idempotency-Key, rate, input in
// R2) before anything is written; the new jobs go in one D1 batch (one transaction, the quota
// checked for the whole of it) and their messages in one sendBatch. An item's `idempotency_key`
// behaves as the Idempotency-Key header of POST /exports: a repeat answers the first job.
import { createRoute, type RouteHandler } from "@hono/zod-openapi";
import { fairKeyOf } from "../../shared/fair-queue.ts";
import { createJobs } from "../../shared/job-state.ts";
import type { CreateExportRequest as Request } from "../../shared/schemas.ts";
import type { NewJob } from "../../shared/sql/jobs/insert.ts";
import { findJobsByIdempotencyKeys } from "../../shared/sql/jobs/reads.ts";
import { type Job, type JobRow, toJob } from "../../shared/sql/jobs/row.ts";
import {
  auth,
  errorReplies,
  JSON_BODY_ERRORS,
  jsonBody,
  projectNotAllowed,
  reply,
} from "../api.ts";
import { BatchCreateRequest, JobList } from "../api-schemas.ts";
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
import { type ApiIssue, type AppContext, type AppEnv, apiError } from "../http.ts";
import { withQueue } from "../queue.ts";

export const createBatchRoute = createRoute({
  method: "post",
  path: "/exports/batch",
  operationId: "createExportBatch",
  summary:
    "Create 1 to 100 export jobs in one request, all or nothing (one D1 transaction, one " +
    "queue sendBatch); each item may carry an idempotency_key",
  tags: ["exports"],
  ...auth("frontend"),
  request: { body: jsonBody(BatchCreateRequest) },
  responses: {
    202: reply("the jobs, in the order of the request's items", JobList),
    ...errorReplies("frontend", {
      ...JSON_BODY_ERRORS,
      400: [...JSON_BODY_ERRORS[400], "input_key_outside_project"],
      403: ["project_not_allowed"],
      422: ["input_not_found", "idempotency_key_reused"],
      429: ["quota_exceeded", "rate_limited"],
    }),
  },
});

/** Heads of distinct input keys at a time. */
const HEAD_CONCURRENCY = 8;

/** An item's place in the request, for `issues` paths. */
const at = (index: number, ...rest: (string | number)[]) => ["exports", index, ...rest];

interface Item {
  index: number;
  request: Request;
  key: string | undefined;
  hash: string | null;
}

export const createBatch: RouteHandler<typeof createBatchRoute, AppEnv> = async (c) => {
  const { exports: bodies } = c.req.valid("json");

  // 1. Who may make each item, and where its input must be.
  const items: Item[] = [];
  const outside: number[] = [];
  const prefixIssues: ApiIssue[] = [];
  for (const [index, { idempotency_key: key, ...body }] of bodies.entries()) {
    const request = asCaller(c, body);
    if (!request) {
      outside.push(body.project_id);
      continue;
    }
    const prefix = missingPrefix(c, request);
    if (prefix !== null) {
      prefixIssues.push({
        path: at(index, "input_video_key"),
        message: `must start with ${prefix}`,
      });
    }
    items.push({
      index,
      request,
      key,
      hash: key === undefined ? null : await requestHash(request),
    });
  }
  if (outside.length > 0) return projectNotAllowed(c, [...new Set(outside)]);
  if (prefixIssues.length > 0) {
    return apiError(
      c,
      400,
      "input_key_outside_project",
      "input_video_key lies outside its project's prefix",
      prefixIssues,
    );
  }

  // 2. Idempotency keys: unique within the batch; a key used before answers its job (same body)
  //    or refuses the batch (another body). Supersede keys: unique within the batch too.
  const seen = new Map<string, number>();
  const duplicates: ApiIssue[] = [];
  for (const item of items) {
    if (item.key === undefined) continue;
    const pair = JSON.stringify([item.request.project_id, item.key]);
    if (seen.has(pair)) {
      duplicates.push({
        path: at(item.index, "idempotency_key"),
        message: `the same idempotency_key as item ${seen.get(pair)} of this project`,
        code: "duplicate",
      });
    } else seen.set(pair, item.index);
  }
  // …and so are supersede keys: an item would end another of its own batch.
  const superseding = new Map<string, number>();
  for (const item of items) {
    if (item.request.supersede_key === undefined) continue;
    const pair = JSON.stringify([item.request.project_id, item.request.supersede_key]);
    if (superseding.has(pair)) {
      duplicates.push({
        path: at(item.index, "supersede_key"),
        message: `the same supersede_key as item ${superseding.get(pair)} of this project`,
        code: "duplicate",
      });
    } else superseding.set(pair, item.index);
  }
  if (duplicates.length > 0) {
    return apiError(c, 400, "invalid_request", "the body is not valid", duplicates);
  }
  const existing = await findJobsByIdempotencyKeys(
    c.env.DB,
    items.flatMap((item) =>
      item.key === undefined ? [] : [[item.request.project_id, item.key] as const],
    ),
  );
  const byPair = new Map(
    existing.map((row) => [JSON.stringify([row.project_id, row.idempotency_key]), row]),
  );
  const repeatOf = (item: Item) =>
    item.key === undefined
      ? undefined
      : byPair.get(JSON.stringify([item.request.project_id, item.key]));
  const reused = items.filter((item) => {
    const first = repeatOf(item);
    return first !== undefined && first.request_hash !== item.hash;
  });
  if (reused.length > 0) {
    return apiError(
      c,
      422,
      "idempotency_key_reused",
      "an idempotency_key was used for a different request body",
      reused.map((item) => ({
        path: at(item.index, "idempotency_key"),
        message: "used before with a different body",
      })),
    );
  }
  const fresh = items.filter((item) => repeatOf(item) === undefined);

  // 3. The rate limiter counts each new item against its fairness key.
  const limited = await Promise.all(
    fresh.map((item) => underRateLimit(c, fairKeyOf(keyOf(item.request)))),
  );
  if (limited.includes(false)) {
    c.header("Retry-After", String(LIMITER_PERIOD_S));
    return apiError(
      c,
      429,
      "rate_limited",
      "too many exports created for a fairness key in the last minute; nothing was created",
    );
  }

  // 4. Every new item's input exists (each distinct key looked up once).
  const etags = await headInputs(c, [
    ...new Set(fresh.map((item) => item.request.input_video_key)),
  ]);
  const missing = fresh.filter((item) => !etags.has(item.request.input_video_key));
  if (missing.length > 0) {
    return apiError(
      c,
      422,
      "input_not_found",
      "no R2 object at an item's input_video_key",
      missing.map((item) => ({
        path: at(item.index, "input_video_key"),
        message: `no object at ${JSON.stringify(item.request.input_video_key)}`,
      })),
    );
  }

  // 5. One transaction for the new jobs, the quota checked for all of them.
  const newJobs: NewJob[] = await Promise.all(
    fresh.map((item) =>
      newJobOf(
        c,
        item.request,
        etags.get(item.request.input_video_key) as string,
        item.key !== undefined && item.hash !== null
          ? { key: item.key, requestHash: item.hash }
          : undefined,
      ),
    ),
  );
  // The quota is the batch's own check (all of it at once); its inserts need none of their own.
  const maxActive = newJobs[0]?.max_active ?? 0;
  const rows =
    newJobs.length === 0
      ? []
      : await createJobs(
          jobDepsWithRunpod(c),
          newJobs.map((job) => ({ ...job, max_active: 0 })),
          maxActive,
        );
  if (rows === "quota_exceeded") {
    c.header("Retry-After", String(QUOTA_RETRY_AFTER_S));
    return apiError(
      c,
      429,
      "quota_exceeded",
      `the batch would pass MAX_ACTIVE_PER_USER (${maxActive}) for a fairness key; nothing was ` +
        "created",
    );
  }

  // 6. Answers in request order: new jobs (enqueued in one sendBatch), repeats as they are (a
  //    repeat of a job never sent is enqueued with them), and an item whose key another request
  //    took meanwhile as that request's job.
  const inserted = new Map<number, JobRow>();
  const raced: Item[] = [];
  fresh.forEach((item, i) => {
    const row = rows[i];
    if (row) inserted.set(item.index, row);
    else raced.push(item);
  });
  for (const row of await findJobsByIdempotencyKeys(
    c.env.DB,
    raced.map((item) => [item.request.project_id, item.key ?? ""] as const),
  )) {
    byPair.set(JSON.stringify([row.project_id, row.idempotency_key]), row);
  }
  const repeats = items.filter((item) => !inserted.has(item.index));
  const unsent = new Set<string>();
  for (const item of repeats) {
    const first = repeatOf(item);
    if (!first) throw new Error("a batch item has neither a new job nor a first one");
    if (!raced.includes(item) && (await neverSent(c, first))) unsent.add(first.id);
  }
  const toSend = [
    ...inserted.values(),
    ...existingRows(repeats, repeatOf).filter((row) => unsent.has(row.id)),
  ];
  const answered = new Map<string, Job>((await enqueueNew(c, toSend)).map((job) => [job.id, job]));
  const others = existingRows(repeats, repeatOf).filter((row) => !answered.has(row.id));
  for (const job of await withQueue(c.env, others.map(toJob))) answered.set(job.id, job);
  const jobs = items.map((item) => {
    const row = inserted.get(item.index) ?? repeatOf(item);
    const job = row && answered.get(row.id);
    if (!job) throw new Error("a batch item has no job to answer");
    return job;
  });
  return c.json({ jobs }, 202);
};

const keyOf = (request: Request) => ({
  user_id: request.user_id ?? null,
  project_id: request.project_id,
});

function existingRows(items: Item[], repeatOf: (item: Item) => JobRow | undefined): JobRow[] {
  const rows = new Map<string, JobRow>();
  for (const item of items) {
    const row = repeatOf(item);
    if (row) rows.set(row.id, row);
  }
  return [...rows.values()];
}

/** The R2 ETag of each input key that exists, looked up a few at a time. */
async function headInputs(c: AppContext, keys: string[]): Promise<Map<string, string>> {
  const etags = new Map<string, string>();
  for (let i = 0; i < keys.length; i += HEAD_CONCURRENCY) {
    await Promise.all(
      keys.slice(i, i + HEAD_CONCURRENCY).map(async (key) => {
        const head = await c.env.VIDEOS.head(key);
        if (head) etags.set(key, head.etag);
      }),
    );
  }
  return etags;
}
