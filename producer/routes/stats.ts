import * as repo from "../../shared/job-repository.ts";
import type { AppContext } from "../http.ts";

/** `GET /stats`: jobs by status, oldest pending age, processing without a run, dead letters. */
export async function stats(c: AppContext): Promise<Response> {
  return c.json(await repo.readStats(c.env.DB));
}
