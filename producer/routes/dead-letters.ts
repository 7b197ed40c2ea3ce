// Operators' view of the dead-letter queue (bearer ADMIN_TOKEN).
import { z } from "zod";
import { replayDeadLetter as replay } from "../../shared/job-state.ts";
import type { DeadLetterRow } from "../../shared/sql/dead-letters.ts";
import * as repo from "../../shared/sql/dead-letters.ts";
import { getJob } from "../../shared/sql/jobs/reads.ts";
import { toJob } from "../../shared/sql/jobs/row.ts";
import { readCursor, toPage } from "../cursor.ts";
import { jobDeps } from "../deps.ts";
import { type AppContext, apiError, badCursor, zodIssues } from "../http.ts";

/** The row with `body` parsed back when it is JSON (it is stored as received). */
function toDeadLetter(row: DeadLetterRow) {
  let body: unknown = row.body;
  try {
    body = JSON.parse(row.body);
  } catch {}
  return { ...row, body };
}

export const pageQuery = z.object({
  limit: z.coerce.number().int().min(1).max(100).default(20),
  cursor: z.string().min(1).optional(),
});

/** `GET /dead-letters?limit=&cursor=`: newest first. */
export async function listDeadLetters(c: AppContext): Promise<Response> {
  const parsed = pageQuery.safeParse({
    limit: c.req.query("limit"),
    cursor: c.req.query("cursor"),
  });
  if (!parsed.success) {
    return apiError(c, 400, "invalid_request", "the query is not valid", zodIssues(parsed.error));
  }
  const { limit } = parsed.data;
  const cursor = readCursor(parsed.data.cursor, () => badCursor(c));
  if ("response" in cursor) return cursor.response;
  const rows = await repo.listDeadLetters(c.env.DB, limit, cursor.after);
  const page = toPage(rows, limit, (row) => ({ created_at: row.received_at, id: row.id }));
  return c.json({ dead_letters: page.items.map(toDeadLetter), next_cursor: page.next_cursor });
}

/** `GET /dead-letters/{id}`: the dead letter and its job (null when it names none). */
export async function getDeadLetter(c: AppContext): Promise<Response> {
  const row = await repo.getDeadLetter(c.env.DB, c.req.param("id") ?? "");
  if (!row) return apiError(c, 404, "not_found", "no such dead letter");
  const job = row.job_id ? await getJob(c.env.DB, row.job_id) : null;
  return c.json({ dead_letter: toDeadLetter(row), job: job ? toJob(job) : null });
}

/**
 * `POST /dead-letters/{id}/replay`: the job goes back to `pending` with its retry budget restored
 * and is re-enqueued; the dead letter is marked replayed. 409 when that cannot be done.
 */
export async function replayDeadLetter(c: AppContext): Promise<Response> {
  const id = c.req.param("id") ?? "";
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
}

/** `DELETE /dead-letters/{id}` → 204. */
export async function deleteDeadLetter(c: AppContext): Promise<Response> {
  const deleted = await repo.deleteDeadLetter(c.env.DB, c.req.param("id") ?? "");
  if (!deleted) return apiError(c, 404, "not_found", "no such dead letter");
  return c.body(null, 204);
}
