// GET /usage (bearer ADMIN_TOKEN): exports, terminal transitions and GPU seconds per user or
// project over whole UTC days, from the per-day aggregates the database keeps as the events
// happen (migration 0010's usage_daily): one range of its primary key, no job read, and what it
// counts outlives archival.
import { createRoute, type RouteHandler, z } from "@hono/zod-openapi";
import { gpuPricePerS } from "../../shared/settings.ts";
import { readUsage } from "../../shared/sql/runs.ts";
import { auth, errorReplies, reply } from "../api.ts";
import { UsageSchema } from "../api-schemas.ts";
import { type AppEnv, apiError } from "../http.ts";

/** The longest window one call may ask for. */
export const USAGE_MAX_DAYS = 366;
/** Without `from`: the 30 days ending with `to`. */
const DEFAULT_DAYS = 30;
const DAY_MS = 86_400_000;

const day = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}$/, "must be a UTC day, YYYY-MM-DD")
  .refine((value) => {
    const ms = Date.parse(`${value}T00:00:00Z`);
    return !Number.isNaN(ms) && new Date(ms).toISOString().slice(0, 10) === value;
  }, "is not a calendar day");

export const usageRoute = createRoute({
  method: "get",
  path: "/usage",
  operationId: "getUsage",
  summary: "GPU seconds and exports per user or project",
  tags: ["operators"],
  ...auth("adminToken"),
  request: {
    query: z.object({
      group_by: z.enum(["user", "project"]).openapi({
        description: "user: jobs that name a user_id, by user; project: every job, by project",
      }),
      from: day.optional().openapi({
        description: `first UTC day (default: ${DEFAULT_DAYS - 1} days before \`to\`)`,
      }),
      to: day.optional().openapi({ description: "last UTC day, included (default: today)" }),
    }),
  },
  responses: {
    200: reply("one row per key with activity in the window", UsageSchema),
    ...errorReplies("adminToken", { 400: ["invalid_request"] }),
  },
});

const dayOf = (ms: number) => new Date(ms).toISOString().slice(0, 10);

export const getUsage: RouteHandler<typeof usageRoute, AppEnv> = async (c) => {
  const query = c.req.valid("query");
  const to = query.to ?? dayOf(Date.now());
  const toMs = Date.parse(`${to}T00:00:00Z`);
  const from = query.from ?? dayOf(toMs - (DEFAULT_DAYS - 1) * DAY_MS);
  const days = (toMs - Date.parse(`${from}T00:00:00Z`)) / DAY_MS + 1;
  if (days < 1 || days > USAGE_MAX_DAYS) {
    return apiError(
      c,
      400,
      "invalid_request",
      `from must be on or before to, at most ${USAGE_MAX_DAYS} days`,
      [{ path: ["from"], message: `from must be on or before to, at most ${USAGE_MAX_DAYS} days` }],
    );
  }
  const price = gpuPricePerS(c.env);
  const { rows } = await readUsage(c.env.DB, query.group_by, from, to);
  return c.json(
    {
      group_by: query.group_by,
      from,
      to,
      price_per_s: price,
      rows: rows.map((row) => ({
        key: row.key,
        exports: row.exports,
        complete: row.complete,
        error: row.error,
        gpu_seconds: row.gpu_ms / 1000,
        est_cost_usd: Math.round((row.gpu_ms / 1000) * price * 1e6) / 1e6,
      })),
    },
    200,
  );
};
