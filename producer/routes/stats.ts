import { createRoute, type RouteHandler } from "@hono/zod-openapi";
import type { DispatchStatus } from "../../shared/dispatcher.ts";
import { log } from "../../shared/log.ts";
import { allEndpoints, endpointRoutes, runpodSettings } from "../../shared/settings.ts";
import { readStats } from "../../shared/sql/stats.ts";
import { auth, errorReplies, reply } from "../api.ts";
import { StatsSchema } from "../api-schemas.ts";
import type { AppContext, AppEnv } from "../http.ts";

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
 * without a run, dead letters, and the dispatch gate of RUNPOD_ENDPOINT_ID (`dispatch`) and of
 * every endpoint RUNPOD_ENDPOINTS names (`dispatch_by_endpoint`).
 */
export const stats: RouteHandler<typeof statsRoute, AppEnv> = async (c) => {
  const [counts, gates] = await Promise.all([readStats(c.env.DB), dispatchByEndpoint(c)]);
  return c.json(
    {
      ...counts,
      dispatch: gates.byEndpoint[gates.primary] ?? null,
      dispatch_by_endpoint: gates.byEndpoint,
    },
    200,
  );
};

/**
 * The dispatch gate of every endpoint (RUNPOD_ENDPOINT_ID and those RUNPOD_ENDPOINTS names), asked
 * of their dispatchers at once; null for one that cannot answer now.
 */
export async function dispatchByEndpoint(
  c: AppContext,
): Promise<{ primary: string; byEndpoint: Record<string, DispatchStatus | null> }> {
  const primary = runpodSettings(c.env).endpointId;
  const endpoints = allEndpoints(endpointRoutes(c.env), primary);
  const status = (id: string) =>
    c.env.DISPATCHER.get(c.env.DISPATCHER.idFromName(id))
      .status()
      .catch((error: unknown): DispatchStatus | null => {
        log("warn", "dispatch gate status unavailable", { endpoint: id, error: String(error) });
        return null;
      });
  const gates = await Promise.all(endpoints.map(status));
  return {
    primary,
    byEndpoint: Object.fromEntries(endpoints.map((id, i) => [id, gates[i] ?? null])),
  };
}
