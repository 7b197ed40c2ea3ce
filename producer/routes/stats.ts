import { createRoute, type RouteHandler } from "@hono/zod-openapi";
import type { DispatchStatus } from "../../shared/dispatcher.ts";
import { log } from "../../shared/log.ts";
import { runpodSettings } from "../../shared/settings.ts";
import { readStats } from "../../shared/sql/stats.ts";
import { auth, errorReplies, reply } from "../api.ts";
import { StatsSchema } from "../api-schemas.ts";
import type { AppEnv } from "../http.ts";

export const statsRoute = createRoute({
  method: "get",
  path: "/stats",
  operationId: "stats",
  summary:
    "Jobs by status, oldest pending age, processing without a run, dead letters, jobs archived",
  tags: ["operators"],
  ...auth("adminToken"),
  responses: { 200: reply("the counts", StatsSchema), ...errorReplies("adminToken", {}) },
});

/**
 * `GET /stats`: jobs by status (from the trigger-kept counts), oldest pending age, processing
 * without a run, dead letters, and the dispatch gate of this RunPod endpoint.
 */
export const stats: RouteHandler<typeof statsRoute, AppEnv> = async (c) => {
  const endpoint = runpodSettings(c.env).endpointId;
  const gate = c.env.DISPATCHER.get(c.env.DISPATCHER.idFromName(endpoint));
  const [counts, dispatch] = await Promise.all([
    readStats(c.env.DB),
    gate.status().catch((error: unknown): DispatchStatus | null => {
      log("warn", "dispatch gate status unavailable", { error: String(error) });
      return null;
    }),
  ]);
  return c.json({ ...counts, dispatch }, 200);
};
