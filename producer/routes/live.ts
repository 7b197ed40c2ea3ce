// Live status: `POST /live-tickets` mints a short-lived signed ticket (shared/live-ticket.ts) and
// `GET /live?ticket=…` upgrades to a WebSocket held by a live-status Durable Object
// (shared/live-hub.ts): a snapshot first, then every change of the ticket's jobs.

import { LIVE_SOCKET_HEADER, liveRoomFor } from "../../shared/live-hub.ts";
import {
  type LiveScope,
  liveTicketRequest,
  mintTicket,
  readTicket,
} from "../../shared/live-ticket.ts";
import { log } from "../../shared/log.ts";
import { liveTicketTtlSeconds } from "../../shared/settings.ts";
import { type AppContext, apiError, readJsonBody } from "../http.ts";

function secretOf(c: AppContext): string | Response {
  const secret = c.env.WEBHOOK_SECRET;
  return secret || apiError(c, 500, "not_configured", "WEBHOOK_SECRET is not set on this Worker");
}

/** `POST /live-tickets` (API_TOKEN, or ADMIN_TOKEN for `{"all_projects": true}`) → 201. */
export async function createLiveTicket(c: AppContext): Promise<Response> {
  const body = await readJsonBody(c, liveTicketRequest);
  if (!body.ok) return body.response;
  if ("all_projects" in body.value && c.get("token") !== "ADMIN_TOKEN") {
    c.header("WWW-Authenticate", 'Bearer realm="reel-exports"');
    return apiError(c, 401, "unauthorized", "a ticket for all projects needs the ADMIN_TOKEN");
  }
  const secret = secretOf(c);
  if (typeof secret !== "string") return secret;
  const scope: LiveScope =
    "all_projects" in body.value
      ? { all: true }
      : { all: false, projectIds: body.value.project_ids };
  const expiresAt = Date.now() + liveTicketTtlSeconds(c.env) * 1000;
  const ticket = await mintTicket(secret, scope, expiresAt);
  return c.json({ ticket, expires_at: new Date(expiresAt).toISOString() }, 201);
}

/** `GET /live?ticket=…`: 101 and the socket; 401 bad_ticket; 426 without a WebSocket upgrade. */
export async function openLive(c: AppContext): Promise<Response> {
  const secret = secretOf(c);
  if (typeof secret !== "string") return secret;
  const ticket = await readTicket(secret, c.req.query("ticket") ?? "", Date.now());
  if (!ticket) {
    return apiError(c, 401, "bad_ticket", "the ticket is missing, not valid or expired");
  }
  if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
    c.header("Upgrade", "websocket");
    return apiError(
      c,
      426,
      "upgrade_required",
      "GET /live is a WebSocket: send Upgrade: websocket",
    );
  }
  const { room, info } = liveRoomFor(c.env, ticket);
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
}
