// Live status: `POST /live-tickets` mints a short-lived signed ticket (shared/live-ticket.ts) and
// `GET /live?ticket=…` upgrades to a WebSocket held by a live-status Durable Object
// (shared/live-hub.ts): a snapshot first, then every change of the ticket's jobs.

import { createRoute, type RouteHandler, z } from "@hono/zod-openapi";
import type { MiddlewareHandler } from "hono";
import { signingKey } from "../../shared/keys.ts";
import { LIVE_SOCKET_HEADER, liveRoomFor } from "../../shared/live-keys.ts";
import { type LiveScope, mintTicket, readTicket } from "../../shared/live-ticket.ts";
import { log } from "../../shared/log.ts";
import { liveTicketTtlSeconds } from "../../shared/settings.ts";
import {
  auth,
  errorReplies,
  JSON_BODY_ERRORS,
  jsonBody,
  projectNotAllowed,
  projectsOf,
  queryParam,
  reply,
} from "../api.ts";
import { LiveTicket, LiveTicketRequest } from "../api-schemas.ts";
import { type AppContext, type AppEnv, apiError } from "../http.ts";

const notConfigured = (c: AppContext) =>
  apiError(c, 500, "not_configured", "WEBHOOK_SECRET is not set on this Worker");

export const createLiveTicketRoute = createRoute({
  method: "post",
  path: "/live-tickets",
  operationId: "createLiveTicket",
  summary:
    "Mint a live-status ticket for GET /live: `project_ids` with any token (a scoped token: " +
    "its own projects), `all_projects` (operators) with the ADMIN_TOKEN only; good for " +
    "LIVE_TICKET_TTL_S (60 s)",
  tags: ["live"],
  // The dashboard, which holds only ADMIN_TOKEN, mints operators' tickets.
  ...auth("anyToken"),
  request: { body: jsonBody(LiveTicketRequest) },
  responses: {
    201: reply("the signed ticket", LiveTicket),
    ...errorReplies("anyToken", { ...JSON_BODY_ERRORS, 403: ["project_not_allowed"] }),
  },
});

/** `POST /live-tickets` (API_TOKEN, or ADMIN_TOKEN for `{"all_projects": true}`) → 201. */
export const createLiveTicket: RouteHandler<typeof createLiveTicketRoute, AppEnv> = async (c) => {
  const request = c.req.valid("json");
  if ("all_projects" in request && c.get("token") !== "ADMIN_TOKEN") {
    c.header("WWW-Authenticate", 'Bearer realm="reel-exports"');
    return apiError(c, 401, "unauthorized", "a ticket for all projects needs the ADMIN_TOKEN");
  }
  const allowed = projectsOf(c);
  if (allowed !== null && "project_ids" in request) {
    const outside = request.project_ids.filter((id) => !allowed.includes(id));
    if (outside.length > 0) return projectNotAllowed(c, outside);
  }
  const key = signingKey(c.env, "live-ticket");
  if (!key) return notConfigured(c);
  const scope: LiveScope =
    "all_projects" in request ? { all: true } : { all: false, projectIds: request.project_ids };
  const expiresAt = Date.now() + liveTicketTtlSeconds(c.env) * 1000;
  const ticket = await mintTicket(await key, scope, expiresAt);
  return c.json({ ticket, expires_at: new Date(expiresAt).toISOString() }, 201);
};

/** The ticket of `?ticket=`, verified: 401 bad_ticket when it is missing, forged or expired. */
const ticketAuth: MiddlewareHandler<AppEnv> = async (c, next) => {
  if (!c.env.WEBHOOK_SECRET) return notConfigured(c);
  const ticket = await readTicket(c.env, c.req.query("ticket") ?? "", Date.now());
  if (!ticket) {
    return apiError(c, 401, "bad_ticket", "the ticket is missing, not valid or expired");
  }
  c.set("ticket", ticket);
  await next();
};

export const openLiveRoute = createRoute({
  method: "get",
  path: "/live",
  operationId: "openLive",
  summary:
    "Upgrades to a WebSocket (101 Switching Protocols) carrying LiveMessage text frames: a " +
    "snapshot of the ticket's jobs, then every change of them; `ping` answers `pong`",
  tags: ["live"],
  ...auth("liveTicket", ticketAuth),
  request: {
    query: z.object({
      ticket: queryParam(
        z
          .string()
          .min(1)
          .openapi({ description: "`ticket` of POST /live-tickets, before its `expires_at`" }),
      ),
    }),
  },
  responses: {
    101: {
      description:
        "Switching Protocols: the WebSocket (frames: LiveMessage). Reconnect with a fresh " +
        "ticket when it closes; the new snapshot replaces what was missed.",
    },
    ...errorReplies("liveTicket", { 426: ["upgrade_required"], 503: ["live_unavailable"] }),
  },
});

/** `GET /live?ticket=…`: 101 and the socket; 401 bad_ticket; 426 without a WebSocket upgrade. */
export const openLive: RouteHandler<typeof openLiveRoute, AppEnv> = async (c) => {
  if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
    c.header("Upgrade", "websocket");
    return apiError(
      c,
      426,
      "upgrade_required",
      "GET /live is a WebSocket: send Upgrade: websocket",
    );
  }
  const { room, info } = liveRoomFor(c.env, c.get("ticket"));
  try {
    return await room.fetch(
      new Request("https://live.internal/connect", {
        headers: { Upgrade: "websocket", [LIVE_SOCKET_HEADER]: JSON.stringify(info) },
      }),
    );
  } catch (error) {
    // The live-status object cannot be reached (its Worker is restarting): the client retries.
    log("warn", "live status unreachable", { error: String(error) });
    c.header("Retry-After", "5");
    return apiError(c, 503, "live_unavailable", "live status is unavailable; retry shortly");
  }
};
