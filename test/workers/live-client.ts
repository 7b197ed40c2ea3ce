// The test's end of GET /live: minting tickets and holding sockets as a browser does, for the
// live-status tests (live-status.test.ts, live-fanout.test.ts). Not a test file itself.
import { expect } from "vitest";
import { decodeBase64Url } from "../../shared/base64url.ts";
import type { LiveMessage } from "../../shared/live-keys.ts";
import type { Job } from "../../shared/sql/jobs/row.ts";
import { ADMIN_TOKEN, type FetchInit, postJson, producerFetch, waitFor } from "./helpers.ts";

/** A ticket's claims: `<kid>.<payload>.<sig>` (shared/keys.ts), the payload base64url JSON. */
export function ticketClaims(ticket: string): { id: string; p: number[] | "all"; exp: number } {
  const payload = ticket.split(".")[1] as string;
  return JSON.parse(decodeBase64Url(payload));
}

export interface MintedTicket {
  ticket: string;
  expires_at: string;
}

export async function mint(body: unknown, init: FetchInit = {}): Promise<MintedTicket> {
  const res = await postJson("/live-tickets", body, init);
  expect(res.status).toBe(201);
  return (await res.json()) as MintedTicket;
}

export const mintProjects = (...projectIds: number[]) => mint({ project_ids: projectIds });
export const mintAll = () => mint({ all_projects: true }, { token: ADMIN_TOKEN });

export function openLive(ticket: string, init: FetchInit = {}): Promise<Response> {
  return producerFetch(`/live?ticket=${encodeURIComponent(ticket)}`, {
    token: null,
    ...init,
    headers: { Upgrade: "websocket", ...(init.headers as Record<string, string> | undefined) },
  });
}

/** The test's end of a live socket: every message it received, in order, and how it closed. */
export class LiveClient {
  readonly messages: LiveMessage[] = [];
  pongs = 0;
  /** The close frame's code and reason, once the socket closed. */
  closedWith: { code: number; reason: string } | null = null;

  readonly ws: WebSocket;

  constructor(ws: WebSocket) {
    this.ws = ws;
    ws.addEventListener("message", (event) => {
      const data = event.data as string;
      if (data === "pong") this.pongs += 1;
      else this.messages.push(JSON.parse(data) as LiveMessage);
    });
    ws.addEventListener("close", (event) => {
      this.closedWith = { code: event.code, reason: event.reason };
    });
    ws.accept();
  }

  get snapshot(): Job[] {
    const first = this.messages[0];
    if (first?.type !== "snapshot") throw new Error("the first message is not the snapshot");
    return first.jobs;
  }

  /** The `job` messages, in arrival order (of one job, with `id`). */
  changes(id?: string): Job[] {
    return this.messages.flatMap((message) =>
      message.type === "job" && (id === undefined || message.job.id === id) ? [message.job] : [],
    );
  }

  /** What a client keeping the highest version per job shows. */
  latest(id: string): Job | undefined {
    let best: Job | undefined;
    for (const job of [...this.snapshot, ...this.changes(id)]) {
      if (job.id === id && (!best || job.version > best.version)) best = job;
    }
    return best;
  }

  until(check: () => boolean, what: string): Promise<true> {
    return waitFor(async () => (check() ? true : undefined), what);
  }

  /** Waits until a change of `id` with at least `version` arrived. */
  untilVersion(id: string, version: number): Promise<true> {
    return this.until(
      () => this.changes(id).some((job) => job.version >= version),
      `version ${version} of ${id}`,
    );
  }

  /** Waits until the socket closed; answers the close frame's code and reason. */
  async untilClosed(): Promise<{ code: number; reason: string }> {
    await this.until(() => this.closedWith !== null, "the socket to close");
    return this.closedWith as { code: number; reason: string };
  }

  close(): void {
    this.ws.close(1000, "test done");
  }
}

export async function connect(ticket: string): Promise<LiveClient> {
  const res = await openLive(ticket);
  expect(res.status).toBe(101);
  if (!res.webSocket) throw new Error("no WebSocket in the 101 answer");
  const client = new LiveClient(res.webSocket);
  await client.until(() => client.messages.length > 0, "the snapshot");
  expect(client.messages[0]?.type).toBe("snapshot");
  return client;
}

/**
 * An answer's job as live `job` messages carry it: without `queue`, which is not part of the row
 * (it never raises `version`) and travels in `queue` messages instead.
 */
export function asLive(job: Job): Job {
  const { queue: _queue, ...rest } = job;
  return rest;
}
