import { readArchivedJob } from "../../shared/archive.ts";
import { listJobEvents } from "../../shared/sql/events.ts";
import { type AppContext, apiError } from "../http.ts";

/** `GET /exports/{id}/events`: the job's timeline, oldest first; an archived job's from R2. */
export async function getExportEvents(c: AppContext): Promise<Response> {
  const id = c.req.param("id") ?? "";
  const events =
    (await listJobEvents(c.env.DB, id)) ?? (await readArchivedJob(c.env.VIDEOS, id))?.events;
  if (!events) return apiError(c, 404, "not_found", "no such export job");
  return c.json({ events });
}
