// @reel-exports/client: a typed client of the reel-exports API, for browsers (with a scoped client
// token) and Node (with API_TOKEN or a client token). Its types are generated from the producer's
// OpenAPI document (./api.ts, by openapi-typescript; a test fails when they drift); calls go
// through openapi-fetch, so `client.api` is the whole typed API and the helpers below are the
// common cases. `watch()` follows GET /live with partysocket's ReconnectingWebSocket: every
// connection asks for a fresh ticket (also after the 4001 close at a session's end), reconnects
// with backoff, and keeps the highest `version` per job. `waitFor()` resolves with a job once it
// has finished.
import createClient, { type Client } from "openapi-fetch";
import ReconnectingWebSocket from "partysocket/ws";
import type { components, paths } from "./api.ts";

export type { components, paths };

type Schemas = components["schemas"];
export type Job = Schemas["Job"];
export type JobEvent = Schemas["EventList"]["events"][number];
export type CreateExportRequest = Schemas["CreateExportRequest"];
export type BatchCreateRequest = Schemas["BatchCreateRequest"];
export type LiveMessage = Schemas["LiveMessage"];
export type QueueMessage = Extract<LiveMessage, { type: "queue" }>;
export type ProgressMessage = Extract<LiveMessage, { type: "progress" }>;
type ErrorEnvelope = Schemas["Error"];

/** An error answer of the API: its HTTP status, its stable `code`, its message and issues. */
export class ReelExportsError extends Error {
  readonly status: number;
  readonly code: string;
  readonly issues: ErrorEnvelope["error"]["issues"];
  constructor(status: number, body: unknown) {
    const error = (body as Partial<ErrorEnvelope> | undefined)?.error;
    super(error?.message ?? `HTTP ${status}`);
    this.name = "ReelExportsError";
    this.status = status;
    this.code = error?.code ?? "http_error";
    this.issues = error?.issues;
  }
}

/** A bearer token, or a function that gives one (a client token the backend renews). */
export type TokenSource = string | (() => string | Promise<string>);

export interface ClientOptions {
  /** The producer's origin, e.g. https://exports.example.com. */
  baseUrl: string;
  token?: TokenSource;
  fetch?: typeof fetch;
  /** A WebSocket class where the runtime has none (Node 20: `ws`); the global one otherwise. */
  WebSocket?: typeof WebSocket;
}

/** What `watch()` follows: some projects, or all of them (ADMIN_TOKEN). */
export type WatchScope = { projectIds: number[] } | { allProjects: true };

export interface WatchHandlers {
  /** A job changed (or was in a snapshot): the newest version of it seen so far. */
  job?: (job: Job) => void;
  /** Where pending jobs stand (no version: as they come). */
  queue?: (message: QueueMessage) => void;
  /** A progress report D1 did not record (apply to the job at that `version` and `attempt`). */
  progress?: (message: ProgressMessage) => void;
  /** A connection's first message: the active jobs and the newest finished ones. */
  snapshot?: (jobs: Job[]) => void;
  /**
   * The socket's state: "connecting", "open", "closed" (with its close code; reconnecting unless
   * you closed it: after a backoff, or at once after the session's end, code 4001).
   */
  state?: (state: "connecting" | "open" | "closed", detail?: { code: number }) => void;
}

export interface WatchOptions {
  /** First reconnection delay (ms, growing 1.3× per failure to maxReconnectionDelay). */
  minReconnectionDelay?: number;
  maxReconnectionDelay?: number;
  /** `ping` this often (ms) so that proxies keep an idle socket. */
  pingMs?: number;
}

export interface Watch {
  /** The newest version seen of a job. */
  job(id: string): Job | undefined;
  /** Every job seen, newest versions. */
  jobs(): Job[];
  close(): void;
}

const FINISHED = new Set(["complete", "error"]);
/** The session's end (LIVE_SESSION_MAX_S): not a failure; reconnect with a fresh ticket. */
export const LIVE_SESSION_ENDED = 4001;

export function createReelExportsClient(options: ClientOptions) {
  const baseUrl = options.baseUrl.replace(/\/+$/, "");
  const api: Client<paths> = createClient<paths>({
    baseUrl,
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
  const tokenOf = async () =>
    typeof options.token === "function" ? await options.token() : options.token;
  api.use({
    async onRequest({ request }) {
      const token = await tokenOf();
      if (token) request.headers.set("Authorization", `Bearer ${token}`);
      return request;
    },
  });

  /** The answer's data, or a ReelExportsError for an error answer. */
  async function ok<T>(
    call: Promise<{ data?: T; error?: unknown; response: Response }>,
  ): Promise<T> {
    const { data, error, response } = await call;
    if (error !== undefined || data === undefined)
      throw new ReelExportsError(response.status, error);
    return data;
  }

  const client = {
    /** The whole API, typed from its OpenAPI document (openapi-fetch). */
    api,

    /** POST /exports; with `idempotencyKey`, a repeat answers the first job. */
    async createExport(body: CreateExportRequest, opts: { idempotencyKey?: string } = {}) {
      const header = opts.idempotencyKey ? { "Idempotency-Key": opts.idempotencyKey } : {};
      return (await ok(api.POST("/exports", { body, params: { header } }))).job;
    },

    /** POST /exports/batch: 1–100 exports, all or nothing; the jobs in request order. */
    async createExports(exports: BatchCreateRequest["exports"]) {
      return (await ok(api.POST("/exports/batch", { body: { exports } }))).jobs;
    },

    async getExport(id: string) {
      return (await ok(api.GET("/exports/{id}", { params: { path: { id } } }))).job;
    },

    async cancelExport(id: string) {
      return (await ok(api.POST("/exports/{id}/cancel", { params: { path: { id } } }))).job;
    },

    async listExports(query: paths["/exports"]["get"]["parameters"]["query"]) {
      return ok(api.GET("/exports", { params: { query } }));
    },

    async events(id: string) {
      return (await ok(api.GET("/exports/{id}/events", { params: { path: { id } } }))).events;
    },

    /** A signed URL of the output (no bearer needed): for <video src> or a download link. */
    async downloadUrl(id: string) {
      return ok(api.POST("/exports/{id}/download-url", { params: { path: { id } } }));
    },

    /** POST /live-tickets: a ticket for GET /live. */
    async liveTicket(scope: WatchScope) {
      const body =
        "allProjects" in scope
          ? { all_projects: true as const }
          : { project_ids: scope.projectIds };
      return ok(api.POST("/live-tickets", { body }));
    },

    /**
     * Follows GET /live for `scope`: a fresh ticket for every connection, reconnects with
     * backoff (at once after a session's 4001 end), the highest `version` per job.
     */
    watch(scope: WatchScope, handlers: WatchHandlers, watchOptions: WatchOptions = {}): Watch {
      const seen = new Map<string, Job>();
      const take = (job: Job) => {
        const known = seen.get(job.id);
        if (known && known.version >= job.version) return;
        seen.set(job.id, job);
        handlers.job?.(job);
      };
      // Each change of state once ("closed" is seen both as an error and as a close).
      let last: "connecting" | "open" | "closed" | null = null;
      let closedByUs = false;
      const report = (state: "connecting" | "open" | "closed", code?: number) => {
        if (state === "closed" && last === "closed") return;
        last = state;
        handlers.state?.(state, code === undefined ? undefined : { code });
      };
      const liveUrl = async () => {
        report("connecting");
        const { ticket } = await client.liveTicket(scope);
        const url = new URL("/live", `${baseUrl}/`);
        url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
        url.searchParams.set("ticket", ticket);
        return url.href;
      };
      const socket = new ReconnectingWebSocket(liveUrl, undefined, {
        WebSocket: options.WebSocket ?? globalThis.WebSocket,
        minReconnectionDelay: watchOptions.minReconnectionDelay ?? 500,
        maxReconnectionDelay: watchOptions.maxReconnectionDelay ?? 10_000,
        reconnectionDelayGrowFactor: 1.3,
        connectionTimeout: 10_000,
        // A session's end is no failure: reconnected at once below, not after a backoff.
        shouldReconnectOnClose: (event) => event.code !== LIVE_SESSION_ENDED,
      });
      socket.addEventListener("open", () => report("open"));
      socket.addEventListener("close", (event) => {
        report("closed", event.code);
        if (event.code === LIVE_SESSION_ENDED && !closedByUs) socket.reconnect();
      });
      // A connection that never opened (its ticket could not be had): closed too.
      socket.addEventListener("error", () => {
        if (last === "connecting") report("closed", 1006);
      });
      socket.addEventListener("message", (event) => {
        if (typeof event.data !== "string" || event.data === "pong") return;
        const message = JSON.parse(event.data) as LiveMessage;
        switch (message.type) {
          case "snapshot":
            for (const job of message.jobs) take(job);
            handlers.snapshot?.(message.jobs);
            break;
          case "job":
            take(message.job);
            break;
          case "queue":
            handlers.queue?.(message);
            break;
          case "progress":
            handlers.progress?.(message);
            break;
        }
      });
      const ping = setInterval(() => {
        if (socket.readyState === socket.OPEN) socket.send("ping");
      }, watchOptions.pingMs ?? 30_000);
      return {
        job: (id) => seen.get(id),
        jobs: () => [...seen.values()],
        close() {
          closedByUs = true;
          clearInterval(ping);
          socket.close(1000, "closed by the client");
        },
      };
    },

    /**
     * The job once it has finished (complete or error): from GET /exports/{id} if it already has,
     * else from its project's live messages. Rejects with the `signal`'s reason when aborted.
     */
    async waitFor(id: string, opts: { signal?: AbortSignal } = {}): Promise<Job> {
      const job = await client.getExport(id);
      if (FINISHED.has(job.status)) return job;
      return new Promise<Job>((resolve, reject) => {
        let done = false;
        const finish = (result: Job | null, error?: unknown) => {
          if (done) return;
          done = true;
          watch.close();
          opts.signal?.removeEventListener("abort", onAbort);
          if (result) resolve(result);
          else reject(error);
        };
        const onAbort = () => finish(null, opts.signal?.reason);
        const watch = client.watch(
          { projectIds: [job.project_id] },
          {
            job: (next) => {
              if (next.id === id && FINISHED.has(next.status)) finish(next);
            },
            // A snapshot after a reconnection may not carry the job (it finished long ago, or
            // never changed since): ask the API once more.
            snapshot: () => {
              client
                .getExport(id)
                .then((now) => {
                  if (FINISHED.has(now.status)) finish(now);
                })
                .catch(() => {});
            },
          },
        );
        if (opts.signal?.aborted) onAbort();
        else opts.signal?.addEventListener("abort", onAbort);
      });
    },
  };
  return client;
}

export type ReelExportsClient = ReturnType<typeof createReelExportsClient>;
