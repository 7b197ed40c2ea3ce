// The producer's HTTP conventions: one error shape, bearer auth, and a JSON body reader that
// enforces the contract's limits before anything is parsed.

import type { Hook } from "@hono/zod-openapi";
import type { Context, Env, MiddlewareHandler } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { z } from "zod";
import { type ClientScope, readClientToken } from "../shared/client-token.ts";
import { verifyDownload } from "../shared/download-url.ts";
import type { ProducerEnv } from "../shared/env.ts";
import type { LiveTicket } from "../shared/live-ticket.ts";

export type TokenName = "API_TOKEN" | "ADMIN_TOKEN";
/**
 * What auth learned of the request: `token`, the bearer token it presented (tokenAuth), and for a
 * scoped client token, `client`, its scope; `attempt`, the attempt its signed URL names (RunPod's
 * callbacks); `ticket`, its live ticket (GET /live).
 */
export type AppEnv = {
  Bindings: ProducerEnv;
  Variables: {
    token: TokenName | "CLIENT_TOKEN" | "DOWNLOAD_URL";
    client?: ClientScope;
    attempt: number;
    ticket: LiveTicket;
    /** A reading request's D1 binding itself (producer/d1-session.ts): its primary. */
    primaryDb?: D1Database;
  };
};
export type AppContext = Context<AppEnv>;

export const MAX_BODY_BYTES = 256 * 1024;

export interface ApiIssue {
  path: (string | number)[];
  message: string;
  code?: string;
}

interface ApiErrorBody {
  error: { code: string; message: string; issues?: ApiIssue[] };
}

/** `{"error": {"code", "message", "issues"?}}` with a stable snake_case code. */
export function apiError<S extends ContentfulStatusCode, E extends Env>(
  c: Context<E>,
  status: S,
  code: string,
  message: string,
  issues?: ApiIssue[],
) {
  const body: ApiErrorBody = { error: { code, message, ...(issues ? { issues } : {}) } };
  return c.json(body, status);
}

export function zodIssues(error: z.core.$ZodError): ApiIssue[] {
  return error.issues.map((issue) => ({
    path: issue.path.map((key) => (typeof key === "symbol" ? String(key) : key)),
    message: issue.message,
    code: issue.code,
  }));
}

/**
 * A request that fails its route's params, query or headers: 400 invalid_request with zod's
 * issues. A header's message names the header ("Idempotency-Key must be 1 to 255 characters").
 */
export const defaultHook: Hook<unknown, AppEnv, string, unknown> = (result, c) => {
  if (result.success) return;
  const issues = zodIssues(result.error);
  const [first] = issues;
  const message =
    result.target === "header" && first
      ? `${first.path.join(".")} ${first.message}`
      : `the ${result.target === "param" ? "path" : result.target} is not valid`;
  return apiError(c, 400, "invalid_request", message, issues);
};

/** Timing-safe string comparison of two tokens. */
function sameToken(given: string, expected: string): boolean {
  const a = new TextEncoder().encode(given);
  const b = new TextEncoder().encode(expected);
  if (a.byteLength !== b.byteLength) return false;
  return crypto.subtle.timingSafeEqual(a, b);
}

/** Requires `Authorization: Bearer <env[name]>`; fails closed when the secret is not set. */
export function bearerAuth(name: TokenName): MiddlewareHandler<AppEnv> {
  return tokenAuth([name]);
}

/**
 * The bearer tokens of `names`, and with `clients` a scoped client token too (shared/client-token.ts:
 * `c.get("client")` is then its scope). `c.get("token")` says which was presented. Fails closed
 * (500 not_configured) when none of `names` is set on the Worker.
 */
export function tokenAuth(
  names: TokenName[],
  options: { clients?: true } = {},
): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const configured = names.filter((name) => c.env[name]);
    if (configured.length === 0) {
      return apiError(c, 500, "not_configured", `${names.join(" or ")} is not set on this Worker`);
    }
    const header = c.req.header("authorization") ?? "";
    const given = /^Bearer\s+(.+)$/i.exec(header)?.[1]?.trim();
    const matched = given
      ? configured.find((name) => sameToken(given, c.env[name] as string))
      : undefined;
    if (matched) {
      c.set("token", matched);
      return next();
    }
    const client =
      given && options.clients ? await readClientToken(c.env, given, Date.now()) : null;
    if (!client) {
      c.header("WWW-Authenticate", 'Bearer realm="reel-exports"');
      return apiError(c, 401, "unauthorized", "a valid bearer token is required");
    }
    c.set("token", "CLIENT_TOKEN");
    c.set("client", client);
    await next();
  };
}

/**
 * `GET /exports/{id}/output`: a signed download URL (`expires`, `kid`, `sig` of
 * shared/download-url.ts: 401 bad_signature when it is forged, of another job or expired), else a
 * bearer token as `frontend` takes them.
 */
export function downloadAuth(): MiddlewareHandler<AppEnv> {
  const bearer = tokenAuth(["API_TOKEN"], { clients: true });
  return async (c, next) => {
    const sig = c.req.query("sig");
    if (sig === undefined) return bearer(c, next);
    const query = { expires: c.req.query("expires"), kid: c.req.query("kid"), sig };
    if (!(await verifyDownload(c.env, c.req.param("id") ?? "", query, Date.now()))) {
      return apiError(c, 401, "bad_signature", "the download URL is forged or expired");
    }
    c.set("token", "DOWNLOAD_URL");
    await next();
  };
}

/**
 * Reads `body` chunk by chunk and returns its bytes, or null as soon as more than `limit` bytes
 * have arrived (the rest is cancelled, not read), so a body without a Content-Length (chunked)
 * is never held in memory past the limit.
 */
async function readAtMost(
  body: ReadableStream<Uint8Array> | null,
  limit: number,
): Promise<Uint8Array | null> {
  if (!body) return new Uint8Array(0);
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > limit) {
        await reader.cancel().catch(() => {});
        return null;
      }
      chunks.push(value);
    }
  } finally {
    reader.releaseLock();
  }
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return bytes;
}

export type BodyResult<T> = { ok: true; value: T } | { ok: false; response: Response };

/**
 * Reads a JSON body: 415 unless it is `application/json`, 413 past 256 KiB (declared or actual),
 * 400 `invalid_json` when it does not parse, 400 `invalid_request` with zod's issues otherwise.
 */
export async function readJsonBody<T, E extends Env>(
  c: Context<E>,
  schema: z.ZodType<T>,
  options: { requireJsonContentType?: boolean } = {},
): Promise<BodyResult<T>> {
  const fail = (response: Response): BodyResult<T> => ({ ok: false, response });
  const contentType = c.req.header("content-type") ?? "";
  if (
    (options.requireJsonContentType ?? true) &&
    !/^application\/([\w.+-]+\+)?json\s*(;|$)/i.test(contentType)
  ) {
    return fail(apiError(c, 415, "unsupported_media_type", "send the body as application/json"));
  }
  const declared = Number(c.req.header("content-length") ?? "0");
  if (declared > MAX_BODY_BYTES) {
    return fail(apiError(c, 413, "payload_too_large", `the body exceeds ${MAX_BODY_BYTES} bytes`));
  }
  const raw = await readAtMost(c.req.raw.body, MAX_BODY_BYTES);
  if (raw === null) {
    return fail(apiError(c, 413, "payload_too_large", `the body exceeds ${MAX_BODY_BYTES} bytes`));
  }
  let data: unknown;
  try {
    data = JSON.parse(new TextDecoder().decode(raw));
  } catch {
    return fail(apiError(c, 400, "invalid_json", "the body is not valid JSON"));
  }
  const parsed = schema.safeParse(data);
  if (!parsed.success) {
    return fail(
      apiError(c, 400, "invalid_request", "the body is not valid", zodIssues(parsed.error)),
    );
  }
  return { ok: true, value: parsed.data };
}

/** 400 for a cursor this API did not hand out. */
export function badCursor<E extends Env>(c: Context<E>) {
  return apiError(c, 400, "invalid_request", "the cursor is not valid", [
    { path: ["cursor"], message: "not a cursor returned by this API" },
  ]);
}
