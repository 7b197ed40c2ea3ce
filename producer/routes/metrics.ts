import { createRoute, type RouteHandler, z } from "@hono/zod-openapi";
import { readStatsAndTotals } from "../../shared/sql/stats.ts";
import { auth, errorReplies } from "../api.ts";
import type { AppEnv } from "../http.ts";
import { METRICS_CONTENT_TYPE, renderMetrics } from "../prometheus.ts";
import { dispatchByEndpoint } from "./stats.ts";

export const metricsRoute = createRoute({
  method: "get",
  path: "/metrics",
  operationId: "metrics",
  summary:
    "Prometheus text exposition (0.0.4) of what /stats reports, per endpoint and lane, plus " +
    "GPU seconds and notify failures counters; reads a few rows (no scan)",
  tags: ["operators"],
  ...auth("adminToken"),
  responses: {
    200: {
      description: "the metrics",
      content: {
        "text/plain": {
          schema: z.string().openapi({ description: "the Prometheus text exposition format" }),
        },
      },
    },
    ...errorReplies("adminToken", {}),
  },
});

/** `GET /metrics` (ADMIN_TOKEN): text/plain; version=0.0.4. */
export const metrics: RouteHandler<typeof metricsRoute, AppEnv> = async (c) => {
  const [{ stats, totals }, gates] = await Promise.all([
    readStatsAndTotals(c.env.DB),
    dispatchByEndpoint(c),
  ]);
  return c.text(renderMetrics(stats, totals, gates.byEndpoint), 200, {
    "Content-Type": METRICS_CONTENT_TYPE,
    "Cache-Control": "no-store",
  });
};
