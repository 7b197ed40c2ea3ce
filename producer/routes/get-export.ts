import * as repo from "../../shared/sql/jobs.ts";
import { toJob } from "../../shared/sql/jobs.ts";
import { type AppContext, apiError } from "../http.ts";

/** `GET /exports/{id}`. */
export async function getExport(c: AppContext): Promise<Response> {
  const row = await repo.getJob(c.env.DB, c.req.param("id") ?? "");
  if (!row) return apiError(c, 404, "not_found", "no such export job");
  return c.json({ job: toJob(row) });
}
