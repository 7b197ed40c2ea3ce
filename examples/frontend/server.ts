// The frontend's backend, as small as it can be: what your own backend (the one that knows who is
// signed in) does for the Export button. It is the only piece that holds API_TOKEN; the browser
// talks to it, never to the producer's API, with one exception: the live WebSocket, which the
// browser opens to the producer itself with a short-lived ticket this server mints for it.
//
//   GET  /, /app.js, /style.css     the example page
//   POST /api/exports               → producer POST /exports (Bearer API_TOKEN; project, user and
//                                     input are the server's choice, the page sends type + params)
//   POST /api/live-ticket           → producer POST /live-tickets for the demo project; answers the
//                                     ticket and the `ws://…/live?ticket=…` URL to open
//   GET  /api/exports/:id/events    → producer GET /exports/:id/events (the timeline)
//   GET  /api/exports/:id/output    → producer GET /exports/:id/output, streamed (Range, ETag)
//   GET  /health                    200, for `npm start` to know it is up
//
// Node built-ins only; Node 22 runs this TypeScript file directly: `node examples/frontend/server.ts`.
// Settings: REEL_EXPORTS_URL (the producer, http://127.0.0.1:8787), API_TOKEN (dev-api-token),
// EXAMPLE_FRONTEND_PORT (8792), EXAMPLE_FRONTEND_HOST (127.0.0.1).
import { readFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as NodeReadableStream } from "node:stream/web";

const PRODUCER_URL = (process.env.REEL_EXPORTS_URL || "http://127.0.0.1:8787").replace(/\/+$/, "");
const API_TOKEN = process.env.API_TOKEN || "dev-api-token";
const PORT = Number(process.env.EXAMPLE_FRONTEND_PORT || 8792);
const HOST = process.env.EXAMPLE_FRONTEND_HOST || "127.0.0.1";

// In a real backend these come from the signed-in user's session and the project open in the
// editor; the browser never chooses them (it could name someone else's project).
const DEMO_PROJECT_ID = 42;
const DEMO_USER_ID = 7;
/** Put there by `npm start` (the sample in local R2). A real app uploads the user's video first. */
const DEMO_INPUT_KEY = "uploads/demo/sample.mp4";

/** What `POST /api/live-ticket` answers: the producer's ticket and where to open the socket. */
export interface LiveTicketAnswer {
  ticket: string;
  expires_at: string;
  /** `ws://<producer>/live?ticket=…`: the browser connects to the producer directly. */
  live_url: string;
}

const here = path.dirname(new URL(import.meta.url).pathname);
const STATIC: Record<string, { file: string; type: string }> = {
  "/": { file: "index.html", type: "text/html; charset=utf-8" },
  "/app.js": { file: "app.js", type: "text/javascript; charset=utf-8" },
  "/style.css": { file: "style.css", type: "text/css; charset=utf-8" },
};

/** A request to the producer's API with the backend's credentials. */
function producer(route: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  headers.set("Authorization", `Bearer ${API_TOKEN}`);
  // Bytes pass through as the producer sent them (Node's fetch would otherwise decompress them
  // while keeping the compressed Content-Length).
  headers.set("Accept-Encoding", "identity");
  return fetch(`${PRODUCER_URL}${route}`, { ...init, headers });
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Cache-Control": "no-store" });
  res.end(text);
}

/** The producer's answer, status and body as they are (its errors are `{"error": {…}}` already). */
async function relayJson(res: ServerResponse, upstream: Response): Promise<void> {
  sendJson(res, upstream.status, await upstream.json());
}

/** Streams the producer's answer through with the headers a download or a player needs. */
async function relayStream(res: ServerResponse, upstream: Response): Promise<void> {
  const headers: Record<string, string> = {};
  for (const name of [
    "content-type",
    "content-length",
    "content-range",
    "accept-ranges",
    "etag",
    "cache-control",
  ]) {
    const value = upstream.headers.get(name);
    if (value !== null) headers[name] = value;
  }
  res.writeHead(upstream.status, headers);
  if (!upstream.body) {
    res.end();
    return;
  }
  await pipeline(Readable.fromWeb(upstream.body as unknown as NodeReadableStream), res);
}

async function readJson(req: IncomingMessage, limit = 64 * 1024): Promise<unknown> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new Error("body too large");
    chunks.push(chunk);
  }
  return chunks.length === 0 ? {} : JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

/** POST /api/exports: the page says what to render; the backend says whose and from which file. */
async function createExport(req: IncomingMessage, res: ServerResponse): Promise<void> {
  let body: { type?: unknown; params?: unknown };
  try {
    body = (await readJson(req)) as typeof body;
  } catch {
    return sendJson(res, 400, { error: { code: "invalid_json", message: "send a JSON object" } });
  }
  const headers: Record<string, string> = { "Content-Type": "application/json" };
  // The page makes one key per click: a retried request then creates no second job.
  const key = req.headers["idempotency-key"];
  if (typeof key === "string") headers["Idempotency-Key"] = key;
  const upstream = await producer("/exports", {
    method: "POST",
    headers,
    body: JSON.stringify({
      project_id: DEMO_PROJECT_ID,
      user_id: DEMO_USER_ID,
      input_video_key: DEMO_INPUT_KEY,
      type: body?.type,
      params: body?.params,
    }),
  });
  await relayJson(res, upstream); // 202 {"job"}, or 200 for a repeated key, or the producer's error
}

/** POST /api/live-ticket: a ticket for the user's projects, and the URL the page opens with it. */
async function liveTicket(res: ServerResponse): Promise<void> {
  const upstream = await producer("/live-tickets", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ project_ids: [DEMO_PROJECT_ID] }),
  });
  if (upstream.status !== 201) return relayJson(res, upstream);
  const { ticket, expires_at } = (await upstream.json()) as { ticket: string; expires_at: string };
  const live = new URL("/live", PRODUCER_URL);
  live.protocol = live.protocol === "https:" ? "wss:" : "ws:";
  live.searchParams.set("ticket", ticket);
  const answer: LiveTicketAnswer = { ticket, expires_at, live_url: live.href };
  sendJson(res, 201, answer);
}

/**
 * GET /api/exports/:id/events|output. API_TOKEN reads any job, so a real backend first checks that
 * the job is the signed-in user's (here: the demo project's); cache that answer for a player that
 * sends many Range requests.
 */
async function jobRoute(
  req: IncomingMessage,
  res: ServerResponse,
  id: string,
  what: "events" | "output",
): Promise<void> {
  const route = `/exports/${encodeURIComponent(id)}`;
  const owner = await producer(route);
  const job = owner.ok ? ((await owner.json()) as { job: { project_id: number } }).job : null;
  if (job?.project_id !== DEMO_PROJECT_ID) {
    return sendJson(res, 404, { error: { code: "not_found", message: "no such export job" } });
  }
  const headers: Record<string, string> = {};
  for (const name of ["range", "if-none-match"] as const) {
    const value = req.headers[name];
    if (typeof value === "string") headers[name] = value;
  }
  // Stop reading from the producer when the browser goes away (a cancelled download).
  const abort = new AbortController();
  res.on("close", () => abort.abort());
  const upstream = await producer(`${route}/${what}`, { headers, signal: abort.signal });
  await relayStream(res, upstream);
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? "/", "http://localhost");
  const page = STATIC[url.pathname];
  if (req.method === "GET" && page) {
    const body = await readFile(path.join(here, page.file));
    res.writeHead(200, { "Content-Type": page.type, "Cache-Control": "no-store" });
    res.end(body);
    return;
  }
  if (req.method === "GET" && url.pathname === "/health") return sendJson(res, 200, { ok: true });
  if (req.method === "POST" && url.pathname === "/api/exports") return createExport(req, res);
  if (req.method === "POST" && url.pathname === "/api/live-ticket") return liveTicket(res);
  const match = /^\/api\/exports\/([^/]+)\/(events|output)$/.exec(url.pathname);
  if (req.method === "GET" && match) {
    return jobRoute(
      req,
      res,
      decodeURIComponent(match[1] as string),
      match[2] as "events" | "output",
    );
  }
  sendJson(res, 404, {
    error: { code: "not_found", message: `no route for ${req.method} ${url.pathname}` },
  });
}

const server = createServer((req, res) => {
  handle(req, res).catch((error: unknown) => {
    // A download the browser cancelled ends here too; there is nobody left to answer.
    if (res.headersSent) {
      res.destroy();
      return;
    }
    console.error(`${req.method} ${req.url}: ${String(error)}`);
    sendJson(res, 502, {
      error: {
        code: "bad_gateway",
        message: `no usable answer from the producer at ${PRODUCER_URL}`,
      },
    });
  });
});
server.listen(PORT, HOST, () => {
  console.log(`frontend example listening on http://${HOST}:${PORT} (producer ${PRODUCER_URL})`);
});
