// Scoped client tokens: `POST /client-tokens` (API_TOKEN) mints one for a browser; as a bearer it
// opens the frontend's routes for its projects only. A token is shared/keys.ts's
// `<kid>.<payload>.<sig>` under the `client-token` key derived from WEBHOOK_SECRET: the payload is
// base64url JSON {v, p: project ids, u: user id | null, exp: ms since the epoch}. No state: a
// token is good until `exp` (at most CLIENT_TOKEN_MAX_TTL_S after minting), under the current
// secret or, while it is set, the previous one.
import { z } from "zod";
import { mintSigned, readSigned, type Secrets, type SigningKey } from "./keys.ts";

export const MAX_TOKEN_PROJECTS = 100;

const positiveId = z.number().int().positive().max(Number.MAX_SAFE_INTEGER);

/** `POST /client-tokens`: 1–100 projects, an optional user, a lifetime (checked against the max). */
export const clientTokenRequest = z.strictObject({
  project_ids: z.array(positiveId).min(1).max(MAX_TOKEN_PROJECTS),
  user_id: positiveId.optional(),
  ttl_s: z.number().int().positive().optional(),
});

/** What a client token allows: these projects, and (when it names one) jobs created as this user. */
export interface ClientScope {
  projectIds: number[];
  /** The `user_id` of every job the token creates; null: the request's own. */
  userId: number | null;
  /** Milliseconds since the epoch. */
  expiresAt: number;
}

const payloadSchema = z.strictObject({
  v: z.literal(1),
  p: z.array(positiveId).min(1).max(MAX_TOKEN_PROJECTS),
  u: positiveId.nullable(),
  exp: z.number().int().positive(),
});

/** Longer than any token this Worker mints (100 project ids of 16 digits are about 2.4 KB). */
const MAX_TOKEN_CHARS = 4096;

/** A signed token for `scope` under the client-token `key`. */
export function mintClientToken(key: SigningKey, scope: ClientScope): Promise<string> {
  return mintSigned(key, {
    v: 1,
    p: [...new Set(scope.projectIds)],
    u: scope.userId,
    exp: Math.floor(scope.expiresAt),
  });
}

/** The scope `text` grants, or null when it is malformed, forged or expired at `now` (ms). */
export async function readClientToken(
  env: Secrets,
  text: string,
  now: number,
): Promise<ClientScope | null> {
  const parsed = payloadSchema.safeParse(
    await readSigned(env, "client-token", text, MAX_TOKEN_CHARS),
  );
  if (!parsed.success || parsed.data.exp <= now) return null;
  return { projectIds: parsed.data.p, userId: parsed.data.u, expiresAt: parsed.data.exp };
}
