import type { AppContext } from "../http.ts";

/** `GET /health`: liveness, no auth, no D1 round trip. */
export function health(c: AppContext): Response {
  return c.json({ ok: true });
}
