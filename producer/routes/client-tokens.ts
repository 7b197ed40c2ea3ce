// `POST /client-tokens` (API_TOKEN only): the frontend's backend mints a scoped token for the
// signed-in user's browser (shared/client-token.ts), which then calls the API itself for those
// projects only. A client token cannot mint another.
import { createRoute, type RouteHandler } from "@hono/zod-openapi";
import { mintClientToken } from "../../shared/client-token.ts";
import { signingKey } from "../../shared/keys.ts";
import { tenancySettings } from "../../shared/settings.ts";
import { auth, errorReplies, JSON_BODY_ERRORS, jsonBody, reply } from "../api.ts";
import { ClientToken, ClientTokenRequest } from "../api-schemas.ts";
import { type AppEnv, apiError } from "../http.ts";

export const createClientTokenRoute = createRoute({
  method: "post",
  path: "/client-tokens",
  operationId: "createClientToken",
  summary:
    "Mint a scoped client token for a browser: create, get, list, cancel, events, output, " +
    "download URLs and live tickets of `project_ids` only, for `ttl_s` ≤ CLIENT_TOKEN_MAX_TTL_S",
  tags: ["exports"],
  ...auth("apiToken"),
  request: { body: jsonBody(ClientTokenRequest) },
  responses: {
    201: reply("the signed token", ClientToken),
    ...errorReplies("apiToken", JSON_BODY_ERRORS),
  },
});

/** `POST /client-tokens` → 201 `{token, expires_at}`; 400 for a `ttl_s` past the maximum. */
export const createClientToken: RouteHandler<typeof createClientTokenRoute, AppEnv> = async (c) => {
  const request = c.req.valid("json");
  const maxTtlS = tenancySettings(c.env).clientTokenMaxTtlS;
  if (request.ttl_s !== undefined && request.ttl_s > maxTtlS) {
    return apiError(c, 400, "invalid_request", "the body is not valid", [
      { path: ["ttl_s"], message: `at most CLIENT_TOKEN_MAX_TTL_S (${maxTtlS})`, code: "too_big" },
    ]);
  }
  const key = signingKey(c.env, "client-token");
  if (!key) return apiError(c, 500, "not_configured", "WEBHOOK_SECRET is not set on this Worker");
  const expiresAt = Date.now() + (request.ttl_s ?? maxTtlS) * 1000;
  const token = await mintClientToken(await key, {
    projectIds: request.project_ids,
    userId: request.user_id ?? null,
    expiresAt,
  });
  return c.json({ token, expires_at: new Date(expiresAt).toISOString() }, 201);
};
