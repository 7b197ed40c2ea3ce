// How a route is declared: once, in its own file, with `createRoute` (@hono/zod-openapi). That one
// declaration validates the request (params, query and headers through the library's validators,
// whose failures `defaultHook` answers with the error envelope; the JSON body through
// readJsonBody, which keeps the streamed 413 limit), types the handler's answers (an answer the
// route does not declare does not compile) and documents both in GET /openapi.json.
// This module holds what routes share: auth, the error codes, the body declaration and `mount`.

import { type OpenAPIHono, type RouteConfig, type RouteHandler, z } from "@hono/zod-openapi";
import type { MiddlewareHandler } from "hono";
import { ErrorSchema } from "./api-schemas.ts";
import {
  type AppContext,
  type AppEnv,
  apiError,
  bearerAuth,
  downloadAuth,
  MAX_BODY_BYTES,
  readJsonBody,
  tokenAuth,
} from "./http.ts";

/**
 * Who may call a route. apiToken / adminToken: that bearer token only; frontend: API_TOKEN or a
 * scoped client token (POST /client-tokens) of the job's project; anyToken: those or ADMIN_TOKEN
 * (what the operators' dashboard shares with the frontend); download: `frontend`, or the signed
 * URL of POST /exports/{id}/download-url; signedUrl: RunPod's callbacks; liveTicket: `?ticket=`.
 */
export type Auth =
  | "apiToken"
  | "adminToken"
  | "frontend"
  | "anyToken"
  | "download"
  | "signedUrl"
  | "liveTicket"
  | "none";

const SECURITY: Record<Auth, Record<string, string[]>[]> = {
  apiToken: [{ apiToken: [] }],
  adminToken: [{ adminToken: [] }],
  frontend: [{ apiToken: [] }, { clientToken: [] }],
  anyToken: [{ apiToken: [] }, { clientToken: [] }, { adminToken: [] }],
  download: [{ apiToken: [] }, { clientToken: [] }, { downloadUrl: [] }],
  signedUrl: [],
  liveTicket: [],
  none: [],
};

const AUTH_MIDDLEWARE: Partial<Record<Auth, () => MiddlewareHandler<AppEnv>>> = {
  apiToken: () => bearerAuth("API_TOKEN"),
  adminToken: () => bearerAuth("ADMIN_TOKEN"),
  frontend: () => tokenAuth(["API_TOKEN"], { clients: true }),
  anyToken: () => tokenAuth(["ADMIN_TOKEN", "API_TOKEN"], { clients: true }),
  download: downloadAuth,
};

/**
 * The projects the caller may see: null for the API and admin tokens (every project), the scoped
 * token's otherwise. Id routes pass it to the statement that reads the job (404 outside it).
 */
export function projectsOf(c: AppContext): number[] | null {
  return c.get("client")?.projectIds ?? null;
}

/** 403 project_not_allowed: a scoped token asked for a project it does not name. */
export function projectNotAllowed(c: AppContext, projectIds: readonly number[]) {
  return apiError(
    c,
    403,
    "project_not_allowed",
    `this token is not for project ${projectIds.join(", ")}`,
  );
}

/**
 * A route's `security` and the middleware that checks it, first of all: the bearer tokens' own, or
 * the one a signed URL or a live ticket route gives (`check`).
 */
export function auth(
  kind: Auth,
  check?: MiddlewareHandler<AppEnv>,
): { security: Record<string, string[]>[]; middleware: MiddlewareHandler<AppEnv>[] } {
  const bearer = AUTH_MIDDLEWARE[kind];
  const middleware = bearer ? bearer() : check;
  if ((kind === "signedUrl" || kind === "liveTicket") !== (check !== undefined)) {
    throw new Error(
      `auth("${kind}"): a signed URL or a ticket needs its check, nothing else takes one`,
    );
  }
  return { security: SECURITY[kind], middleware: middleware ? [middleware] : [] };
}

/** Every code an error answer can carry, with what it means. */
export const ERRORS = {
  invalid_json: "the body is not valid JSON",
  invalid_request: "the body, query or a header is not valid; `issues` says where",
  unauthorized: "the bearer token is missing, wrong or expired, or not one this route takes",
  project_not_allowed: "the scoped client token is not for this project",
  input_key_outside_project:
    "input_video_key lies outside the project's prefix (INPUT_KEY_PREFIX, e.g. uploads/{project_id}/)",
  quota_exceeded:
    "the fairness key (user_id, else project) has MAX_ACTIVE_PER_USER jobs pending or processing " +
    "(Retry-After)",
  rate_limited: "too many creates for this fairness key in the last minute (Retry-After)",
  bad_signature:
    "the URL's signature (`attempt`/`sig` of RunPod's callbacks, `expires`/`kid`/`sig` of a " +
    "download URL) is missing, does not match the id, or has expired",
  not_found: "no such resource",
  already_finished: "the job is already complete or error",
  already_replayed: "the dead letter was replayed already",
  not_replayable: "the dead letter names no existing job",
  job_complete: "the dead letter's job completed",
  job_active: "the dead letter's job is still pending or processing",
  not_complete: "the job is not complete, so it has no output yet",
  output_missing: "the job completed, but its output is no longer in R2",
  range_not_satisfiable: "the Range lies outside the object (Content-Range: bytes */size)",
  job_cancelled: "the dead letter's job was cancelled, and cancelled jobs are never replayed",
  payload_too_large: `the body exceeds ${MAX_BODY_BYTES} bytes`,
  unsupported_media_type: "the body is not sent as application/json",
  input_not_found: "no R2 object at input_video_key",
  idempotency_key_reused: "this Idempotency-Key was used with a different body",
  not_configured:
    "a secret the route needs (its token; WEBHOOK_SECRET for live tickets) is not set on the " +
    "Worker, so every call fails closed",
  internal_error: "unexpected failure; the request may be retried",
  bad_ticket: "the live ticket is missing, forged or expired: mint a fresh one",
  upgrade_required: "GET /live answers only a WebSocket upgrade (Upgrade: websocket)",
  live_unavailable: "live status cannot be reached right now (Retry-After); D1 is unaffected",
  invalid_bookmark: "x-d1-bookmark is not a bookmark from an earlier answer",
  stale_attempt:
    "the progress report is of an attempt that is not the job's current one: stop that run",
} as const;
export type ErrorCode = keyof typeof ERRORS;
export type ErrorStatus =
  | 400
  | 401
  | 403
  | 404
  | 409
  | 413
  | 415
  | 416
  | 422
  | 426
  | 429
  | 500
  | 503;

/** The error answers a JSON body implies (readJsonBody). */
export const BODY_ERRORS = {
  400: ["invalid_json", "invalid_request"],
  413: ["payload_too_large"],
} as const satisfies Partial<Record<ErrorStatus, readonly ErrorCode[]>>;
/** …and 415 too when the body must be sent as application/json. */
export const JSON_BODY_ERRORS = {
  ...BODY_ERRORS,
  415: ["unsupported_media_type"],
} as const satisfies Partial<Record<ErrorStatus, readonly ErrorCode[]>>;

/** A documented response header (a string). */
type HeaderDoc = { description: string; schema: { type: "string" } };
export function header(description: string): HeaderDoc {
  return { description, schema: { type: "string" } };
}

const WWW_AUTHENTICATE = { "WWW-Authenticate": header('Bearer realm="reel-exports"') };

type ErrorReply = {
  description: string;
  headers?: Record<string, HeaderDoc>;
  content: { "application/json": { schema: typeof ErrorSchema } };
};

/**
 * A route's error answers, each with the codes it can carry, as the Error envelope. The codes of
 * the route's auth are added (401, and 500 `not_configured` for a secret the route needs); every
 * route may answer 500 `internal_error`.
 */
export function errorReplies<const O extends Partial<Record<ErrorStatus, readonly ErrorCode[]>>>(
  kind: Auth,
  own: O,
): Record<(keyof O & ErrorStatus) | 400 | 401 | 500, ErrorReply> {
  const codes = new Map<ErrorStatus, ErrorCode[]>();
  const add = (status: ErrorStatus, ...more: readonly ErrorCode[]) => {
    const list = codes.get(status) ?? [];
    codes.set(status, [...list, ...more.filter((code) => !list.includes(code))]);
  };
  const bearer = AUTH_MIDDLEWARE[kind] !== undefined;
  if (bearer) add(401, "unauthorized");
  if (kind === "signedUrl" || kind === "download") add(401, "bad_signature");
  if (kind === "liveTicket") add(401, "bad_ticket");
  for (const [status, list] of Object.entries(own) as [string, readonly ErrorCode[]][]) {
    add(Number(status) as ErrorStatus, ...list);
  }
  // Every route that reads D1 runs in a session (producer/d1-session.ts), RunPod's callbacks aside.
  if (kind !== "none" && kind !== "liveTicket" && kind !== "signedUrl")
    add(400, "invalid_bookmark");
  if (bearer || kind === "liveTicket") add(500, "not_configured");
  add(500, "internal_error");
  const replies: Partial<Record<ErrorStatus, ErrorReply>> = {};
  for (const [status, list] of [...codes].sort(([a], [b]) => a - b)) {
    replies[status] = {
      description: `Error codes: ${list.map((code) => `\`${code}\` (${ERRORS[code]})`).join("; ")}`,
      ...(status === 401 && bearer ? { headers: WWW_AUTHENTICATE } : {}),
      content: { "application/json": { schema: ErrorSchema } },
    };
  }
  return replies as Record<(keyof O & ErrorStatus) | 400 | 401 | 500, ErrorReply>;
}

/** A success answer: its description, its JSON schema (none for bodies that are not JSON). */
export function reply<S extends z.ZodType>(
  description: string,
  schema: S,
  headers?: Record<string, HeaderDoc>,
): {
  description: string;
  headers?: Record<string, HeaderDoc>;
  content: { "application/json": { schema: S } };
} {
  return {
    description,
    ...(headers ? { headers } : {}),
    content: { "application/json": { schema } },
  };
}

interface BodyOptions {
  /** RunPod's callbacks: the Content-Type is not checked. */
  anyContentType?: true;
}
const BODY_OPTIONS = new WeakMap<object, BodyOptions>();

/**
 * A route's JSON body: documented and typed from `schema`, read by `mount` through readJsonBody
 * (415 unless application/json, 413 past the limit even when streamed, 400 invalid_json /
 * invalid_request), never by the library's own body validator.
 */
export function jsonBody<S extends z.ZodType>(schema: S, options: BodyOptions = {}) {
  const body = {
    required: true,
    description:
      `JSON, at most ${MAX_BODY_BYTES} bytes` +
      (options.anyContentType ? "; the Content-Type is not checked." : "."),
    content: { "application/json": { schema } },
  };
  BODY_OPTIONS.set(body, options);
  return body;
}

type Body = { content: { "application/json": { schema: z.ZodType } } };

/**
 * Serves `route` with `handler` on `app` and documents it: the library validates params, query
 * and headers after the route's middleware (auth first); the body is read and validated last,
 * through readJsonBody, so a body is never read before the caller is known.
 */
export function mount<R extends RouteConfig>(
  app: OpenAPIHono<AppEnv>,
  route: R,
  handler: RouteHandler<R, AppEnv>,
): void {
  const body = route.request?.body as Body | undefined;
  if (!body) {
    app.openapi(route, handler);
    return;
  }
  const options = BODY_OPTIONS.get(body);
  if (!options) throw new Error(`${route.method} ${route.path}: declare its body with jsonBody()`);
  const schema = body.content["application/json"].schema;
  const { middleware: _served, ...documented } = route;
  app.openAPIRegistry.registerPath(documented);
  const { body: _documented, ...request } = route.request ?? {};
  const served = { ...route, request, hide: true } as R;
  type Args = Parameters<RouteHandler<R, AppEnv>>;
  // readJsonBody's answers are the route's declared 400/413/415 (BODY_ERRORS), which the
  // handler's own type cannot see: the one place the typed answer is widened to a Response.
  const withBody = async (c: Args[0], next: Args[1]): Promise<Response> => {
    const read = await readJsonBody(c, schema, {
      requireJsonContentType: !options.anyContentType,
    });
    if (!read.ok) return read.response;
    c.req.addValidatedData("json", read.value as object);
    return (await handler(c, next)) as Response;
  };
  app.openapi(served, withBody as RouteHandler<R, AppEnv>);
}

/** `{id}` of the routes under /exports/{id}. */
export const jobIdParams = z.object({
  id: z.string().openapi({ description: "the job's id (a UUID)" }),
});
/** `{id}` of the routes under /dead-letters/{id}. */
export const deadLetterIdParams = z.object({
  id: z.string().openapi({ description: "the dead letter's id (its queue message id)" }),
});

/**
 * A query parameter that is given once. A repeat is ignored (the first value counts, as
 * URLSearchParams.get reads it), and with `emptyIsAbsent` so is an empty value (`?status=`, as a
 * form's "any" option sends it). The documented schema is `schema`'s.
 */
export function queryParam<S extends z.ZodType>(schema: S, options: { emptyIsAbsent?: true } = {}) {
  return z.preprocess((value) => {
    const first = Array.isArray(value) ? value[0] : value;
    return options.emptyIsAbsent && first === "" ? undefined : first;
  }, schema);
}

/** `limit` (1 to 100, default `size`) and `cursor` of every paged listing. */
export function pageQuery(size: number) {
  return z.object({
    limit: queryParam(
      z.coerce.number().int().min(1).max(100).default(size).openapi({ description: "page size" }),
    ),
    cursor: queryParam(
      z.string().min(1).optional().openapi({ description: "`next_cursor` of the previous page" }),
    ),
  });
}
