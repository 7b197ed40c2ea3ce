// Live status: the Durable Objects behind GET /live, with hibernatable WebSockets.
//
// Keying: one LiveHub per project (`idFromName("project:<id>")`) and one "all" hub for operators.
// The publisher (shared/live-publisher.ts) tells the job's project hub and the "all" hub of each
// change: two calls per change however many clients listen, spread over projects. A ticket has
// ONE WebSocket, held by one object: an operators' ticket's by the "all" hub, a one-project
// ticket's by that project's hub, a several-project ticket's by its own LiveChannel
// (`idFromName("channel:<ticket id>")`), which subscribes to its projects' hubs (up to 100, past
// the 10 tags a socket may carry). A hub forwards to its subscribed channels and calls none when
// it has none; idle sockets hibernate, each with its ticket's scope as its attachment.
//
// On connect the object accepts the socket (and a channel subscribes) *before* it reads the
// snapshot from D1, so no change falls between the two; changes that arrive while it reads wait
// and follow the snapshot. Clients keep the highest `version` per job.
import { DurableObject } from "cloudflare:workers";
import type { Dispatcher } from "./dispatcher.ts";
import { fairKeyOf } from "./fair-queue.ts";
import {
  ALL_HUB,
  LIVE_SOCKET_HEADER,
  type LiveMessage,
  type LiveProgress,
  projectHubName,
  projectOfHub,
  QUEUE_MESSAGE_INTERVAL_MS,
  QUEUE_MESSAGE_JOBS,
  type SocketInfo,
} from "./live-keys.ts";
import type { LiveScope } from "./live-ticket.ts";
import { log } from "./log.ts";
import { listJobs } from "./sql/jobs/listings.ts";
import { type Job, type JobRow, toJob } from "./sql/jobs/row.ts";

/** The bindings the live-status objects use (both Workers have them). */
export interface LiveEnv {
  DB: D1Database;
  LIVE_HUB: DurableObjectNamespace<LiveHub>;
  LIVE_CHANNEL: DurableObjectNamespace<LiveChannel>;
  /** The dispatcher that estimates queue positions (one per RunPod endpoint). */
  DISPATCHER: DurableObjectNamespace<Dispatcher>;
  RUNPOD_ENDPOINT_ID?: string;
}

/** Finished jobs in a snapshot, newest first. */
export const SNAPSHOT_FINISHED = 20;
/** Active jobs in a snapshot of projects, at most. */
export const SNAPSHOT_ACTIVE = 200;
/** The operators' snapshot: the active and the 20 newest finished of the newest this many jobs. */
export const SNAPSHOT_ALL_WINDOW = 100;

const FINISHED = new Set(["complete", "error"]);

const newestFirst = (a: JobRow, b: JobRow) =>
  a.created_at === b.created_at ? (a.id < b.id ? 1 : -1) : a.created_at < b.created_at ? 1 : -1;

/**
 * A ticket's snapshot, newest first: the active jobs of its projects and their 20 most recently
 * created finished ones, through the listings of shared/sql/jobs/listings.ts (index ranges: the
 * active ones by (project_id, status), then the newest 20 + (active) rows by (project_id,
 * created_at), which hold the 20 newest finished). Operators: the same within the newest
 * SNAPSHOT_ALL_WINDOW jobs.
 */
export async function snapshotJobs(db: D1Database, scope: LiveScope): Promise<Job[]> {
  const list = (query: Omit<Parameters<typeof listJobs>[1], "after">) =>
    listJobs(db, { ...query, after: null }).then((rows) => rows.slice(0, query.limit));
  let active: JobRow[];
  let recent: JobRow[];
  if (scope.all) {
    recent = await list({ projectIds: null, statuses: null, limit: SNAPSHOT_ALL_WINDOW });
    active = recent.filter((row) => !FINISHED.has(row.status));
  } else {
    const projectIds = scope.projectIds;
    active = await list({ projectIds, statuses: "active", limit: SNAPSHOT_ACTIVE });
    recent = await list({ projectIds, statuses: null, limit: SNAPSHOT_FINISHED + active.length });
  }
  const finished = recent.filter((row) => FINISHED.has(row.status)).slice(0, SNAPSHOT_FINISHED);
  // The two reads are not one transaction: a job may be in both; its newer row wins.
  const byId = new Map<string, JobRow>();
  for (const row of [...active, ...finished]) {
    const seen = byId.get(row.id);
    if (!seen || seen.version < row.version) byId.set(row.id, row);
  }
  return [...byId.values()].sort(newestFirst).map(toJob);
}

const inScope = (scope: LiveScope, projectId: number) =>
  scope.all || scope.projectIds.includes(projectId);

function parseSocketInfo(header: string | null): SocketInfo | null {
  try {
    const info = JSON.parse(header ?? "null") as SocketInfo | null;
    return info && typeof info.token === "string" && typeof info.scope === "object" ? info : null;
  } catch {
    return null;
  }
}

/**
 * What every live object shares: it accepts hibernatable sockets, sends each its snapshot, answers
 * "ping" with "pong" without waking, and sends changes to the sockets whose scope they are in.
 */
abstract class LiveRoom extends DurableObject<LiveEnv> {
  /** Sockets whose snapshot is being read, with the changes that came meanwhile (in memory: a
   * connecting request keeps the object awake). */
  readonly #waiting = new Map<WebSocket, string[]>();

  constructor(ctx: DurableObjectState, env: LiveEnv) {
    super(ctx, env);
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair("ping", "pong"));
  }

  /** Before the snapshot is read: a channel subscribes to its projects' hubs here. */
  protected async opened(_info: SocketInfo): Promise<void> {}

  /** After a socket's snapshot was sent. */
  protected async connected(): Promise<void> {}

  /** After a socket closed or failed. */
  protected async closed(_ws: WebSocket, _info: SocketInfo): Promise<void> {}

  override async fetch(request: Request): Promise<Response> {
    const info = parseSocketInfo(request.headers.get(LIVE_SOCKET_HEADER));
    if (!info || request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return new Response("a WebSocket upgrade from GET /live is expected", { status: 400 });
    }
    const [client, server] = Object.values(new WebSocketPair()) as [WebSocket, WebSocket];
    this.ctx.acceptWebSocket(server);
    server.serializeAttachment(info);
    const waiting: string[] = [];
    this.#waiting.set(server, waiting);
    try {
      await this.opened(info);
      const jobs = await snapshotJobs(this.env.DB, info.scope);
      server.send(JSON.stringify({ type: "snapshot", jobs } satisfies LiveMessage));
      for (const text of waiting) server.send(text);
      await this.connected().catch((error: unknown) => {
        log("warn", "live queue messages not planned", { error: String(error) });
      });
    } catch (error) {
      // The client sees a failed upgrade (500) and reconnects with a fresh ticket.
      server.close(1011, "snapshot failed");
      await this.closed(server, info).catch(() => {});
      throw error;
    } finally {
      this.#waiting.delete(server);
    }
    return new Response(null, { status: 101, webSocket: client });
  }

  /** Sends `job` to every open socket that may see it; answers how many there are. */
  protected broadcast(job: Job): number {
    return this.sendToScope(
      JSON.stringify({ type: "job", job } satisfies LiveMessage),
      job.project_id,
    );
  }

  /**
   * Sends a message about one project's jobs (`projectId`; null: jobs of any project, for the
   * sockets that see every project) to every open socket that may see it; answers how many.
   */
  protected sendToScope(text: string, projectId: number | null): number {
    let listeners = 0;
    for (const ws of this.ctx.getWebSockets()) {
      if (ws.readyState !== WebSocket.OPEN) continue;
      const info = ws.deserializeAttachment() as SocketInfo | null;
      if (!info) continue;
      if (projectId === null ? !info.scope.all : !inScope(info.scope, projectId)) continue;
      listeners += 1;
      const waiting = this.#waiting.get(ws);
      if (waiting) {
        waiting.push(text);
        continue;
      }
      try {
        ws.send(text);
      } catch (error) {
        log("warn", "live send failed", { error: String(error) });
      }
    }
    return listeners;
  }

  /** Clients send only "ping", which the auto-response answers without waking the object. */
  override webSocketMessage(_ws: WebSocket, _message: string | ArrayBuffer): void {}

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    // Completes the closing handshake; 1005 and 1006 (no code, abnormal) may not be sent back.
    try {
      ws.close(code === 1005 || code === 1006 ? 1000 : code, reason);
    } catch {
      // Already closed (the runtime may have answered the close itself).
    }
    await this.#forget(ws);
  }

  override async webSocketError(ws: WebSocket, error: unknown): Promise<void> {
    log("info", "live socket failed", { error: String(error) });
    await this.#forget(ws);
  }

  async #forget(ws: WebSocket): Promise<void> {
    const info = ws.deserializeAttachment() as SocketInfo | null;
    if (info) await this.closed(ws, info);
  }
}

const SUBSCRIPTION = "sub:";
/** When the hub last sent a `queue` message (ms). */
const QUEUE_SENT = "queue-sent";

/**
 * One project's changes (or, as "all", every project's): sent to the sockets it holds and
 * forwarded to the channels that subscribed (kept in its storage, so they survive eviction).
 */
export class LiveHub extends LiveRoom {
  /** Channel name → the token of the connection that subscribed it last. */
  #subscriptions: Promise<Map<string, string>> | undefined;

  #channels(): Promise<Map<string, string>> {
    this.#subscriptions ??= this.ctx.storage
      .list<string>({ prefix: SUBSCRIPTION })
      .then(
        (stored) =>
          new Map([...stored].map(([key, token]) => [key.slice(SUBSCRIPTION.length), token])),
      )
      .catch((error: unknown) => {
        this.#subscriptions = undefined;
        throw error;
      });
    return this.#subscriptions;
  }

  /** A change of one of this hub's jobs. Rejects when a subscribed channel could not be told. */
  async publish(job: Job): Promise<void> {
    this.broadcast(job);
    if (job.status === "pending") await this.#queueSoon();
    await this.#forward((channel) => channel.deliver(job));
  }

  /** A progress report D1 did not record: to the sockets and channels, like a change. */
  async publishProgress(update: LiveProgress): Promise<void> {
    const text = JSON.stringify({ type: "progress", ...update } satisfies LiveMessage);
    this.sendToScope(text, update.project_id);
    await this.#forward((channel) => channel.deliverText(text, update.project_id));
  }

  /** The project this hub is for; null for the operators' hub. */
  #projectId(): number | null {
    return projectOfHub(this.ctx.id.name ?? "");
  }

  protected override async connected(): Promise<void> {
    await this.#queueSoon();
  }

  /** Sends `forward` to every subscribed channel; drops those with nobody listening. */
  async #forward(forward: (channel: DurableObjectStub<LiveChannel>) => Promise<number>) {
    const channels = await this.#channels();
    if (channels.size === 0) return;
    const results = await Promise.allSettled(
      [...channels].map(async ([name, token]) => {
        const listeners = await forward(
          this.env.LIVE_CHANNEL.get(this.env.LIVE_CHANNEL.idFromName(name)),
        );
        if (listeners === 0) await this.unsubscribe(name, token);
      }),
    );
    const failed = results.filter((result) => result.status === "rejected");
    if (failed.length > 0) {
      throw new Error(`${failed.length} live channel(s) not reached: ${String(failed[0]?.reason)}`);
    }
  }

  /** Plans the next `queue` message: now, or QUEUE_MESSAGE_INTERVAL_MS after the last one. */
  async #queueSoon(): Promise<void> {
    if ((await this.ctx.storage.getAlarm()) !== null) return;
    const last = (await this.ctx.storage.get<number>(QUEUE_SENT)) ?? 0;
    await this.ctx.storage.setAlarm(Math.max(Date.now(), last + QUEUE_MESSAGE_INTERVAL_MS));
  }

  /**
   * The `queue` message: the queue positions of this project's oldest pending jobs (the
   * operators' hub: of any project), sent while someone listens and jobs are pending, at most
   * every QUEUE_MESSAGE_INTERVAL_MS. One D1 read and one dispatcher call a message.
   */
  override async alarm(): Promise<void> {
    const listening =
      this.ctx.getWebSockets().some((ws) => ws.readyState === WebSocket.OPEN) ||
      (await this.#channels()).size > 0;
    if (!listening) return;
    const projectId = this.#projectId();
    const all = (this.ctx.id.name ?? "") === ALL_HUB;
    if (projectId === null && !all) return;
    const pending = (
      await listJobs(this.env.DB, {
        projectIds: all ? null : [projectId as number],
        statuses: "pending",
        limit: QUEUE_MESSAGE_JOBS,
        after: null,
      })
    ).slice(0, QUEUE_MESSAGE_JOBS);
    if (pending.length === 0) return;
    const dispatcher = this.env.DISPATCHER.get(
      this.env.DISPATCHER.idFromName(this.env.RUNPOD_ENDPOINT_ID ?? ""),
    );
    const jobs = await dispatcher.estimate(
      pending.map((row) => ({ id: row.id, key: fairKeyOf(row), type: row.type })),
    );
    const text = JSON.stringify({ type: "queue", jobs } satisfies LiveMessage);
    this.sendToScope(text, projectId);
    await this.ctx.storage.put(QUEUE_SENT, Date.now());
    if (projectId !== null) await this.#forward((channel) => channel.deliverText(text, projectId));
    await this.ctx.storage.setAlarm(Date.now() + QUEUE_MESSAGE_INTERVAL_MS);
  }

  async subscribe(channel: string, token: string): Promise<void> {
    const channels = await this.#channels();
    channels.set(channel, token);
    await this.ctx.storage.put(SUBSCRIPTION + channel, token);
    await this.#queueSoon();
  }

  /** Drops `channel` unless another connection subscribed it since (another token). */
  async unsubscribe(channel: string, token: string): Promise<void> {
    const channels = await this.#channels();
    if (channels.get(channel) !== token) return;
    channels.delete(channel);
    await this.ctx.storage.delete(SUBSCRIPTION + channel);
  }
}

/** The one socket of a ticket that names several projects, fed by those projects' hubs. */
export class LiveChannel extends LiveRoom {
  #hub(projectId: number) {
    return this.env.LIVE_HUB.get(this.env.LIVE_HUB.idFromName(projectHubName(projectId)));
  }

  /** A project hub's forward; 0 listeners tells the hub to drop this channel. */
  deliver(job: Job): number {
    return this.broadcast(job);
  }

  /** A project hub's `queue` or `progress` message, forwarded as it is. */
  deliverText(text: string, projectId: number): number {
    return this.sendToScope(text, projectId);
  }

  protected override async opened(info: SocketInfo): Promise<void> {
    const { channel, scope } = info;
    if (!channel || scope.all) return;
    await Promise.all(scope.projectIds.map((id) => this.#hub(id).subscribe(channel, info.token)));
  }

  protected override async closed(ws: WebSocket, info: SocketInfo): Promise<void> {
    const { channel, scope } = info;
    if (!channel || scope.all) return;
    const others = this.ctx
      .getWebSockets()
      .filter((other) => other !== ws && other.readyState === WebSocket.OPEN);
    if (others.length > 0) return;
    // Best effort: a hub that keeps a stale subscription drops it on its next forward (0).
    const results = await Promise.allSettled(
      scope.projectIds.map((id) => this.#hub(id).unsubscribe(channel, info.token)),
    );
    if (results.some((result) => result.status === "rejected")) {
      log("info", "live channel unsubscribe incomplete", { channel });
    }
  }
}
