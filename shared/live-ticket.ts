// Live-status tickets: `POST /live-tickets` mints one, `GET /live?ticket=…` spends it. A ticket is
// `<payload>.<sig>`: the payload is base64url JSON {v, id, p: project ids | "all", exp: ms since
// the epoch}, sig the lowercase hex HMAC-SHA256 of "live:<payload>" keyed with WEBHOOK_SECRET
// (shared/signing.ts; the "live:" prefix keeps tickets and the signed RunPod URLs apart), checked
// in constant time. No state: a ticket is good until `exp` (LIVE_TICKET_TTL_S after minting).
import { z } from "zod";
import { signText, verifyText } from "../shared/signing.ts";
import { decodeBase64Url, encodeBase64Url } from "./base64url.ts";

export const MAX_TICKET_PROJECTS = 100;

const projectId = z.number().int().positive().max(Number.MAX_SAFE_INTEGER);
const projectIds = z.array(projectId).min(1).max(MAX_TICKET_PROJECTS);

/** `POST /live-tickets`: some projects (API_TOKEN), or every project (ADMIN_TOKEN). */
export const liveTicketRequest = z.union([
  z.strictObject({ project_ids: projectIds }),
  z.strictObject({ all_projects: z.literal(true) }),
]);

/** What a ticket's socket sees: the changes of some projects, or of all (operators). */
export type LiveScope = { all: true } | { all: false; projectIds: number[] };

export interface LiveTicket {
  /** Random; names the ticket's channel when it has several projects (shared/live-hub.ts). */
  id: string;
  scope: LiveScope;
  /** Milliseconds since the epoch. */
  expiresAt: number;
}

const payloadSchema = z.strictObject({
  v: z.literal(1),
  id: z.uuid(),
  p: z.union([z.literal("all"), projectIds]),
  exp: z.number().int().positive(),
});

/** Longer than any ticket this Worker mints (100 project ids of 16 digits are about 2.3 KB). */
const MAX_TICKET_CHARS = 4096;

const signedText = (payload: string) => `live:${payload}`;

/** A signed ticket for `scope`, good until `expiresAt` (ms). */
export async function mintTicket(
  secret: string,
  scope: LiveScope,
  expiresAt: number,
  id: string = crypto.randomUUID(),
): Promise<string> {
  const p = scope.all ? "all" : [...new Set(scope.projectIds)];
  const payload = encodeBase64Url(JSON.stringify({ v: 1, id, p, exp: Math.floor(expiresAt) }));
  return `${payload}.${await signText(secret, signedText(payload))}`;
}

/** The ticket `text` names, or null when it is malformed, forged or expired at `now` (ms). */
export async function readTicket(
  secret: string,
  text: string,
  now: number,
): Promise<LiveTicket | null> {
  if (text.length > MAX_TICKET_CHARS) return null;
  const match = /^([A-Za-z0-9_-]+)\.([0-9a-f]{64})$/.exec(text);
  const [, payload = "", sig = ""] = match ?? [];
  if (!match || !(await verifyText(secret, signedText(payload), sig))) return null;
  let data: unknown;
  try {
    data = JSON.parse(decodeBase64Url(payload));
  } catch {
    return null;
  }
  const parsed = payloadSchema.safeParse(data);
  if (!parsed.success || parsed.data.exp <= now) return null;
  const { id, p, exp } = parsed.data;
  return { id, scope: p === "all" ? { all: true } : { all: false, projectIds: p }, expiresAt: exp };
}
