// How live-status objects are named, what their sockets receive, and which object holds a
// ticket's socket (liveRoomFor): shared by the objects (shared/live-hub.ts, which says how they
// work together), the publisher (shared/live-publisher.ts) and GET /live, with no runtime imports
// (Node code may import it).
import type { LiveScope, LiveTicket } from "./live-ticket.ts";
import type { QueueInfo } from "./queue-estimate.ts";
import type { Job } from "./sql/jobs/row.ts";

const PROJECT_HUB = "project:";
const SHARD_HUB = "all:";

/** The hub of one project's changes (its sockets, and the channels of tickets that name it). */
export const projectHubName = (projectId: number) => `${PROJECT_HUB}${projectId}`;

/** The project of a hub's name; null for another name. */
export function projectOfHub(name: string): number | null {
  if (!name.startsWith(PROJECT_HUB)) return null;
  const id = Number(name.slice(PROJECT_HUB.length));
  return Number.isInteger(id) && id > 0 ? id : null;
}

/**
 * Shards of the publication side: every change goes to the shard of its project, and only there.
 * 16 spreads 100 exports/s (about 650 publications/s) to about 40/s per shard, far from a Durable
 * Object's ~1,000 requests/s, while a batch of 30 jobs still costs at most 16 calls. Changing it
 * moves projects to other shards: the hubs re-subscribe as their sockets reconnect.
 */
export const LIVE_SHARDS = 16;

/** The shard of a project's changes. */
export const shardOfProject = (projectId: number) => projectId % LIVE_SHARDS;

/** The name of shard `shard` (0 ≤ shard < LIVE_SHARDS). */
export const shardHubName = (shard: number) => `${SHARD_HUB}${shard}`;

/** The operators' hub: it holds the sockets of `all_projects` tickets and hears every shard. */
export const OPERATORS_HUB = "operators";

/** What a LiveHub is, from its name. */
export type HubRole =
  | { kind: "project"; projectId: number }
  | { kind: "shard"; shard: number }
  | { kind: "operators" }
  | { kind: "none" };

export function hubRole(name: string): HubRole {
  const projectId = projectOfHub(name);
  if (projectId !== null) return { kind: "project", projectId };
  if (name === OPERATORS_HUB) return { kind: "operators" };
  if (name.startsWith(SHARD_HUB)) {
    const shard = Number(name.slice(SHARD_HUB.length));
    if (Number.isInteger(shard) && shard >= 0 && shard < LIVE_SHARDS)
      return { kind: "shard", shard };
  }
  return { kind: "none" };
}

/**
 * What a live socket receives: a snapshot on connect, then one message per change; and, outside
 * the jobs' versions, the pending jobs' queue positions (at most one message per project per
 * QUEUE_MESSAGE_INTERVAL_MS).
 */
export type LiveMessage =
  | { type: "snapshot"; jobs: Job[] }
  | { type: "job"; job: Job }
  | { type: "queue"; jobs: { id: string; queue: QueueInfo }[] }
  | ({ type: "progress" } & LiveProgress);

/**
 * A progress report that was not written to D1 (shared/job-state.ts writes at most one per 25
 * points or per PROGRESS_WRITE_S): live only, outside the job's version. A client applies it to the
 * job it knows at exactly `version` (and `attempt`), raising `progress`, never lowering it.
 */
export interface LiveProgress {
  job_id: string;
  project_id: number;
  attempt: number;
  version: number;
  progress: number;
}

/** A hub sends a `queue` message at most this often. */
export const QUEUE_MESSAGE_INTERVAL_MS = 5_000;
/** Pending jobs a `queue` message covers at most (the newest of the project, or of all: a listing is newest first). */
export const QUEUE_MESSAGE_JOBS = 100;

/**
 * The Worker → object header that carries a socket's verified ticket (GET /live sets it; the
 * objects are reachable only through the Worker, never with a client's headers).
 */
export const LIVE_SOCKET_HEADER = "x-live-socket";

/** Kept on each socket (serializeAttachment), so it survives hibernation. */
export interface SocketInfo {
  scope: LiveScope;
  /** In a LiveChannel: its name, which its project hubs forward to. */
  channel: string | null;
  /** This connection's subscription: a hub drops a channel only for the token it holds. */
  token: string;
}

/**
 * The close code of a live socket whose session ended: the object that holds it closes it
 * LIVE_SESSION_MAX_S after it opened. The client reconnects at once with a fresh ticket.
 */
export const LIVE_SESSION_ENDED = 4001;

export const channelName = (ticketId: string) => `channel:${ticketId}`;

/** The hub that holds the socket of a ticket for all projects or for one (liveRoomFor). */
export const hubOfScope = (scope: LiveScope) =>
  scope.all ? OPERATORS_HUB : projectHubName(scope.projectIds[0] as number);

/** What liveRoomFor needs of the live-status objects' bindings. */
interface RoomNamespace {
  idFromName(name: string): DurableObjectId;
  get(id: DurableObjectId): { fetch(request: Request): Promise<Response> };
}

/** The object that holds the one socket of `ticket`, and what that socket carries. */
export function liveRoomFor(
  env: { LIVE_HUB: RoomNamespace; LIVE_CHANNEL: RoomNamespace },
  ticket: LiveTicket,
): { room: { fetch(request: Request): Promise<Response> }; info: SocketInfo } {
  const { scope } = ticket;
  const token = crypto.randomUUID();
  if (scope.all || scope.projectIds.length === 1) {
    return {
      room: env.LIVE_HUB.get(env.LIVE_HUB.idFromName(hubOfScope(scope))),
      info: { scope, channel: null, token },
    };
  }
  const channel = channelName(ticket.id);
  return {
    room: env.LIVE_CHANNEL.get(env.LIVE_CHANNEL.idFromName(channel)),
    info: { scope, channel, token },
  };
}
