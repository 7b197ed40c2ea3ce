// Live status inside workerd with the real bindings: POST /live-tickets, GET /live's WebSockets
// held by the real LiveHub / LiveChannel Durable Objects (test/workers/main.ts exports them), the
// state machine publishing through livePublisher(env), and D1 as the truth.
import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { consumerDeps } from "../../consumer/process-jobs.ts";
import { reconcile } from "../../consumer/reconciler.ts";
import { encodeBase64Url } from "../../shared/base64url.ts";
import * as state from "../../shared/job-state.ts";
import { type SigningKey, signingKey } from "../../shared/keys.ts";
import type { LivePublisher } from "../../shared/live-publisher.ts";
import { projectHubName } from "../../shared/live-publisher.ts";
import { mintTicket } from "../../shared/live-ticket.ts";

/** The live-ticket key a Worker with this WEBHOOK_SECRET signs with. */
const liveKey = (secret: string): Promise<SigningKey> =>
  signingKey({ WEBHOOK_SECRET: secret }, "live-ticket") as Promise<SigningKey>;

import { type Job, type JobRow, toJob } from "../../shared/sql/jobs/row.ts";
import {
  ADMIN_TOKEN,
  API_TOKEN,
  callbackPath,
  freshProjectId,
  insertPendingJob,
  overlayRequest,
  postJson,
  producerFetch,
  putInput,
  readJob,
  waitFor,
} from "./helpers.ts";
import {
  asLive,
  connect,
  LiveClient,
  mint,
  mintAll,
  mintProjects,
  openLive,
  ticketClaims,
} from "./live-client.ts";

/** GET /exports/{id}'s job: what every live message must equal (its `queue` aside). */
async function apiJob(id: string): Promise<Job> {
  const res = await producerFetch(`/exports/${id}`);
  expect(res.status).toBe(200);
  return asLive(((await res.json()) as { job: Job }).job);
}

async function createJob(projectId: number): Promise<Job> {
  const key = `uploads/${projectId}/live.mp4`;
  await putInput(key);
  const res = await postJson("/exports", overlayRequest(projectId, key));
  expect(res.status).toBe(202);
  return asLive(((await res.json()) as { job: Job }).job);
}

/** The consumer's deps (the real publisher), or with `live` replaced. */
function deps(live?: LivePublisher) {
  const real = consumerDeps(env);
  return live ? { ...real, live } : real;
}

/** A job row written straight to D1 at a fixed creation time (publishes nothing). */
async function insertAt(projectId: number, status: JobRow["status"], createdAt: string) {
  const row = await env.DB.prepare(
    `INSERT INTO export_jobs (id, project_id, type, input_video_key, params, status, progress,
                              created_at, due_at)
     VALUES (?, ?, 'overlay', ?, '{"highlight_regions":[{"start_time":0,"end_time":1}]}', ?, ?, ?, NULL)
     RETURNING *`,
  )
    .bind(
      crypto.randomUUID(),
      projectId,
      `uploads/${projectId}/in.mp4`,
      status,
      status === "complete" ? 100 : 0,
      createdAt,
    )
    .first<JobRow>();
  if (!row) throw new Error("insert failed");
  return row;
}

const hubOf = (projectId: number) =>
  env.LIVE_HUB.get(env.LIVE_HUB.idFromName(projectHubName(projectId)));

function subscriptionsOf(projectId: number): Promise<string[]> {
  return runInDurableObject(hubOf(projectId), async (_hub, ctx) => [
    ...(await ctx.storage.list({ prefix: "sub:" })).keys(),
  ]);
}

const channelOf = (ticket: string) =>
  env.LIVE_CHANNEL.get(env.LIVE_CHANNEL.idFromName(`channel:${ticketClaims(ticket).id}`));

const base64UrlJson = (value: unknown) => encodeBase64Url(JSON.stringify(value));

describe("POST /live-tickets", () => {
  it("mints a ticket for 1 to 100 projects (API_TOKEN) that expires after LIVE_TICKET_TTL_S", async () => {
    const before = Date.now();
    const minted = await mint({ project_ids: [freshProjectId(), freshProjectId()] });
    expect(minted.ticket).toMatch(/^[0-9a-f]{8}\.[A-Za-z0-9_-]+\.[0-9a-f]{64}$/);
    const expires = Date.parse(minted.expires_at);
    expect(expires).toBeGreaterThanOrEqual(before + 60_000);
    expect(expires).toBeLessThanOrEqual(Date.now() + 60_000);

    const short = await mint({ project_ids: [1] }, { vars: { LIVE_TICKET_TTL_S: "5" } });
    expect(Date.parse(short.expires_at)).toBeLessThanOrEqual(Date.now() + 5_000);
    const hundred = Array.from({ length: 100 }, (_, i) => i + 1);
    await mint({ project_ids: hundred });
    await mint({ project_ids: [1] }, { token: ADMIN_TOKEN });
  });

  it("mints an operators' ticket for all projects only with the ADMIN_TOKEN", async () => {
    await mintAll();
    const res = await postJson("/live-tickets", { all_projects: true }, { token: API_TOKEN });
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ error: { code: "unauthorized" } });
  });

  it("answers 401 without a valid token and 400 with stable codes for bad bodies", async () => {
    for (const token of [null, "not-a-token"]) {
      const res = await postJson("/live-tickets", { project_ids: [1] }, { token });
      expect(res.status).toBe(401);
      expect(res.headers.get("www-authenticate")).toContain("Bearer");
      expect(await res.json()).toMatchObject({ error: { code: "unauthorized" } });
    }
    const bad: unknown[] = [
      {},
      { project_ids: [] },
      { project_ids: [0] },
      { project_ids: [1.5] },
      { project_ids: ["1"] },
      { project_ids: Array.from({ length: 101 }, (_, i) => i + 1) },
      { all_projects: false },
      { project_ids: [1], all_projects: true },
      [1, 2],
    ];
    for (const body of bad) {
      const res = await postJson("/live-tickets", body);
      expect({ body, status: res.status }).toEqual({ body, status: 400 });
      const error = ((await res.json()) as { error: { code: string; issues?: unknown[] } }).error;
      expect(error.code).toBe("invalid_request");
      expect(error.issues?.length).toBeGreaterThan(0);
    }
    const notJson = await postJson("/live-tickets", "{nope");
    expect(notJson.status).toBe(400);
    expect(await notJson.json()).toMatchObject({ error: { code: "invalid_json" } });
  });
});

describe("GET /live", () => {
  it("answers 426 upgrade_required to a request that is not a WebSocket upgrade", async () => {
    const { ticket } = await mintProjects(freshProjectId());
    const res = await producerFetch(`/live?ticket=${encodeURIComponent(ticket)}`, { token: null });
    expect(res.status).toBe(426);
    expect(res.headers.get("upgrade")).toBe("websocket");
    expect(await res.json()).toMatchObject({ error: { code: "upgrade_required" } });
  });

  it("answers 401 bad_ticket for a missing, malformed, forged or expired ticket", async () => {
    const projectId = freshProjectId();
    const { ticket } = await mintProjects(projectId);
    const [kid, payload, sig] = ticket.split(".") as [string, string, string];
    const claims = ticketClaims(ticket);
    const secret = env.WEBHOOK_SECRET as string;
    const forged = {
      // another project under the original signature
      otherProjects: `${kid}.${base64UrlJson({ ...claims, p: [projectId + 1] })}.${sig}`,
      operatorsScope: `${kid}.${base64UrlJson({ ...claims, p: "all" })}.${sig}`,
      longerLife: `${kid}.${base64UrlJson({ ...claims, exp: Date.now() + 86_400_000 })}.${sig}`,
      otherSecret: await mintTicket(
        await liveKey("not-the-secret"),
        { all: false, projectIds: [projectId] },
        Date.now() + 60_000,
      ),
      flippedSig: `${kid}.${payload}.${sig.slice(0, -1)}${sig.endsWith("0") ? "1" : "0"}`,
      // the signature of the previous format (no key id), or under another key id
      withoutKeyId: `${payload}.${sig}`,
      otherKeyId: `${kid === "00000000" ? "00000001" : "00000000"}.${payload}.${sig}`,
      // properly signed, but its expiry has passed
      expired: await mintTicket(
        await liveKey(secret),
        { all: false, projectIds: [projectId] },
        Date.now() - 1_000,
      ),
      expiredOperators: await mintTicket(await liveKey(secret), { all: true }, Date.now() - 1),
      missing: "",
      malformed: "not.a.ticket",
      unsignedPayload: `${kid}.${payload}`,
    };
    for (const [name, value] of Object.entries(forged)) {
      const res = await openLive(value);
      expect({ name, status: res.status }).toEqual({ name, status: 401 });
      expect(await res.json()).toMatchObject({ error: { code: "bad_ticket" } });
    }
    const noParam = await producerFetch("/live", {
      token: null,
      headers: { Upgrade: "websocket" },
    });
    expect(noParam.status).toBe(401);

    // A ticket minted with LIVE_TICKET_TTL_S = 0 is expired as soon as it is made.
    const stillborn = await mint(
      { project_ids: [projectId] },
      { vars: { LIVE_TICKET_TTL_S: "0" } },
    );
    const res = await openLive(stillborn.ticket);
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ error: { code: "bad_ticket" } });
  });

  it("upgrades behind the CORS middleware too", async () => {
    const { ticket } = await mintProjects(freshProjectId());
    const res = await openLive(ticket, { vars: { CORS_ORIGIN: "https://editor.test" } });
    expect(res.status).toBe(101);
    const client = new LiveClient(res.webSocket as WebSocket);
    await client.until(() => client.messages.length > 0, "the snapshot");
    expect(client.snapshot).toEqual([]);
    client.close();
  });
});

describe("the snapshot", () => {
  it("holds the active jobs of the ticket's projects and their 20 newest finished, no others", async () => {
    const [a, b, c] = [freshProjectId(), freshProjectId(), freshProjectId()];
    const plan: [number, JobRow["status"]][] = [
      [a, "pending"],
      [a, "processing"],
      [c, "processing"],
    ];
    for (let i = 0; i < 25; i++) plan.push([i % 5 < 3 ? a : b, i % 2 ? "error" : "complete"]);
    plan.push([b, "pending"], [c, "complete"], [a, "processing"], [c, "error"]);
    const rows: JobRow[] = [];
    for (const [i, [projectId, status]] of plan.entries()) {
      const at = `2026-01-01 00:${String(Math.floor(i / 60)).padStart(2, "0")}:${String(i % 60).padStart(2, "0")}.000`;
      rows.push(await insertAt(projectId, status, at));
    }
    const finished = (row: JobRow) => row.status === "complete" || row.status === "error";
    const expected = (projects: number[]) => {
      const mine = rows.filter((row) => projects.includes(row.project_id)).reverse();
      const active = mine.filter((row) => !finished(row));
      const done = mine.filter(finished).slice(0, 20);
      return mine.filter((row) => active.includes(row) || done.includes(row)).map(toJob);
    };

    // One project (its hub), several (a channel): newest first, exactly as the API answers.
    const single = await connect((await mintProjects(a)).ticket);
    expect(single.snapshot).toEqual(expected([a]));
    expect(single.snapshot).toHaveLength(18);
    const several = await connect((await mintProjects(a, b)).ticket);
    expect(several.snapshot).toEqual(expected([a, b]));
    expect(
      several.snapshot.filter((job) => job.status === "complete" || job.status === "error"),
    ).toHaveLength(20);
    expect(
      several.snapshot.filter((job) => job.status === "pending" || job.status === "processing"),
    ).toHaveLength(4);
    expect(several.snapshot.map((job) => job.project_id)).not.toContain(c);
    const first = several.snapshot[0] as Job;
    expect(first).toEqual(await apiJob(first.id));

    // Operators: the newest jobs of every project.
    const fresh = await createJob(freshProjectId());
    const operators = await connect((await mintAll()).ticket);
    expect(operators.snapshot.map((job) => job.id)).toContain(fresh.id);
    for (const client of [single, several, operators]) client.close();
  });
});

describe("changes", () => {
  it("every transition sends a job message with a rising version to each ticket of its project", async () => {
    const [p, q, other] = [freshProjectId(), freshProjectId(), freshProjectId()];
    const hubClient = await connect((await mintProjects(p)).ticket);
    const channelClient = await connect((await mintProjects(p, q)).ticket);
    const operators = await connect((await mintAll()).ticket);
    const clients = [hubClient, channelClient, operators];

    // A job of another project first: it never reaches the project tickets.
    const foreign = await createJob(other);

    // created (the route), claimed and submitted (the consumer's state machine), progress and
    // complete (RunPod's signed callbacks).
    const created = await createJob(p);
    const [claimed] = await state.claimJobs(deps(), [created.id], 120);
    if (!claimed) throw new Error("claim failed");
    const runId = `run-${crypto.randomUUID()}`;
    expect(await state.recordRun(deps(), claimed, runId)).not.toBeNull();
    const progress = await postJson(
      await callbackPath("progress", created.id, claimed.attempt),
      { progress: 50 },
      { token: null },
    );
    expect(progress.status).toBe(204);
    await env.VIDEOS.put(state.plannedOutputKey(claimed), new Uint8Array([1, 2, 3]));
    const webhook = await postJson(
      await callbackPath("webhook", created.id, claimed.attempt),
      { id: runId, status: "COMPLETED", output: {} },
      { token: null },
    );
    expect(await webhook.json()).toMatchObject({ applied: true, outcome: "completed" });
    const done = await apiJob(created.id);
    expect(done).toMatchObject({ status: "complete", progress: 100, version: 5 });

    // And a cancel.
    const toCancel = await createJob(q);
    const cancel = await producerFetch(`/exports/${toCancel.id}/cancel`, { method: "POST" });
    expect(cancel.status).toBe(200);
    const cancelled = await apiJob(toCancel.id);

    for (const client of clients) {
      await client.untilVersion(created.id, done.version);
      const seen = client.changes(created.id);
      expect(seen.map((job) => job.version)).toEqual([1, 2, 3, 4, 5]);
      expect(seen.map((job) => [job.status, job.attempt, job.progress, job.runpod_job_id])).toEqual(
        [
          ["pending", 0, 0, null],
          ["processing", 1, 0, null],
          ["processing", 1, 0, runId],
          ["processing", 1, 50, runId],
          ["complete", 1, 100, runId],
        ],
      );
      expect(seen.at(-1)).toEqual(done);
      expect(seen[0]).toEqual(created);
    }
    // The cancel reaches the channel (q is its project) and the operators, not p's own ticket.
    for (const client of [channelClient, operators]) {
      await client.untilVersion(toCancel.id, cancelled.version);
      expect(client.changes(toCancel.id).map((job) => job.version)).toEqual([1, 2]);
      expect(client.changes(toCancel.id).at(-1)).toEqual(cancelled);
      expect(cancelled).toMatchObject({ status: "error", error: "cancelled" });
    }
    expect(hubClient.changes(toCancel.id)).toEqual([]);
    // The other project's job: to the operators only.
    await operators.untilVersion(foreign.id, 1);
    expect(hubClient.changes(foreign.id)).toEqual([]);
    expect(channelClient.changes(foreign.id)).toEqual([]);
    for (const client of [hubClient, channelClient]) {
      expect(client.changes().every((job) => job.project_id === p || job.project_id === q)).toBe(
        true,
      );
    }
    for (const client of clients) client.close();
  });

  it("a client keeping the highest version per job ends with D1's row, whatever the order", async () => {
    const p = freshProjectId();
    const [hubClient, channelClient] = [
      await connect((await mintProjects(p)).ticket),
      await connect((await mintProjects(p, freshProjectId())).ticket),
    ];
    const job = await insertPendingJob(p);
    const [claimed] = await state.claimJobs(deps(), [job.id], 120);
    if (!claimed) throw new Error("claim failed");
    // Progress reports racing each other (some raise progress, some are too late to), and a
    // client connecting meanwhile: its snapshot comes first, the changes it missed or not after.
    const reports = [35, 5, 80, 20, 60, 95, 10, 70, 45, 90];
    const lateTicket = (await mintProjects(p)).ticket;
    let late: LiveClient | undefined;
    await Promise.all([
      connect(lateTicket).then((client) => {
        late = client;
      }),
      ...reports.map(async (value) => {
        const res = await postJson(
          await callbackPath("progress", job.id, claimed.attempt),
          { progress: value },
          { token: null },
        );
        expect(res.status).toBe(204);
      }),
    ]);
    const row = (await readJob(job.id)) as JobRow;
    expect(row.progress).toBe(95);
    if (!late) throw new Error("the late client did not connect");
    await late.until(() => late?.latest(job.id)?.version === row.version, "the late client");
    expect(late.latest(job.id)).toEqual(toJob(row));
    late.close();
    for (const client of [hubClient, channelClient]) {
      await client.untilVersion(job.id, row.version);
      expect(client.latest(job.id)).toEqual(toJob(row));
      const versions = client.changes(job.id).map((seen) => seen.version);
      expect(new Set(versions).size).toBe(versions.length);
      expect(Math.max(...versions)).toBe(row.version);
      client.close();
    }
    // A client that reconnects gets a fresh snapshot: D1's row.
    const again = await connect((await mintProjects(p)).ticket);
    expect(again.snapshot).toContainEqual(toJob(row));
    again.close();
  });

  it("bookkeeping is published too: a cancel retried by the reconciler ends the view at D1's version", async () => {
    const p = freshProjectId();
    const client = await connect((await mintProjects(p)).ticket);
    const endpoint = `live-recancel-${crypto.randomUUID().slice(0, 8)}`;
    const testEnv = { ...env, RUNPOD_ENDPOINT_ID: endpoint };
    const emulator = new URL(env.RUNPOD_BASE_URL).origin;
    const configure = (config: Record<string, unknown>) =>
      fetch(`${emulator}/__emulator/endpoints/${endpoint}/config`, {
        method: "PUT",
        body: JSON.stringify(config),
      });
    await configure({ runMs: 60_000 });
    const job = await createJob(p);
    const [claimed] = await state.claimJobs(consumerDeps(testEnv), [job.id], 120);
    if (!claimed) throw new Error("claim failed");
    const submitted = await fetch(`${env.RUNPOD_BASE_URL}/${endpoint}/run`, {
      method: "POST",
      headers: { authorization: `Bearer ${env.RUNPOD_API_KEY}` },
      body: JSON.stringify({ input: {} }),
    });
    const runId = ((await submitted.json()) as { id: string }).id;
    expect(await state.recordRun(consumerDeps(testEnv), claimed, runId)).not.toBeNull();
    // RunPod is down when the user cancels: the cancel is remembered (due_at), then retried by
    // the reconciler once RunPod is back (a lease, then the confirmation): three bookkeeping
    // changes of a finished job, each raising its version.
    await configure({ outage: true });
    const cancel = await postJson(
      `/exports/${job.id}/cancel`,
      {},
      { vars: { RUNPOD_ENDPOINT_ID: endpoint } },
    );
    expect(cancel.status).toBe(200);
    const remembered = (await readJob(job.id)) as JobRow;
    expect(remembered.due_at).not.toBeNull();
    await configure({ outage: false });
    await env.DB.prepare(
      "UPDATE export_jobs SET due_at = datetime('now', '-1 seconds') WHERE id = ?",
    )
      .bind(job.id)
      .run();
    expect((await reconcile(consumerDeps(testEnv))).outcomes.cancel_retried).toBeGreaterThanOrEqual(
      1,
    );
    const row = (await readJob(job.id)) as JobRow;
    expect(row).toMatchObject({ status: "error", error: "cancelled", due_at: null });
    expect(row.version).toBeGreaterThan(remembered.version);
    await client.untilVersion(job.id, row.version);
    expect(client.latest(job.id)).toEqual(toJob(row));
    client.close();
  });

  it("a failed publication is logged and changes nothing: the transition is in D1", async () => {
    const p = freshProjectId();
    const client = await connect((await mintProjects(p)).ticket);
    const rejecting = deps({
      publish: () => Promise.reject(new Error("live status is down")),
      progress: () => Promise.reject(new Error("live status is down")),
    });
    const throwing = deps({
      publish: () => {
        throw new Error("live status threw");
      },
      progress: () => {
        throw new Error("live status threw");
      },
    });
    const job = await insertPendingJob(p);
    const [claimed] = await state.claimJobs(rejecting, [job.id], 120);
    expect(claimed).toMatchObject({ status: "processing", attempt: 1, version: 2 });
    expect(await readJob(job.id)).toMatchObject({ status: "processing", attempt: 1, version: 2 });
    const recorded = await state.recordRun(throwing, claimed as JobRow, "run-unpublished");
    expect(recorded).toMatchObject({ runpod_job_id: "run-unpublished", version: 3 });
    expect(await readJob(job.id)).toMatchObject({ runpod_job_id: "run-unpublished", version: 3 });
    const created = await state.createJob(rejecting, {
      id: crypto.randomUUID(),
      project_id: p,
      type: "overlay",
      input_video_key: `uploads/${p}/in.mp4`,
      params: { highlight_regions: [{ start_time: 0, end_time: 1 }] },
    });
    expect(created && (await readJob(created.id))).toMatchObject({ status: "pending", version: 1 });

    // The next change that is published carries the truth; the client keeps it.
    const raised = await state.recordProgress(deps(), job.id, 1, 40);
    expect(raised).toMatchObject({ progress: 40, version: 4 });
    await client.untilVersion(job.id, 4);
    expect(client.changes(job.id).map((seen) => seen.version)).toEqual([4]);
    expect(client.latest(job.id)).toEqual(toJob(raised as JobRow));
    expect(client.changes(created?.id)).toEqual([]);
    client.close();

    // Reconnecting, the snapshot has what was never published.
    const again = await connect((await mintProjects(p)).ticket);
    expect(again.snapshot.map((seen) => [seen.id, seen.version])).toEqual(
      expect.arrayContaining([
        [job.id, 4],
        [created?.id, 1],
      ]),
    );
    again.close();
  });
});

describe("sockets", () => {
  it("answer ping with pong without the object's handler, and survive hibernation", async () => {
    const p = freshProjectId();
    const hubClient = await connect((await mintProjects(p)).ticket);
    const channelTicket = (await mintProjects(p, freshProjectId())).ticket;
    const channelClient = await connect(channelTicket);
    for (const client of [hubClient, channelClient]) {
      client.ws.send("ping");
      await client.until(() => client.pongs === 1, "pong");
      expect(client.messages).toHaveLength(1); // the snapshot only
    }
    const autoResponded = await runInDurableObject(hubOf(p), (_hub, ctx) => {
      const sockets = ctx.getWebSockets();
      return {
        sockets: sockets.length,
        pair: ctx.getWebSocketAutoResponse()?.request,
        answered: sockets.every((ws) => ctx.getWebSocketAutoResponseTimestamp(ws) !== null),
      };
    });
    expect(autoResponded).toEqual({ sockets: 1, pair: "ping", answered: true });

    // Evicted with their sockets hibernated, the hub and the channel wake for the next change and
    // still know which socket may see what (the attachment) and which channels listen (storage).
    await evictDurableObject(hubOf(p), { webSockets: "hibernate" });
    await evictDurableObject(channelOf(channelTicket), { webSockets: "hibernate" });
    const job = await createJob(p);
    for (const client of [hubClient, channelClient]) {
      await client.untilVersion(job.id, 1);
      expect(client.changes(job.id)).toEqual([job]);
      client.ws.send("ping");
      await client.until(() => client.pongs === 2, "pong after hibernation");
    }
    hubClient.close();
    channelClient.close();
  });

  it("a ticket of several projects is one socket; its channel subscribes and unsubscribes", async () => {
    const [p, q] = [freshProjectId(), freshProjectId()];
    expect(await subscriptionsOf(p)).toEqual([]);
    const client = await connect((await mintProjects(p, q)).ticket);
    const [subscribedP, subscribedQ] = [await subscriptionsOf(p), await subscriptionsOf(q)];
    expect(subscribedP).toHaveLength(1);
    expect(subscribedQ).toEqual(subscribedP);
    expect(await runInDurableObject(hubOf(p), (_hub, ctx) => ctx.getWebSockets().length)).toBe(0);

    client.close();
    await waitFor(
      async () => ((await subscriptionsOf(p)).length === 0 ? true : undefined),
      "the channel to unsubscribe from p",
    );
    expect(await subscriptionsOf(q)).toEqual([]);
    // With no listener left, a change of p goes nowhere (and fails nothing).
    const job = await createJob(p);
    expect(await readJob(job.id)).toMatchObject({ status: "pending", version: 1 });
  });
});

describe("queue messages", () => {
  it("a socket receives its pending jobs' queue positions outside their versions, through a hub and through a channel", async () => {
    const [p, q] = [freshProjectId(), freshProjectId()];
    const hubClient = await connect((await mintProjects(p)).ticket);
    const channelClient = await connect((await mintProjects(p, q)).ticket);
    const [a, b] = [await createJob(p), await createJob(q)];
    const queueOf = (client: LiveClient, id: string) =>
      client.messages.flatMap((message) =>
        message.type === "queue" ? message.jobs.filter((job) => job.id === id) : [],
      );
    await hubClient.until(() => queueOf(hubClient, a.id).length > 0, "a's queue message (hub)");
    await channelClient.until(
      () => queueOf(channelClient, a.id).length > 0 && queueOf(channelClient, b.id).length > 0,
      "a's and b's queue messages (channel)",
    );
    const [first] = queueOf(hubClient, a.id);
    expect(first?.queue).toMatchObject({ lane: "standard" });
    expect(first?.queue.position).toBeGreaterThanOrEqual(0);
    expect(first?.queue.eta_s).toBeGreaterThanOrEqual(0);
    // A queue message is not a change: the jobs kept their versions, and the hub's socket
    // never hears of the other project's job.
    expect(queueOf(hubClient, b.id)).toEqual([]);
    expect(await readJob(a.id)).toMatchObject({ version: 1 });
    expect(hubClient.changes(a.id).map((job) => job.version)).toEqual([1]);
    hubClient.close();
    channelClient.close();
  });
});

describe("sessions", () => {
  // The socket's end itself (4001 after LIVE_SESSION_MAX_S): live-session.test.ts.
  it("a socket is not closed before LIVE_SESSION_MAX_S (3600 s): the hub's one alarm serves its queue messages and its sockets' ends", async () => {
    const p = freshProjectId();
    const before = Date.now();
    const client = await connect((await mintProjects(p)).ticket);
    const after = Date.now();
    const alarmAndEnds = () =>
      runInDurableObject(hubOf(p), async (_hub, ctx) => ({
        alarm: await ctx.storage.getAlarm(),
        ends: ctx
          .getWebSockets()
          .map((ws) => (ws.deserializeAttachment() as { closesAt: number }).closesAt),
      }));
    // Nothing pending: once the first queue check found nothing, the alarm waits for the end.
    const end = await waitFor(async () => {
      const { alarm, ends } = await alarmAndEnds();
      return ends.length === 1 && alarm === ends[0] ? alarm : undefined;
    }, "the alarm at the socket's end");
    expect(end).toBeGreaterThanOrEqual(before + 3_600_000);
    expect(end).toBeLessThanOrEqual(after + 3_600_000);

    // A pending job: queue messages come, the next one planned before the end.
    const job = await createJob(p);
    const queueMessages = () => client.messages.filter((message) => message.type === "queue");
    await client.until(() => queueMessages().length === 1, "the first queue message");
    await waitFor(async () => {
      const { alarm } = await alarmAndEnds();
      return alarm !== null && alarm < end ? alarm : undefined;
    }, "the alarm at the next queue message");

    // The alarm run now, before the end: it closes nothing and keeps a queue message planned.
    expect(await runDurableObjectAlarm(hubOf(p))).toBe(true);
    expect(client.closedWith).toBeNull();
    const { alarm: next } = await alarmAndEnds();
    expect(next).not.toBeNull();
    expect(next).toBeLessThan(end);
    const cancel = await producerFetch(`/exports/${job.id}/cancel`, { method: "POST" });
    expect(cancel.status).toBe(200);
    await client.untilVersion(job.id, 2);
    expect(client.closedWith).toBeNull();
    expect(client.ws.readyState).toBe(WebSocket.OPEN);
    client.close();
  });
});

describe("progress messages", () => {
  it("a report D1 does not record reaches the project's sockets and channels at the row's version", async () => {
    const [p, q] = [freshProjectId(), freshProjectId()];
    const hubClient = await connect((await mintProjects(p)).ticket);
    const channelClient = await connect((await mintProjects(p, q)).ticket);
    const job = await insertPendingJob(p);
    const [claimed] = await state.claimJobs(deps(), [job.id], 120);
    const recorded = await state.recordRun(deps(), claimed as JobRow, "run-live-progress");
    if (!recorded) throw new Error("not recorded");
    const res = await postJson(
      await callbackPath("progress", job.id, recorded.attempt),
      { progress: 12 },
      { token: null },
    );
    expect(res.status).toBe(204);
    const expected = {
      type: "progress",
      job_id: job.id,
      project_id: p,
      attempt: recorded.attempt,
      version: recorded.version,
      progress: 12,
    };
    for (const client of [hubClient, channelClient]) {
      await client.until(
        () => client.messages.some((message) => message.type === "progress"),
        "the progress message",
      );
      expect(client.messages.filter((message) => message.type === "progress")).toEqual([expected]);
    }
    // Not a change: D1 and the job messages stay at the recorded version.
    expect(await readJob(job.id)).toMatchObject({ progress: 0, version: recorded.version });
    hubClient.close();
    channelClient.close();
  });
});

describe("GET /exports/{id}/events", () => {
  it("accepts the ADMIN_TOKEN (the dashboard's timeline) as well as the API_TOKEN", async () => {
    const job = await createJob(freshProjectId());
    for (const token of [API_TOKEN, ADMIN_TOKEN]) {
      const res = await producerFetch(`/exports/${job.id}/events`, { token });
      expect(res.status).toBe(200);
      const body = (await res.json()) as { events: { type: string }[] };
      expect(body.events.map((event) => event.type)).toEqual(["created"]);
    }
    const res = await producerFetch(`/exports/${job.id}/events`, { token: "nope" });
    expect(res.status).toBe(401);
  });
});
