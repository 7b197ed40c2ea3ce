import type { AppContext } from "../http.ts";
import { openApiDocument } from "../openapi.ts";

/** `GET /openapi.json`: the OpenAPI 3.1 document of these routes, no auth. */
export function openapi(c: AppContext): Response {
  c.header("Cache-Control", "public, max-age=300");
  return c.json(openApiDocument());
}
