import { createRoute, type RouteHandler } from "@hono/zod-openapi";
import { orArchived } from "../../shared/archive.ts";
import { listJobEvents } from "../../shared/sql/events.ts";
import { auth, errorReplies, jobIdParams, projectsOf, reply } from "../api.ts";
import { EventList } from "../api-schemas.ts";
import { type AppEnv, apiError } from "../http.ts";

// The dashboard, which holds only ADMIN_TOKEN, shows timelines too.
export const getExportEventsRoute = createRoute({
  method: "get",
  path: "/exports/{id}/events",
  operationId: "getExportEvents",
  summary:
    "A job's timeline, oldest first (API_TOKEN or a scoped token, or ADMIN_TOKEN for the dashboard)",
  tags: ["exports"],
  ...auth("anyToken"),
  request: { params: jobIdParams },
  responses: {
    200: reply("the events", EventList),
    ...errorReplies("anyToken", { 404: ["not_found"] }),
  },
});

/** `GET /exports/{id}/events`: the job's timeline, oldest first; an archived job's from R2. */
export const getExportEvents: RouteHandler<typeof getExportEventsRoute, AppEnv> = async (c) => {
  const { id } = c.req.valid("param");
  // A replica that has not the job yet: the primary before the archive (producer/d1-session.ts).
  const primary = c.var.primaryDb;
  const projects = projectsOf(c);
  const inD1 =
    (await listJobEvents(c.env.DB, id, projects)) ??
    (primary ? await listJobEvents(primary, id, projects) : null);
  const events = await orArchived(c.env.VIDEOS, id, inD1, (archived) => archived.events, projects);
  if (!events) return apiError(c, 404, "not_found", "no such export job");
  return c.json({ events }, 200);
};
