import { readArchivedJob } from "../../shared/archive.ts";
import * as repo from "../../shared/sql/jobs/reads.ts";
import { toJob } from "../../shared/sql/jobs/row.ts";
import { type AppContext, apiError } from "../http.ts";

/** `GET /exports/{id}`: from D1, else from its archive in R2 (`"archived": true`). */
export async function getExport(c: AppContext): Promise<Response> {
  const id = c.req.param("id") ?? "";
  const row = await repo.getJob(c.env.DB, id);
  if (row) return c.json({ job: toJob(row) });
  const archived = await readArchivedJob(c.env.VIDEOS, id);
  if (!archived) return apiError(c, 404, "not_found", "no such export job");
  return c.json({ job: archived.job });
}
