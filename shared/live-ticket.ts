// Live-status tickets: `POST /live-tickets` mints one, `GET /live?ticket=…` spends it. A ticket is
// shared/keys.ts's `<kid>.<payload>.<sig>` under the `live-ticket` key derived from WEBHOOK_SECRET:
// the payload is base64url JSON {v, id, p: project ids | "all", exp: ms since the epoch}, checked
// in constant time, by the current secret's key or the previous one's. No state: a ticket is good
// until `exp` (LIVE_TICKET_TTL_S after minting).
import { z } from "zod";
import { mintSigned, readSigned, type Secrets, type SigningKey } from "./keys.ts";

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

/** A signed ticket for `scope`, good until `expiresAt` (ms), under the live-ticket `key`. */
export function mintTicket(
  key: SigningKey,
  scope: LiveScope,
  expiresAt: number,
  id: string = crypto.randomUUID(),
): Promise<string> {
  const p = scope.all ? "all" : [...new Set(scope.projectIds)];
  return mintSigned(key, { v: 1, id, p, exp: Math.floor(expiresAt) });
}

/** The ticket `text` names, or null when it is malformed, forged or expired at `now` (ms). */
export async function readTicket(
  env: Secrets,
  text: string,
  now: number,
): Promise<LiveTicket | null> {
  const parsed = payloadSchema.safeParse(
    await readSigned(env, "live-ticket", text, MAX_TICKET_CHARS),
  );
  if (!parsed.success || parsed.data.exp <= now) return null;
  const { id, p, exp } = parsed.data;
  return { id, scope: p === "all" ? { all: true } : { all: false, projectIds: p }, expiresAt: exp };
}
