// Webhook receivers under /__receiver/{name}, served by the emulator's HTTP server: each records
// the deliveries it gets and answers them as configured (a status sequence, or a hang), so tests
// and `npm start` can play the frontend's backend that outbound webhooks (NOTIFY_URL) go to.
// Node built-ins only; see emulator/README.md for the routes.

import type { IncomingMessage, ServerResponse } from "node:http";
import { clearTimeout, setTimeout } from "node:timers";

/** How a receiver answers deliveries (`PUT /__receiver/{name}/config`). */
export interface ReceiverConfig {
  /** Statuses of the next deliveries, first in first out, each consumed by one delivery. */
  answers: number[];
  /** The status once `answers` is empty. */
  status: number;
  /** Each delivery waits this long before its answer, ms; longer than a client's timeout = a hang. */
  hangMs: number;
}

/** One delivery as the receiver got it (`GET /__receiver/{name}/requests`). */
export interface ReceivedRequest {
  method: string;
  /** Lowercased names; a header sent several times has its values joined with ", ". */
  headers: Record<string, string>;
  /** The raw text, byte for byte as sent (decoded as UTF-8), so signatures can be checked. */
  body: string;
  receivedAt: string;
  /** The status answered; null while hanging, or when the client left before the answer. */
  status: number | null;
}

export interface WebhookReceivers {
  /** Answers a request whose path starts with `/__receiver/`; `raw` is its body, already read. */
  handle(req: IncomingMessage, res: ServerResponse, raw: string): Promise<void>;
  /** Ends every pending hang without an answer (the server closes the sockets). */
  close(): void;
}

export const RECEIVER_PREFIX = "/__receiver/";

export const DEFAULT_RECEIVER_CONFIG: ReceiverConfig = { answers: [], status: 200, hangMs: 0 };

/** Requests kept per receiver: the last ones, so a long `npm start` session stays bounded. */
const MAX_RECEIVED_KEPT = 1000;
const NAME = /^[A-Za-z0-9_-]{1,64}$/;
const CONFIG_KEYS = ["answers", "status", "hangMs"];

const isStatus = (value: unknown): value is number =>
  Number.isInteger(value) && (value as number) >= 100 && (value as number) <= 599;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Checks a receiver config (PUT body); missing fields take the defaults. Throws what is wrong. */
export function parseReceiverConfig(value: unknown): ReceiverConfig {
  if (!isRecord(value)) throw new Error("config must be a JSON object");
  const unknown = Object.keys(value).find((key) => !CONFIG_KEYS.includes(key));
  if (unknown !== undefined) throw new Error(`unknown config key: ${unknown}`);
  const { answers = [], status = DEFAULT_RECEIVER_CONFIG.status, hangMs = 0 } = value;
  if (!Array.isArray(answers) || !answers.every(isStatus)) {
    throw new Error("answers must be an array of HTTP statuses (integers 100..599)");
  }
  if (!isStatus(status)) throw new Error("status must be an HTTP status (an integer 100..599)");
  if (typeof hangMs !== "number" || !Number.isFinite(hangMs) || hangMs < 0) {
    throw new Error("hangMs must be a number of milliseconds >= 0");
  }
  return { answers: [...answers], status, hangMs };
}

interface Receiver {
  config: ReceiverConfig;
  requests: ReceivedRequest[];
}

/** Node's raw header pairs, so repeated headers keep every value (req.headers drops some). */
function headersOf(req: IncomingMessage): Record<string, string> {
  const headers: Record<string, string> = {};
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = (raw[i] ?? "").toLowerCase();
    const value = raw[i + 1] ?? "";
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  return headers;
}

function answer(res: ServerResponse, status: number, body?: unknown): void {
  if (res.headersSent || res.destroyed) return;
  // 1xx, 204 and 304 carry no body.
  if (body === undefined || status < 200 || status === 204 || status === 304) {
    res.writeHead(status);
    res.end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
}

export function createWebhookReceivers(log: (line: string) => void = () => {}): WebhookReceivers {
  const receivers = new Map<string, Receiver>();
  /** Ends a pending hang: clears its timer and lets its delivery finish. */
  const hangs = new Set<() => void>();
  let closed = false;

  function receiver(name: string): Receiver {
    let found = receivers.get(name);
    if (!found) {
      found = { config: { ...DEFAULT_RECEIVER_CONFIG, answers: [] }, requests: [] };
      receivers.set(name, found);
    }
    return found;
  }

  /** Waits `ms`, or less if the client leaves or the emulator closes. */
  function hang(res: ServerResponse, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const end = () => {
        clearTimeout(timer);
        res.off("close", end);
        hangs.delete(end);
        resolve();
      };
      // Unref'd: the listening server keeps the process up, a forgotten hang must not.
      const timer = setTimeout(end, ms);
      timer.unref();
      // Before the answer, "close" on the response means the client went away.
      res.once("close", end);
      hangs.add(end);
    });
  }

  async function deliver(name: string, req: IncomingMessage, res: ServerResponse, raw: string) {
    const { config, requests } = receiver(name);
    const record: ReceivedRequest = {
      method: req.method ?? "POST",
      headers: headersOf(req),
      body: raw,
      receivedAt: new Date().toISOString(),
      status: null,
    };
    requests.push(record);
    if (requests.length > MAX_RECEIVED_KEPT) requests.shift();
    // Taken on arrival, so the sequence follows the deliveries' order even when they hang.
    const status = config.answers.shift() ?? config.status;
    if (config.hangMs > 0 && !res.destroyed) await hang(res, config.hangMs);
    if (closed || res.destroyed) {
      log(`receiver ${name}: ${record.method} left unanswered (client gone or emulator closed)`);
      return;
    }
    record.status = status;
    log(`receiver ${name}: ${record.method} answered ${status}`);
    answer(
      res,
      status,
      status >= 200 && status < 300
        ? { ok: true }
        : { error: `receiver configured to answer ${status}` },
    );
  }

  async function handle(req: IncomingMessage, res: ServerResponse, raw: string): Promise<void> {
    const method = req.method ?? "GET";
    const pathname = new URL(req.url ?? "/", "http://emulator").pathname;
    let parts: string[];
    try {
      parts = pathname.slice(RECEIVER_PREFIX.length).split("/").map(decodeURIComponent);
    } catch {
      return answer(res, 400, { error: "malformed path" });
    }
    const [name = "", action] = parts;
    if (!NAME.test(name)) {
      return answer(res, 400, { error: "receiver name must match [A-Za-z0-9_-]{1,64}" });
    }
    if (parts.length === 1) {
      if (method === "DELETE") {
        receivers.delete(name);
        return answer(res, 204);
      }
      if (method === "GET" || method === "PUT") {
        return answer(res, 405, { error: "method not allowed" });
      }
      return deliver(name, req, res, raw);
    }
    if (parts.length === 2 && action === "config") {
      if (method === "GET") return answer(res, 200, receiver(name).config);
      if (method !== "PUT") return answer(res, 405, { error: "method not allowed" });
      let config: ReceiverConfig;
      try {
        config = parseReceiverConfig(raw === "" ? undefined : JSON.parse(raw));
      } catch (error) {
        const message =
          error instanceof SyntaxError ? "body must be JSON" : (error as Error).message;
        return answer(res, 400, { error: message });
      }
      receiver(name).config = config;
      return answer(res, 200, config);
    }
    if (parts.length === 2 && action === "requests") {
      if (method !== "GET") return answer(res, 405, { error: "method not allowed" });
      return answer(res, 200, { requests: receiver(name).requests });
    }
    return answer(res, 404, { error: "not found" });
  }

  return {
    handle,
    close() {
      closed = true;
      for (const end of [...hangs]) end();
    },
  };
}
