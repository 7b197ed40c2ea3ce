import * as repo from "../../shared/job-repository.ts";
import { toJob } from "../../shared/job-repository.ts";
import { log } from "../../shared/log.ts";
import { createExportRequest } from "../../shared/schemas.ts";
import { type AppContext, apiError, readJsonBody } from "../http.ts";

/**
 * `POST /exports`: validate, check the input exists in R2, insert the `pending` row, then send
 * `{"job_id"}`. Nothing is written or sent before every check has passed.
 */
export async function createExport(c: AppContext): Promise<Response> {
  const body = await readJsonBody(c, createExportRequest);
  if (!body.ok) return body.response;
  const request = body.value;

  const input = await c.env.VIDEOS.head(request.input_video_key);
  if (!input) {
    return apiError(
      c,
      422,
      "input_not_found",
      `no object at input_video_key ${JSON.stringify(request.input_video_key)}`,
    );
  }

  const row = await repo.insertJob(c.env.DB, { id: crypto.randomUUID(), ...request });
  if (!row) throw new Error("insert returned no row");
  try {
    await c.env.EXPORT_QUEUE.send({ job_id: row.id });
  } catch (error) {
    // The row is the truth: the reconciler re-enqueues pending jobs whose message was lost, so
    // the job is accepted rather than failing a request whose retry would create a second job.
    log("error", "enqueue failed after insert", { job_id: row.id, error: String(error) });
  }
  c.header("Location", `/exports/${row.id}`);
  return c.json({ job: toJob(row) }, 202);
}
