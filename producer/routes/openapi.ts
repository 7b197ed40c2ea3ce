import { createRoute, type OpenAPIHono, type RouteHandler } from "@hono/zod-openapi";
import { auth, errorReplies, header, reply } from "../api.ts";
import { OpenApiDocumentSchema } from "../api-schemas.ts";
import type { AppEnv } from "../http.ts";
import { openApiDocument } from "../openapi.ts";

export const openapiRoute = createRoute({
  method: "get",
  path: "/openapi.json",
  operationId: "openapi",
  summary: "This OpenAPI document",
  tags: ["meta"],
  ...auth("none"),
  responses: {
    200: reply("the document", OpenApiDocumentSchema, {
      "Cache-Control": header("public, max-age=300"),
    }),
    ...errorReplies("none", {}),
  },
});

/** `GET /openapi.json`: the OpenAPI 3.1 document of `app`'s routes, no auth. */
export function serveOpenapi(app: OpenAPIHono<AppEnv>): RouteHandler<typeof openapiRoute, AppEnv> {
  return (c) => {
    c.header("Cache-Control", "public, max-age=300");
    return c.json(openApiDocument(app), 200);
  };
}
