// Live sessions end: a socket is closed with 4001 LIVE_SESSION_MAX_S after it opened, by the
// object that holds it (its alarm, through hibernation), with the same bookkeeping as a socket the
// client closes; a fresh ticket opens a new socket with a fresh snapshot. This file runs in its own
// project (vitest.config.ts) whose bindings, and so the Durable Objects' env, set
// LIVE_SESSION_MAX_S to 2 s. That a socket stays open before its end: live-status.test.ts.
import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import {
  LIVE_SESSION_ENDED,
  OPERATORS_HUB,
  projectHubName,
  shardHubName,
  shardOfProject,
} from "../../shared/live-keys.ts";
import { freshProjectId, insertPendingJob, waitFor } from "./helpers.ts";
import { connect, type LiveClient, mintAll, mintProjects, ticketClaims } from "./live-client.ts";

const ENDED = { code: LIVE_SESSION_ENDED, reason: "session ended: reconnect with a fresh ticket" };

const hub = (name: string) => env.LIVE_HUB.get(env.LIVE_HUB.idFromName(name));

/** Who subscribed to the hub `name` (a shard: hubs; a project's hub: channels). */
function subscribersOf(name: string): Promise<string[]> {
  return runInDurableObject(hub(name), async (_hub, ctx) =>
    [...(await ctx.storage.list({ prefix: "sub:" })).keys()].map((key) => key.slice(4)),
  );
}

/** The sockets a hub still holds open. */
function openSocketsOf(name: string): Promise<number> {
  return runInDurableObject(
    hub(name),
    (_hub, ctx) => ctx.getWebSockets().filter((ws) => ws.readyState === WebSocket.OPEN).length,
  );
}

const channelOf = (ticket: string) => {
  const claims = ticketClaims(ticket);
  return env.LIVE_CHANNEL.get(env.LIVE_CHANNEL.idFromName(`channel:${claims.id}`));
};

async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  await waitFor(async () => ((await check()) ? true : undefined), what);
}

describe("live sessions end after LIVE_SESSION_MAX_S", () => {
  it("a project's socket is closed with 4001, hibernated or not; its hub unsubscribes; a fresh ticket gets a new socket and snapshot", async () => {
    const p = freshProjectId();
    const shard = shardHubName(shardOfProject(p));
    // A pending job: the hub's alarm also plans its queue messages.
    const first = await insertPendingJob(p);
    const client = await connect((await mintProjects(p)).ticket);
    expect(client.snapshot.map((job) => job.id)).toEqual([first.id]);
    expect(await subscribersOf(shard)).toContain(projectHubName(p));
    await evictDurableObject(hub(projectHubName(p)), { webSockets: "hibernate" });

    expect(await client.untilClosed()).toEqual(ENDED);
    // The bookkeeping of a closed socket: the hub, with no socket left, leaves its shard.
    await until("the hub to unsubscribe from its shard", async () => {
      return !(await subscribersOf(shard)).includes(projectHubName(p));
    });
    expect(await openSocketsOf(projectHubName(p))).toBe(0);

    // What happened meanwhile is in the next socket's snapshot.
    const second = await insertPendingJob(p);
    const again = await connect((await mintProjects(p)).ticket);
    expect(again.snapshot.map((job) => job.id).sort()).toEqual([first.id, second.id].sort());
    expect(await subscribersOf(shard)).toContain(projectHubName(p));
    expect(await again.untilClosed()).toEqual(ENDED);
  });

  it("a channel's and the operators' sockets end the same way; the channel unsubscribes from its projects' hubs", async () => {
    const [p, q] = [freshProjectId(), freshProjectId()];
    const { ticket } = await mintProjects(p, q);
    const channel = await connect(ticket);
    const operators = await connect((await mintAll()).ticket);
    expect(await subscribersOf(projectHubName(p))).toHaveLength(1);
    expect(await subscribersOf(projectHubName(q))).toHaveLength(1);
    await evictDurableObject(channelOf(ticket), { webSockets: "hibernate" });
    await evictDurableObject(hub(OPERATORS_HUB), { webSockets: "hibernate" });

    const ends = await Promise.all([channel, operators].map((client) => client.untilClosed()));
    expect(ends).toEqual([ENDED, ENDED]);
    await until("the channel to unsubscribe", async () => {
      const [atP, atQ] = [
        await subscribersOf(projectHubName(p)),
        await subscribersOf(projectHubName(q)),
      ];
      return atP.length === 0 && atQ.length === 0;
    });

    // Fresh tickets: new sockets, new snapshots, subscribed again.
    const job = await insertPendingJob(q);
    const clients: LiveClient[] = [
      await connect((await mintProjects(p, q)).ticket),
      await connect((await mintAll()).ticket),
    ];
    for (const client of clients) expect(client.snapshot.map((seen) => seen.id)).toContain(job.id);
    expect(await subscribersOf(projectHubName(q))).toHaveLength(1);
    for (const client of clients) expect(await client.untilClosed()).toEqual(ENDED);
  });
});
