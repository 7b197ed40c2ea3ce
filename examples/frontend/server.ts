// The frontend's backend, as small as it can be: what your own backend (the one that knows who is
// signed in) does for the Export button. It is the only piece that holds API_TOKEN, and it only
// mints a scoped client token for the signed-in user's project: the browser then calls the
// producer's API itself with that token (create, live ticket, timeline, a signed download URL),
// and no call and no video byte passes through here.
//
//   GET  /, /app.js, /style.css     the example page (and /reel-exports-client.js, the typed
//                                   client it calls the API with)
//   POST /api/session               → producer POST /client-tokens for the demo project and user;
//                                     answers the token, its expiry, the API's URL, and what the
//                                     page may export (the project and the uploaded input)
//   GET  /health                    200, for `npm start` to know it is up
//
// The producer must allow this page's origin (CORS_ORIGIN; `npm start` sets it to this server's
// origin when the example runs). Node built-ins only; Node 22 runs this TypeScript file directly:
// `node examples/frontend/server.ts`. Settings: REEL_EXPORTS_URL (the producer,
// http://127.0.0.1:8787), API_TOKEN (dev-api-token), EXAMPLE_FRONTEND_PORT (8792),
// EXAMPLE_FRONTEND_HOST (127.0.0.1).
import { readFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import path from "node:path";

const PRODUCER_URL = (process.env.REEL_EXPORTS_URL || "http://127.0.0.1:8787").replace(/\/+$/, "");
const API_TOKEN = process.env.API_TOKEN || "dev-api-token";
const PORT = Number(process.env.EXAMPLE_FRONTEND_PORT || 8792);
const HOST = process.env.EXAMPLE_FRONTEND_HOST || "127.0.0.1";

// In a real backend these come from the signed-in user's session and the project open in the
// editor; the token names them, so the browser cannot export into another project or as another
// user (the producer refuses the first with 403 and replaces the second).
const DEMO_PROJECT_ID = 42;
const DEMO_USER_ID = 7;
/** Put there by `npm start` (the sample in local R2). A real app uploads the user's video first. */
const DEMO_INPUT_KEY = "uploads/demo/sample.mp4";
/** How long the browser's token lives; it asks for a new session when it expires. */
const TOKEN_TTL_S = 900;

/** What `POST /api/session` answers. */
export interface SessionAnswer {
  /** A client token for DEMO_PROJECT_ID as DEMO_USER_ID: `Authorization: Bearer …`. */
  token: string;
  expires_at: string;
  /** The producer's API, which the page calls directly. */
  api_url: string;
  project_id: number;
  input_video_key: string;
}

const here = path.dirname(new URL(import.meta.url).pathname);
const STATIC: Record<string, { file: string; type: string }> = {
  "/": { file: "index.html", type: "text/html; charset=utf-8" },
  "/app.js": { file: "app.js", type: "text/javascript; charset=utf-8" },
  "/style.css": { file: "style.css", type: "text/css; charset=utf-8" },
  // The typed client (client/), bundled for browsers by `npm run client:build`: the dashboard's
  // copy, the one file there is.
  "/reel-exports-client.js": {
    file: "../../producer/public/reel-exports-client.js",
    type: "text/javascript; charset=utf-8",
  },
};

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Cache-Control": "no-store" });
  res.end(text);
}

/** POST /api/session: a client token for the signed-in user's project, minted with API_TOKEN. */
async function session(res: ServerResponse): Promise<void> {
  const upstream = await fetch(`${PRODUCER_URL}/client-tokens`, {
    method: "POST",
    headers: { Authorization: `Bearer ${API_TOKEN}`, "Content-Type": "application/json" },
    body: JSON.stringify({
      project_ids: [DEMO_PROJECT_ID],
      user_id: DEMO_USER_ID,
      ttl_s: TOKEN_TTL_S,
    }),
  });
  if (upstream.status !== 201) return sendJson(res, upstream.status, await upstream.json());
  const { token, expires_at } = (await upstream.json()) as { token: string; expires_at: string };
  const answer: SessionAnswer = {
    token,
    expires_at,
    api_url: PRODUCER_URL,
    project_id: DEMO_PROJECT_ID,
    input_video_key: DEMO_INPUT_KEY,
  };
  sendJson(res, 201, answer);
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
  if (req.method === "POST" && url.pathname === "/api/session") return session(res);
  sendJson(res, 404, {
    error: { code: "not_found", message: `no route for ${req.method} ${url.pathname}` },
  });
}

const server = createServer((req, res) => {
  handle(req, res).catch((error: unknown) => {
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
