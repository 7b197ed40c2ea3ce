import type { RouteHandler } from "@hono/zod-openapi";
import { createRoute } from "@hono/zod-openapi";
import { auth, errorReplies, reply } from "../api.ts";
import { Health } from "../api-schemas.ts";
import type { AppEnv } from "../http.ts";

export const healthRoute = createRoute({
  method: "get",
  path: "/health",
  operationId: "health",
  summary: "Liveness (no D1 round trip)",
  tags: ["meta"],
  ...auth("none"),
  responses: { 200: reply("alive", Health), ...errorReplies("none", {}) },
});

/** `GET /health`: liveness, no auth, no D1 round trip. */
export const health: RouteHandler<typeof healthRoute, AppEnv> = (c) =>
  c.json({ ok: true as const }, 200);
