// The harness's HTTP client of the producer: every answer is counted by route and status, every
// 5xx and network error is kept with its time, so the report can tell them apart afterwards.
import { bump, type Counts, sleep } from "./util.ts";

export interface Answer {
  status: number;
  text: string;
  /** The body parsed as JSON, or undefined when it is not JSON. */
  json: unknown;
}

export interface ServerError {
  at: number;
  route: string;
  status: number | "network";
  detail: string;
}

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g;

/** `POST /exports/:id/cancel`: the path without ids or query. */
export function routeOf(method: string, url: string): string {
  const { pathname } = new URL(url, "http://x");
  return `${method} ${pathname.replace(UUID, ":id").replace(/\/dead-letters\/[^/]+/, "/dead-letters/:id")}`;
}

export class Api {
  readonly base: string;
  readonly tokens: { api: string; admin: string };
  /** route → status → answers. */
  readonly answers = new Map<string, Counts>();
  readonly serverErrors: ServerError[] = [];

  constructor(base: string, tokens: { api: string; admin: string }) {
    this.base = base;
    this.tokens = tokens;
  }

  /** One request; never throws: a network error is status 0 (and counted as "network"). */
  async request(
    method: string,
    path: string,
    options: {
      token?: "api" | "admin" | null;
      body?: unknown;
      headers?: Record<string, string>;
      timeoutMs?: number;
    } = {},
  ): Promise<Answer> {
    const url = path.startsWith("http") ? path : `${this.base}${path}`;
    const route = routeOf(method, url);
    const headers: Record<string, string> = { ...options.headers };
    const token = options.token === undefined ? "api" : options.token;
    if (token !== null) headers.authorization = `Bearer ${this.tokens[token]}`;
    if (options.body !== undefined) headers["content-type"] = "application/json";
    const counts = this.answers.get(route) ?? {};
    this.answers.set(route, counts);
    try {
      const res = await fetch(url, {
        method,
        headers,
        body: options.body === undefined ? undefined : JSON.stringify(options.body),
        signal: AbortSignal.timeout(options.timeoutMs ?? 30_000),
      });
      const text = await res.text();
      bump(counts, String(res.status));
      if (res.status >= 500) {
        this.serverErrors.push({
          at: Date.now(),
          route,
          status: res.status,
          detail: text.slice(0, 300),
        });
      }
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {}
      return { status: res.status, text, json };
    } catch (error) {
      bump(counts, "network");
      this.serverErrors.push({
        at: Date.now(),
        route,
        status: "network",
        detail: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
      });
      return { status: 0, text: String(error), json: undefined };
    }
  }

  /** A GET whose 5xx and network errors are tried again (reads are safe to repeat). */
  async read<T>(path: string, token: "api" | "admin" = "api", tries = 30): Promise<T> {
    for (let i = 0; ; i++) {
      const answer = await this.request("GET", path, { token });
      if (answer.status === 200) return answer.json as T;
      if ((answer.status !== 0 && answer.status < 500) || i >= tries) {
        throw new Error(`GET ${path}: ${answer.status} ${answer.text.slice(0, 200)}`);
      }
      await sleep(Math.min(2000, 200 * (i + 1)));
    }
  }
}
