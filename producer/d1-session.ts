// Reads from D1's replicas: every API request runs in one D1 session (the Sessions API), so reads
// may be served by a replica near the request while the session stays sequentially consistent.
//
// - A request without a bookmark: a GET starts anywhere ("first-unconstrained"); anything else
//   starts at the primary ("first-primary"): its reads decide its writes (an Idempotency-Key
//   lookup, a webhook's attempt check), so they must not see a replica's past.
// - A request with `x-d1-bookmark` (the header of an earlier answer) starts at that bookmark: a
//   client that sends back the bookmark of its POST reads its own write.
// - Every answer that read or wrote D1 carries the session's latest bookmark in `x-d1-bookmark`
//   (RunPod's callbacks excepted: they run on the primary, without a session).
// - A GET of a job the replica does not have yet asks the primary before answering 404
//   (`primaryDb`, see get-export, job-events, export-output), so a GET right after a POST never
//   404s.
// The handlers see the session as `c.env.DB`: the statements of shared/sql/ run unchanged.
import type { MiddlewareHandler } from "hono";
import { type AppEnv, apiError } from "./http.ts";

export const BOOKMARK_HEADER = "x-d1-bookmark";

/** D1's bookmarks are hex groups joined by dashes; anything else is refused before any read. */
const BOOKMARK = /^[0-9a-f-]{1,256}$/i;

/** Routes that never touch D1 run without a session. */
const WITHOUT_D1 = new Set(["/health", "/openapi.json", "/live"]);
/**
 * RunPod's callbacks run on the primary without a session: their reads decide their writes and
 * nobody reads their bookmark. (A 1,000-job chaos run also saw local D1 fail one webhook with
 * "Failed to get session commit token" under load: a cost with nothing to gain here.)
 */
const CALLBACKS = "/runpod/";

/**
 * A session as the D1Database the statements take. Only `prepare` and `batch` run in the session;
 * `exec`, `withSession` and `dump`, which no request handler calls, go to the binding itself.
 */
export function sessionDatabase(primary: D1Database, session: D1DatabaseSession): D1Database {
  return {
    prepare: (query) => session.prepare(query),
    batch: <T>(statements: D1PreparedStatement[]) => session.batch<T>(statements),
    exec: (query) => primary.exec(query),
    withSession: (constraint) => primary.withSession(constraint),
    dump: () => primary.dump(),
  };
}

export const d1Session: MiddlewareHandler<AppEnv> = async (c, next) => {
  if (WITHOUT_D1.has(c.req.path) || c.req.path.startsWith(CALLBACKS)) return next();
  const bookmark = c.req.header(BOOKMARK_HEADER);
  if (bookmark !== undefined && !BOOKMARK.test(bookmark)) {
    return apiError(
      c,
      400,
      "invalid_bookmark",
      `${BOOKMARK_HEADER} must be a bookmark from an earlier answer`,
    );
  }
  const primary = c.env.DB;
  const reading = c.req.method === "GET" || c.req.method === "HEAD";
  const session = primary.withSession(
    bookmark ?? (reading ? "first-unconstrained" : "first-primary"),
  );
  c.env = { ...c.env, DB: sessionDatabase(primary, session) };
  if (reading) c.set("primaryDb", primary);
  await next();
  const latest = session.getBookmark();
  if (latest === null) return;
  try {
    c.res.headers.set(BOOKMARK_HEADER, latest);
  } catch {
    // An answer whose headers cannot change (a WebSocket upgrade) goes without it.
  }
};
