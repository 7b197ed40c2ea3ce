// Operators' view of the dead-letter queue (bearer ADMIN_TOKEN).
import { createRoute, type RouteHandler } from "@hono/zod-openapi";
import { replayDeadLetter as replay } from "../../shared/job-state.ts";
import type { DeadLetterRow } from "../../shared/sql/dead-letters.ts";
import * as repo from "../../shared/sql/dead-letters.ts";
import { getJob } from "../../shared/sql/jobs/reads.ts";
import { toJob } from "../../shared/sql/jobs/row.ts";
import { auth, deadLetterIdParams, errorReplies, pageQuery, reply } from "../api.ts";
import { DeadLetterDetail, DeadLetterPage, DeadLetterReplay } from "../api-schemas.ts";
import { readCursor, toPage } from "../cursor.ts";
import { jobDeps } from "../deps.ts";
import { type AppEnv, apiError, badCursor } from "../http.ts";

/** The row with `body` parsed back when it is JSON (it is stored as received). */
function toDeadLetter(row: DeadLetterRow) {
  let body: unknown = row.body;
  try {
    body = JSON.parse(row.body);
  } catch {}
  return { ...row, body };
}

export const listDeadLettersRoute = createRoute({
  method: "get",
  path: "/dead-letters",
  operationId: "listDeadLetters",
  summary: "List dead letters, newest first",
  tags: ["operators"],
  ...auth("adminToken"),
  request: { query: pageQuery(20) },
  responses: {
    200: reply("one page", DeadLetterPage),
    ...errorReplies("adminToken", { 400: ["invalid_request"] }),
  },
});

/** `GET /dead-letters?limit=&cursor=`: newest first. */
export const listDeadLetters: RouteHandler<typeof listDeadLettersRoute, AppEnv> = async (c) => {
  const { limit, cursor: raw } = c.req.valid("query");
  const cursor = readCursor(raw);
  if (!cursor) return badCursor(c);
  const rows = await repo.listDeadLetters(c.env.DB, limit, cursor.after);
  const page = toPage(rows, limit, (row) => ({ created_at: row.received_at, id: row.id }));
  return c.json({ dead_letters: page.items.map(toDeadLetter), next_cursor: page.next_cursor }, 200);
};

export const getDeadLetterRoute = createRoute({
  method: "get",
  path: "/dead-letters/{id}",
  operationId: "getDeadLetter",
  summary: "Get a dead letter and its job",
  tags: ["operators"],
  ...auth("adminToken"),
  request: { params: deadLetterIdParams },
  responses: {
    200: reply("job is null when it names none", DeadLetterDetail),
    ...errorReplies("adminToken", { 404: ["not_found"] }),
  },
});

/** `GET /dead-letters/{id}`: the dead letter and its job (null when it names none). */
export const getDeadLetter: RouteHandler<typeof getDeadLetterRoute, AppEnv> = async (c) => {
  const row = await repo.getDeadLetter(c.env.DB, c.req.valid("param").id);
  if (!row) return apiError(c, 404, "not_found", "no such dead letter");
  const job = row.job_id ? await getJob(c.env.DB, row.job_id) : null;
  return c.json({ dead_letter: toDeadLetter(row), job: job ? toJob(job) : null }, 200);
};

export const replayDeadLetterRoute = createRoute({
  method: "post",
  path: "/dead-letters/{id}/replay",
  operationId: "replayDeadLetter",
  summary: "Replay: the job goes back to pending with its retry budget restored",
  tags: ["operators"],
  ...auth("adminToken"),
  request: { params: deadLetterIdParams },
  responses: {
    202: reply("replayed and re-enqueued", DeadLetterReplay),
    ...errorReplies("adminToken", {
      404: ["not_found"],
      409: ["already_replayed", "not_replayable", "job_complete", "job_active", "job_cancelled"],
    }),
  },
});

/**
 * `POST /dead-letters/{id}/replay`: the job goes back to `pending` with its retry budget restored
 * and is re-enqueued; the dead letter is marked replayed. 409 when that cannot be done.
 */
export const replayDeadLetter: RouteHandler<typeof replayDeadLetterRoute, AppEnv> = async (c) => {
  const { id } = c.req.valid("param");
  const replayed = await replay(jobDeps(c), id);
  if (!replayed) {
    const row = await repo.getDeadLetter(c.env.DB, id);
    if (!row) return apiError(c, 404, "not_found", "no such dead letter");
    if (row.replayed_at) {
      return apiError(c, 409, "already_replayed", `replayed at ${row.replayed_at}`);
    }
    const job = row.job_id ? await getJob(c.env.DB, row.job_id) : null;
    if (!job) return apiError(c, 409, "not_replayable", "the dead letter names no existing job");
    if (job.status === "complete") return apiError(c, 409, "job_complete", "the job completed");
    if (job.status === "error") {
      return apiError(c, 409, "job_cancelled", "the job was cancelled; it is never replayed");
    }
    return apiError(c, 409, "job_active", `the job is ${job.status}; it is still being worked on`);
  }
  return c.json({ dead_letter: toDeadLetter(replayed.deadLetter), job: toJob(replayed.job) }, 202);
};

export const deleteDeadLetterRoute = createRoute({
  method: "delete",
  path: "/dead-letters/{id}",
  operationId: "deleteDeadLetter",
  summary: "Delete a dead letter",
  tags: ["operators"],
  ...auth("adminToken"),
  request: { params: deadLetterIdParams },
  responses: {
    204: { description: "deleted" },
    ...errorReplies("adminToken", { 404: ["not_found"] }),
  },
});

/** `DELETE /dead-letters/{id}` → 204. */
export const deleteDeadLetter: RouteHandler<typeof deleteDeadLetterRoute, AppEnv> = async (c) => {
  const deleted = await repo.deleteDeadLetter(c.env.DB, c.req.valid("param").id);
  if (!deleted) return apiError(c, 404, "not_found", "no such dead letter");
  return c.body(null, 204);
};
