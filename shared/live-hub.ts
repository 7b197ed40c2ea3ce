// Live status: the Durable Objects behind GET /live, with hibernatable WebSockets.
//
// Keying (names in shared/live-keys.ts): LiveHub objects in three roles, by name, and LiveChannel.
// - Shards `all:<project id mod LIVE_SHARDS>` (16): the only objects the publisher calls
//   (shared/live-publisher.ts), with ONE call per shard a batch of changes touches. A shard holds
//   no socket; it forwards each batch, in one call per subscriber, to the hubs that subscribed to
//   it: the operators' hub (every job) and the project hubs of the batch's jobs. A shard with no
//   subscriber forwards nothing, and a project nobody listens to costs no call past its shard.
// - `project:<id>`: the sockets of one-project tickets, and the channels of several-project
//   tickets that subscribed to it. It subscribes itself to its shard while it has a socket or a
//   channel, and unsubscribes when the last one goes.
// - `operators`: the sockets of `all_projects` tickets, subscribed to every shard while it has one.
// A ticket has ONE WebSocket, held by one object: the project's hub, the operators' hub, or for a
// ticket of several projects its own LiveChannel (`channel:<ticket id>`), which subscribes to its
// projects' hubs (up to 100, past the 10 tags a socket may carry). Subscriptions are kept in the
// subscribed object's storage (they survive eviction and hibernation), each with the token of the
// connection that made it: an unsubscribe drops only its own, so a late one never undoes a newer
// subscription. A forward answered "0 listeners" drops the subscriber (a socket that died without
// closing). Idle sockets hibernate, each with its ticket's scope as its attachment.
//
// On connect the object accepts the socket, and subscribes (a channel to its hubs, a hub to its
// shards, each awaited down the chain) *before* it reads the snapshot from D1, so no change falls
// between the two; changes that arrive while it reads wait and follow the snapshot. Clients keep
// the highest `version` per job.
//
// Sessions end: each socket's attachment holds when it closes, LIVE_SESSION_MAX_S (the env of the
// object, the consumer's) after it opened. The object's one alarm is set for the earliest of its
// sockets' ends and its own work (a hub's next `queue` message); when it fires, it closes the
// sockets whose time has come with LIVE_SESSION_ENDED (4001), runs their `closed` bookkeeping,
// does its own work if due, and sets the alarm again. The client reconnects with a fresh ticket
// (a ticket is checked only when a socket opens: so a user who lost access loses it within
// LIVE_SESSION_MAX_S).
import { DurableObject } from "cloudflare:workers";
import type { Dispatcher } from "./dispatcher.ts";
import { fairKeyOf } from "./fair-queue.ts";
import { groupBy } from "./group-by.ts";
import {
  type HubRole,
  hubOfScope,
  hubRole,
  LIVE_SESSION_ENDED,
  LIVE_SHARDS,
  LIVE_SOCKET_HEADER,
  type LiveMessage,
  type LiveProgress,
  OPERATORS_HUB,
  projectHubName,
  QUEUE_MESSAGE_INTERVAL_MS,
  QUEUE_MESSAGE_JOBS,
  type SocketInfo,
  shardHubName,
  shardOfProject,
} from "./live-keys.ts";
import type { LiveScope } from "./live-ticket.ts";
import { log } from "./log.ts";
import type { QueueInfo } from "./queue-estimate.ts";
import { liveSessionMaxSeconds } from "./settings.ts";
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
  /** Seconds a socket stays open (shared/settings.ts's liveSessionMaxSeconds). */
  LIVE_SESSION_MAX_S?: string;
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
 * active ones by (project_id, status, created_at, id), then the newest 20 + (active) rows by (project_id,
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

/** What a socket carries as its attachment (it survives hibernation). */
interface HeldSocket extends SocketInfo {
  /** When its session ends (ms): LIVE_SESSION_MAX_S after it opened. */
  closesAt: number;
  /** Set when the object closed it at `closesAt` (and ran its bookkeeping). */
  ended?: true;
}

/** The reason sent with LIVE_SESSION_ENDED. */
const SESSION_ENDED_REASON = "session ended: reconnect with a fresh ticket";

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
 * "ping" with "pong" without waking, sends changes to the sockets whose scope they are in, and
 * closes each socket when its session ends (the alarm).
 */
abstract class LiveRoom extends DurableObject<LiveEnv> {
  /** Sockets whose snapshot is being read, with the changes that came meanwhile (in memory: a
   * connecting request keeps the object awake). */
  readonly #waiting = new Map<WebSocket, string[]>();

  constructor(ctx: DurableObjectState, env: LiveEnv) {
    super(ctx, env);
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair("ping", "pong"));
  }

  /** Before the snapshot is read: a channel subscribes to its projects' hubs here, a hub to its
   * shards. */
  protected async opened(_info: SocketInfo): Promise<void> {}

  /** After a socket's snapshot was sent. */
  protected async connected(): Promise<void> {}

  /** After a socket closed or failed, or its session ended. */
  protected async closed(_ws: WebSocket, _info: SocketInfo): Promise<void> {}

  /** When the object's own work needs the alarm (ms), besides the sockets' ends; null: never. */
  protected async ownAlarm(): Promise<number | null> {
    return null;
  }

  /** The object's own work when the alarm fires (it may not be due: it checks). */
  protected async ownAlarmWork(): Promise<void> {}

  override async fetch(request: Request): Promise<Response> {
    const info = parseSocketInfo(request.headers.get(LIVE_SOCKET_HEADER));
    if (!info || request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return new Response("a WebSocket upgrade from GET /live is expected", { status: 400 });
    }
    // A malformed LIVE_SESSION_MAX_S throws here, before any socket is accepted.
    const closesAt = Date.now() + liveSessionMaxSeconds(this.env) * 1000;
    const [client, server] = Object.values(new WebSocketPair()) as [WebSocket, WebSocket];
    this.ctx.acceptWebSocket(server);
    server.serializeAttachment({ ...info, closesAt } satisfies HeldSocket);
    const waiting: string[] = [];
    this.#waiting.set(server, waiting);
    try {
      await this.opened(info);
      const jobs = await snapshotJobs(this.env.DB, info.scope);
      server.send(JSON.stringify({ type: "snapshot", jobs } satisfies LiveMessage));
      for (const text of waiting) server.send(text);
      this.#waiting.delete(server);
      await this.connected().catch((error: unknown) => {
        log("warn", "live queue messages not planned", { error: String(error) });
      });
      // Its end counts from now on (the alarm leaves a socket alone while its snapshot is read).
      await this.planAlarm();
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

  /**
   * Sends each of `jobs` to every open socket that may see it; answers how many sockets saw at
   * least one (0: nobody here listens to these jobs).
   */
  protected broadcast(jobs: readonly Job[]): number {
    let listeners = 0;
    for (const job of jobs) {
      const text = JSON.stringify({ type: "job", job } satisfies LiveMessage);
      listeners = Math.max(listeners, this.sendToScope(text, job.project_id));
    }
    return listeners;
  }

  /**
   * Sends a message about one project's jobs (`projectId`; null: jobs of any project, for the
   * sockets that see every project) to every open socket that may see it; answers how many.
   */
  protected sendToScope(text: string, projectId: number | null): number {
    let listeners = 0;
    for (const ws of this.ctx.getWebSockets()) {
      if (ws.readyState !== WebSocket.OPEN) continue;
      const info = ws.deserializeAttachment() as HeldSocket | null;
      // A socket whose session ended is closing: it gets nothing more.
      if (!info || info.ended) continue;
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

  /** The open sockets (but `except`), without those whose session ended and are closing. */
  protected openSockets(except?: WebSocket): WebSocket[] {
    return this.ctx.getWebSockets().filter((ws) => {
      if (ws === except || ws.readyState !== WebSocket.OPEN) return false;
      return (ws.deserializeAttachment() as HeldSocket | null)?.ended !== true;
    });
  }

  /**
   * Sets the one alarm for the earliest of the open sockets' ends (those whose snapshot is sent)
   * and the object's own work; deletes it when neither needs it.
   */
  protected async planAlarm(): Promise<void> {
    let next = await this.ownAlarm();
    for (const ws of this.openSockets()) {
      if (this.#waiting.has(ws)) continue;
      const held = ws.deserializeAttachment() as HeldSocket | null;
      if (!held) continue;
      next = next === null ? held.closesAt : Math.min(next, held.closesAt);
    }
    // Set even when it is already set for `next`: an alarm handler that sets none is the last.
    if (next === null) await this.ctx.storage.deleteAlarm();
    else await this.ctx.storage.setAlarm(next);
  }

  /**
   * Closes the sockets whose session ended (their `closed` bookkeeping too), does the object's
   * own work if it is due, and sets the alarm for what comes next.
   */
  override async alarm(): Promise<void> {
    await this.#endSessions();
    await this.ownAlarmWork();
    await this.planAlarm();
  }

  /** Closes with LIVE_SESSION_ENDED each open socket past its end, and runs its bookkeeping. */
  async #endSessions(): Promise<void> {
    const now = Date.now();
    for (const ws of this.openSockets()) {
      if (this.#waiting.has(ws)) continue;
      const held = ws.deserializeAttachment() as HeldSocket | null;
      if (!held || held.closesAt > now) continue;
      // Marked first: webSocketClose, when the client answers the close, has nothing left to do.
      ws.serializeAttachment({ ...held, ended: true } satisfies HeldSocket);
      try {
        ws.close(LIVE_SESSION_ENDED, SESSION_ENDED_REASON);
      } catch (error) {
        log("info", "live socket already closed", { error: String(error) });
      }
      await this.closed(ws, held).catch((error: unknown) => {
        log("warn", "live session end: bookkeeping failed", { error: String(error) });
      });
    }
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
    const info = ws.deserializeAttachment() as HeldSocket | null;
    // A socket whose session ended had its bookkeeping when the alarm closed it.
    if (info && !info.ended) await this.closed(ws, info);
  }
}

const SUBSCRIPTION = "sub:";
/** When the hub last sent a `queue` message (ms). */
const QUEUE_SENT = "queue-sent";
/** When the hub's next `queue` message is due (ms); none while none is planned. */
const QUEUE_DUE = "queue-due";
/** The token under which a project or operators' hub last subscribed itself to its shard(s). */
const UPSTREAM = "upstream";
/** The hub's own name (see LiveHub.#name). */
const SELF = "self";

/**
 * A sender's calls to its subscribers, one lane each: at most one call in flight per subscriber;
 * the jobs that come meanwhile wait and leave together in the next call. Idle, a batch leaves at
 * once (no added latency); busy, batches grow instead of calls piling up, so a subscriber (the
 * operators' hub, which hears every shard) gets at most one call per sender at a time however
 * fast changes come. In memory: a call in flight keeps the object awake.
 */
class Outbox {
  readonly #lanes = new Map<string, Lane>();

  /**
   * Sends `jobs` to `name` with `call`, now or with the next call; answers that call's answer,
   * and whether this send made a call of its own (false: it joined one already waiting).
   */
  send(
    name: string,
    jobs: readonly Job[],
    call: (jobs: readonly Job[]) => Promise<number>,
  ): { answer: Promise<number>; newCall: boolean } {
    const lane = this.#lanes.get(name);
    if (lane?.waiting) {
      lane.waiting.jobs.push(...jobs);
      return { answer: lane.waiting.answer, newCall: false };
    }
    const batch: Batch = { jobs: [...jobs], answer: Promise.resolve(0) };
    const run = async () => {
      if (lane?.waiting === batch) lane.waiting = null;
      return call(batch.jobs);
    };
    const current: Lane = lane ?? { tail: Promise.resolve(), waiting: null };
    if (lane) {
      lane.waiting = batch;
      batch.answer = lane.tail.then(run);
    } else {
      batch.answer = run();
      this.#lanes.set(name, current);
    }
    const tail = batch.answer.then(
      () => {},
      () => {},
    );
    current.tail = tail;
    void tail.then(() => {
      if (current.tail === tail) this.#lanes.delete(name);
    });
    return { answer: batch.answer, newCall: true };
  }
}

interface Batch {
  jobs: Job[];
  answer: Promise<number>;
}

interface Lane {
  /** Settles when the lane's last call has ended (never rejects). */
  tail: Promise<void>;
  /** The jobs for the next call, while one is in flight. */
  waiting: Batch | null;
}

/**
 * A shard, a project's hub or the operators' hub, by its name (see the header). Each keeps its
 * subscribers in its storage: a shard the hubs that listen, a project's hub the channels.
 */
export class LiveHub extends LiveRoom {
  /** Subscriber name → the token of the connection that subscribed it last. */
  #subscriptions: Promise<Map<string, string>> | undefined;
  readonly #outbox = new Outbox();

  /** The name this hub was reached by, remembered (storage) from the calls that carry it. */
  #self: string | undefined;

  /**
   * This hub's name, hence its role. `ctx.id.name` is not there everywhere (wrangler dev leaves
   * it undefined), so every call that needs the role carries the name its caller reached the hub
   * by (`known`), and the hub keeps it for the calls that cannot (its alarm, a socket's close).
   */
  async #name(known?: string): Promise<string> {
    if (known !== undefined) {
      if (this.#self !== known) {
        this.#self = known;
        await this.ctx.storage.put(SELF, known);
      }
      return known;
    }
    this.#self ??= this.ctx.id.name ?? (await this.ctx.storage.get<string>(SELF));
    return this.#self ?? "";
  }

  async #role(known?: string): Promise<HubRole> {
    return hubRole(await this.#name(known));
  }

  #subscribers(): Promise<Map<string, string>> {
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

  #hub(name: string): DurableObjectStub<LiveHub> {
    return this.env.LIVE_HUB.get(this.env.LIVE_HUB.idFromName(name));
  }

  #channel(name: string): DurableObjectStub<LiveChannel> {
    return this.env.LIVE_CHANNEL.get(this.env.LIVE_CHANNEL.idFromName(name));
  }

  /**
   * A shard's one call per batch (from the publisher): each subscribed hub gets, in one call, the
   * batch's jobs it listens to (the operators' hub all of them), through the outbox. Answers how
   * many calls it made (the fan-out test counts them); rejects when a subscriber was not told.
   */
  async publish(jobs: readonly Job[]): Promise<number> {
    const subscribers = await this.#subscribers();
    if (subscribers.size === 0) return 0;
    const batches = new Map<string, Job[]>();
    const add = (name: string, job: Job) => {
      const batch = batches.get(name);
      if (batch) batch.push(job);
      else batches.set(name, [job]);
    };
    const operators = subscribers.has(OPERATORS_HUB);
    for (const job of jobs) {
      if (operators) add(OPERATORS_HUB, job);
      const project = projectHubName(job.project_id);
      if (subscribers.has(project)) add(project, job);
    }
    let calls = 0;
    await this.#forward([...batches.keys()], (name) => {
      const sent = this.#outbox.send(name, batches.get(name) ?? [], (batch) =>
        this.#hub(name).deliver(batch, name),
      );
      if (sent.newCall) calls += 1;
      return sent.answer;
    });
    return calls;
  }

  /**
   * A shard's progress report that D1 did not record (shared/job-state.ts): to the operators'
   * hub and the project's hub when they listen, as it is (no outbox: it is outside the versions,
   * and a client applies it only at the version it names, so its order among job messages does not
   * matter).
   */
  async publishProgress(update: LiveProgress): Promise<void> {
    const subscribers = await this.#subscribers();
    if (subscribers.size === 0) return;
    const text = JSON.stringify({ type: "progress", ...update } satisfies LiveMessage);
    const project = projectHubName(update.project_id);
    const names = [OPERATORS_HUB, project].filter((name) => subscribers.has(name));
    await this.#forward(names, (name) =>
      this.#hub(name).deliverText(text, update.project_id, name),
    );
  }

  /**
   * A shard's forward of a message outside the versions (progress) to a project's or the
   * operators' hub: to its sockets, and a project's to its channels. Answers how many listen.
   */
  async deliverText(text: string, projectId: number, self: string): Promise<number> {
    const role = await this.#role(self);
    if (role.kind !== "project" && role.kind !== "operators") {
      throw new Error(`${self} holds no live sockets`);
    }
    let listeners = this.sendToScope(text, projectId);
    if (role.kind === "project") {
      const subscribers = await this.#subscribers();
      listeners += await this.#forward([...subscribers.keys()], (name) =>
        this.#channel(name).deliverText(text, projectId),
      );
    }
    return listeners;
  }

  /**
   * A shard's forward to a project's or the operators' hub: to its sockets, and a project's to
   * its channels in one call each. Answers how many listen (0: the shard drops this hub).
   */
  async deliver(jobs: readonly Job[], self: string): Promise<number> {
    const role = await this.#role(self);
    if (role.kind !== "project" && role.kind !== "operators") {
      throw new Error(`${self} holds no live sockets`);
    }
    let listeners = this.broadcast(jobs);
    if (jobs.some((job) => job.status === "pending")) await this.#queueSoon();
    if (role.kind === "project") {
      const subscribers = await this.#subscribers();
      listeners += await this.#forward(
        [...subscribers.keys()],
        (name) =>
          this.#outbox.send(name, jobs, (batch) => this.#channel(name).deliver(batch)).answer,
      );
    }
    return listeners;
  }

  /**
   * Sends `send(name)` to each of `names` that is still subscribed, drops those that answer 0
   * listeners, and answers how many answered more. Rejects when one could not be reached (it
   * stays subscribed).
   */
  async #forward(names: readonly string[], send: (name: string) => Promise<number>) {
    if (names.length === 0) return 0;
    const subscribers = await this.#subscribers();
    let listening = 0;
    const results = await Promise.allSettled(
      names.map(async (name) => {
        const token = subscribers.get(name);
        if (token === undefined) return;
        if ((await send(name)) > 0) listening += 1;
        else await this.#drop(name, token);
      }),
    );
    const failed = results.filter((result) => result.status === "rejected");
    if (failed.length > 0) {
      throw new Error(
        `${failed.length} live subscriber(s) not reached: ${String(failed[0]?.reason)}`,
      );
    }
    return listening;
  }

  protected override async opened(info: SocketInfo): Promise<void> {
    await this.#listen(await this.#name(hubOfScope(info.scope)));
  }

  protected override async connected(): Promise<void> {
    await this.#queueSoon();
  }

  protected override async closed(ws: WebSocket, info: SocketInfo): Promise<void> {
    await this.#unlistenIfIdle(await this.#name(hubOfScope(info.scope)), ws);
  }

  /** The shards the hub `self` listens to: its project's, or every one for the operators. */
  #upstream(self: string): string[] {
    const role = hubRole(self);
    if (role.kind === "project") return [shardHubName(shardOfProject(role.projectId))];
    if (role.kind === "operators") {
      return Array.from({ length: LIVE_SHARDS }, (_, shard) => shardHubName(shard));
    }
    return [];
  }

  /**
   * Subscribes this hub to its shard(s), awaited, before a socket's snapshot is read or a channel's
   * subscription answered. Every connection subscribes afresh (a new token): one call per connect,
   * and a concurrent unsubscribe of the last listener, which carries the old token, cannot undo it.
   */
  async #listen(self: string): Promise<void> {
    const shards = this.#upstream(self);
    if (shards.length === 0) return;
    const token = crypto.randomUUID();
    await this.ctx.storage.put(UPSTREAM, token);
    await Promise.all(shards.map((shard) => this.#hub(shard).subscribe(self, token, shard)));
  }

  /** Unsubscribes from the shard(s) once no socket (but `closing`) and no channel is left. */
  async #unlistenIfIdle(self: string, closing?: WebSocket): Promise<void> {
    const shards = this.#upstream(self);
    if (shards.length === 0) return;
    const open = this.openSockets(closing).length > 0;
    if (open || (await this.#subscribers()).size > 0) return;
    const token = await this.ctx.storage.get<string>(UPSTREAM);
    if (token === undefined) return;
    // Best effort: a shard that keeps a stale subscription drops it on its next forward (0).
    const results = await Promise.allSettled(
      shards.map((shard) => this.#hub(shard).unsubscribe(self, token, shard)),
    );
    if (results.some((result) => result.status === "rejected")) {
      log("info", "live hub unsubscribe incomplete", { hub: self });
    }
  }

  /**
   * Plans the next `queue` message, unless one is planned: now, or QUEUE_MESSAGE_INTERVAL_MS after
   * the last one (the alarm, shared with the sockets' ends, fires for the earliest).
   */
  async #queueSoon(): Promise<void> {
    if ((await this.ctx.storage.get<number>(QUEUE_DUE)) !== undefined) return;
    const last = (await this.ctx.storage.get<number>(QUEUE_SENT)) ?? 0;
    await this.ctx.storage.put(QUEUE_DUE, Math.max(Date.now(), last + QUEUE_MESSAGE_INTERVAL_MS));
    await this.planAlarm();
  }

  protected override async ownAlarm(): Promise<number | null> {
    return (await this.ctx.storage.get<number>(QUEUE_DUE)) ?? null;
  }

  /**
   * The alarm's `queue` message, when it is due. The next one is planned QUEUE_MESSAGE_INTERVAL_MS
   * later when this one was sent (someone listens, jobs are pending) or failed; otherwise none
   * until a pending job or a listener comes (#queueSoon).
   */
  protected override async ownAlarmWork(): Promise<void> {
    const due = await this.ctx.storage.get<number>(QUEUE_DUE);
    if (due === undefined || due > Date.now()) return;
    await this.ctx.storage.delete(QUEUE_DUE);
    let again: boolean;
    try {
      again = await this.#sendQueue();
    } catch (error) {
      log("warn", "live queue message failed", { error: String(error) });
      again = true;
    }
    if (again) await this.ctx.storage.put(QUEUE_DUE, Date.now() + QUEUE_MESSAGE_INTERVAL_MS);
  }

  /**
   * The `queue` message: the queue positions of this project's newest pending jobs (up to QUEUE_MESSAGE_JOBS) (the
   * operators' hub: of any project), sent while someone listens and jobs are pending, at most
   * every QUEUE_MESSAGE_INTERVAL_MS. One D1 read and one dispatcher call a message. Answers
   * whether it sent one.
   */
  async #sendQueue(): Promise<boolean> {
    const role = await this.#role();
    if (role.kind !== "project" && role.kind !== "operators") return false;
    const projectId = role.kind === "project" ? role.projectId : null;
    const listening = this.openSockets().length > 0 || (await this.#subscribers()).size > 0;
    if (!listening) return false;
    const pending = (
      await listJobs(this.env.DB, {
        projectIds: projectId === null ? null : [projectId],
        statuses: "pending",
        limit: QUEUE_MESSAGE_JOBS,
        after: null,
      })
    ).slice(0, QUEUE_MESSAGE_JOBS);
    if (pending.length === 0) return false;
    // Each job at the dispatcher holding it (D1 names it; null: RUNPOD_ENDPOINT_ID's).
    const byEndpoint = groupBy(pending, (row) =>
      row.follows !== null
        ? undefined
        : (row.runpod_endpoint_id ?? this.env.RUNPOD_ENDPOINT_ID ?? ""),
    );
    const jobs: { id: string; queue: QueueInfo }[] = [];
    for (const [endpoint, rows] of byEndpoint) {
      const dispatcher = this.env.DISPATCHER.get(this.env.DISPATCHER.idFromName(endpoint));
      jobs.push(
        ...(await dispatcher.estimate(
          rows.map((row) => ({
            id: row.id,
            key: fairKeyOf(row),
            type: row.type,
            lane: row.priority,
          })),
        )),
      );
    }
    const text = JSON.stringify({ type: "queue", jobs } satisfies LiveMessage);
    this.sendToScope(text, projectId);
    await this.ctx.storage.put(QUEUE_SENT, Date.now());
    if (projectId !== null) {
      const subscribers = await this.#subscribers();
      await this.#forward([...subscribers.keys()], (name) =>
        this.#channel(name).deliverText(text, projectId),
      );
    }
    return true;
  }

  /**
   * `name` (a channel, at a project's hub; a hub, at a shard) listens from now on; `self` is the
   * name the caller reached this hub by. A project's hub subscribes itself to its shard before it
   * answers: the channel reads its snapshot after.
   */
  async subscribe(name: string, token: string, self: string): Promise<void> {
    const subscribers = await this.#subscribers();
    subscribers.set(name, token);
    await this.ctx.storage.put(SUBSCRIPTION + name, token);
    if ((await this.#role(self)).kind === "project") {
      await this.#listen(self);
      await this.#queueSoon();
    }
  }

  /** Drops `name` unless another connection subscribed it since (another token). */
  async unsubscribe(name: string, token: string, self: string): Promise<void> {
    if (await this.#drop(name, token)) await this.#unlistenIfIdle(await this.#name(self));
  }

  /** Forgets `name`'s subscription if `token` is still its own; answers whether it did. */
  async #drop(name: string, token: string): Promise<boolean> {
    const subscribers = await this.#subscribers();
    if (subscribers.get(name) !== token) return false;
    subscribers.delete(name);
    await this.ctx.storage.delete(SUBSCRIPTION + name);
    return true;
  }
}

/** The one socket of a ticket that names several projects, fed by those projects' hubs. */
export class LiveChannel extends LiveRoom {
  #hub(projectId: number) {
    return this.env.LIVE_HUB.get(this.env.LIVE_HUB.idFromName(projectHubName(projectId)));
  }

  /** A project hub's forward of a batch; 0 listeners tells the hub to drop this channel. */
  deliver(jobs: readonly Job[]): number {
    return this.broadcast(jobs);
  }

  /** A project hub's `queue` or `progress` message, forwarded as it is. */
  deliverText(text: string, projectId: number): number {
    return this.sendToScope(text, projectId);
  }

  protected override async opened(info: SocketInfo): Promise<void> {
    const { channel, scope } = info;
    if (!channel || scope.all) return;
    await Promise.all(
      scope.projectIds.map((id) =>
        this.#hub(id).subscribe(channel, info.token, projectHubName(id)),
      ),
    );
  }

  protected override async closed(ws: WebSocket, info: SocketInfo): Promise<void> {
    const { channel, scope } = info;
    if (!channel || scope.all) return;
    if (this.openSockets(ws).length > 0) return;
    // Best effort: a hub that keeps a stale subscription drops it on its next forward (0).
    const results = await Promise.allSettled(
      scope.projectIds.map((id) =>
        this.#hub(id).unsubscribe(channel, info.token, projectHubName(id)),
      ),
    );
    if (results.some((result) => result.status === "rejected")) {
      log("info", "live channel unsubscribe incomplete", { channel });
    }
  }
}
