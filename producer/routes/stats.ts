import type { DispatchStatus } from "../../shared/dispatcher.ts";
import { log } from "../../shared/log.ts";
import { runpodSettings } from "../../shared/settings.ts";
import { readStats } from "../../shared/sql/stats.ts";
import type { AppContext } from "../http.ts";

/**
 * `GET /stats`: jobs by status (from the trigger-kept counts), oldest pending age, processing
 * without a run, dead letters, and the dispatch gate of this RunPod endpoint.
 */
export async function stats(c: AppContext): Promise<Response> {
  const endpoint = runpodSettings(c.env).endpointId;
  const gate = c.env.DISPATCHER.get(c.env.DISPATCHER.idFromName(endpoint));
  const [counts, dispatch] = await Promise.all([
    readStats(c.env.DB),
    gate.status().catch((error: unknown): DispatchStatus | null => {
      log("warn", "dispatch gate status unavailable", { error: String(error) });
      return null;
    }),
  ]);
  return c.json({ ...counts, dispatch });
}
