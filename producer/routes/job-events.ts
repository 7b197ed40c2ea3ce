import { listEvents } from "../../shared/sql/events.ts";
import { getJob } from "../../shared/sql/jobs.ts";
import { type AppContext, apiError } from "../http.ts";

/** `GET /exports/{id}/events`: the job's timeline, oldest first. */
export async function getExportEvents(c: AppContext): Promise<Response> {
  const id = c.req.param("id") ?? "";
  const [job, events] = await Promise.all([getJob(c.env.DB, id), listEvents(c.env.DB, id)]);
  if (!job) return apiError(c, 404, "not_found", "no such export job");
  return c.json({ events });
}
