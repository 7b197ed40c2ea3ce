// The typed client (client/) against `npm start`'s stack: its types are the served document's
// (regenerated here with openapi-typescript; a drift fails), and it creates, waits for and
// watches jobs — the watch across a restart of the producer (its socket closes; it reconnects
// with a fresh ticket and keeps the highest version per job; so it does at a session's 4001 end)
// — with API_TOKEN and with a scoped
// client token, in Node (its global WebSocket).
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createReelExportsClient,
  type Job,
  type ReelExportsClient,
  ReelExportsError,
} from "../../client/index.ts";
import { buildClientBundle, committedClientBundle } from "../../scripts/build-client.ts";
import { clientTypesOf, committedClientTypes } from "../../scripts/client-types.ts";
import { type LocalStack, startLocalStack } from "../../scripts/local-stack.ts";

const logs: string[] = [];
let persistTo: string;
let stack: LocalStack | undefined;
let client: ReelExportsClient;

async function until<T>(what: string, check: () => T | undefined | Promise<T | undefined>) {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const value = await check();
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  console.error(logs.slice(-60).join("\n"));
  throw new Error(`timed out waiting for ${what}`);
}

const overlay = (projectId: number, n: number) => ({
  project_id: projectId,
  type: "overlay" as const,
  input_video_key: "uploads/demo/sample.mp4",
  params: { highlight_regions: [{ start_time: 1, end_time: 2, n }] },
});

beforeAll(async () => {
  persistTo = mkdtempSync(path.join(os.tmpdir(), "reel-client-"));
  stack = await startLocalStack({
    producerPort: 28787,
    consumerPort: 28788,
    emulatorPort: 28790,
    inspectorPorts: [28229, 28230],
    r2WriterInspectorPort: 28231,
    exampleFrontendPort: null,
    persistTo: path.join(persistTo, "state"),
    // Live sessions of 3 s: a watch meets their end (4001) and reconnects at once.
    settings: { RUNPOD_ENDPOINT_ID: "client-endpoint", LIVE_SESSION_MAX_S: "3" },
    emulatorEnv: { RUNPOD_EMULATOR_RUN_MS: "1500", RUNPOD_EMULATOR_LOG: "0" },
    onOutput: (name, line) => logs.push(`[${name}] ${line}`),
  }).catch((error: unknown) => {
    console.error(logs.slice(-40).join("\n"));
    throw error;
  });
  client = createReelExportsClient({
    baseUrl: stack.producerUrl,
    token: stack.settings.API_TOKEN as string,
  });
}, 150_000);

afterAll(async () => {
  await stack?.stop();
  rmSync(persistTo, { recursive: true, force: true });
});

describe("the typed client", () => {
  it("has the types of the served OpenAPI document (regenerated: no drift)", async () => {
    if (!stack) throw new Error("the stack did not start");
    const res = await fetch(`${stack.producerUrl}/openapi.json`);
    expect(res.status).toBe(200);
    const generated = await clientTypesOf(await res.json());
    // On a failure: `npm start`, then `npm run client:types`.
    expect(generated).toBe(committedClientTypes());
  });

  it("is bundled for browsers from client/index.ts as it is (the file the dashboard and the example load)", async () => {
    // On a failure: `npm run client:build`.
    expect(committedClientBundle()).toBe(await buildClientBundle());
  });

  it("creates an export and waitFor() resolves with it complete; errors carry the API's code", async () => {
    const job = await client.createExport(overlay(501, 1), { idempotencyKey: "client-1" });
    expect(job).toMatchObject({ project_id: 501, status: "pending" });
    const again = await client.createExport(overlay(501, 1), { idempotencyKey: "client-1" });
    expect(again.id).toBe(job.id);
    const done = await client.waitFor(job.id);
    expect(done).toMatchObject({ id: job.id, status: "complete", progress: 100 });
    expect((await client.events(job.id)).map((e) => e.type)).toContain("completed");
    const { url } = await client.downloadUrl(job.id);
    expect((await fetch(url)).status).toBe(200);
    // A finished job: waitFor answers at once.
    expect((await client.waitFor(job.id)).status).toBe("complete");

    const refused = await client.createExport(overlay(501, 2), { idempotencyKey: "client-1" }).then(
      () => null,
      (error: unknown) => error,
    );
    expect(refused).toBeInstanceOf(ReelExportsError);
    expect(refused).toMatchObject({ status: 422, code: "idempotency_key_reused" });
  });

  it("watch() follows a project across a restart of the producer, keeping the highest version per job", async () => {
    if (!stack) throw new Error("the stack did not start");
    const seen: Job[] = [];
    const states: string[] = [];
    const closes: number[] = [];
    let snapshots = 0;
    const watch = client.watch(
      { projectIds: [502] },
      {
        job: (job) => seen.push(job),
        snapshot: () => {
          snapshots += 1;
        },
        state: (state, detail) => {
          states.push(state);
          if (state === "closed" && detail) closes.push(detail.code);
        },
      },
      { minReconnectionDelay: 200 },
    );
    await until("the first snapshot", () => (snapshots >= 1 ? true : undefined));
    const first = await client.createExport(overlay(502, 1));
    await until("the first job complete", () =>
      watch.job(first.id)?.status === "complete" ? true : undefined,
    );

    await stack.restartProducer();
    // Reconnected with a fresh ticket: a second snapshot, then the changes of a new job.
    await until("a snapshot after the restart", () => (snapshots >= 2 ? true : undefined));
    expect(states).toContain("closed");
    const second = await client.createExport(overlay(502, 2));
    await until("the second job complete", () =>
      watch.job(second.id)?.status === "complete" ? true : undefined,
    );
    // A session's end (4001, LIVE_SESSION_MAX_S) is followed by a new connection and snapshot.
    const before = snapshots;
    await until("a session's end", () => (closes.includes(4001) ? true : undefined));
    const ended = closes.lastIndexOf(4001);
    await until("a snapshot after it", () =>
      snapshots > before && closes.length === ended + 1 ? true : undefined,
    );
    watch.close();

    // Each job's versions only grew; the snapshot after the restart re-sent no older one.
    for (const id of [first.id, second.id]) {
      const versions = seen.filter((job) => job.id === id).map((job) => job.version);
      expect(versions.length).toBeGreaterThan(1);
      expect(versions).toEqual([...new Set(versions)].sort((a, b) => a - b));
    }
    expect(watch.jobs().map((job) => job.id)).toEqual(
      expect.arrayContaining([first.id, second.id]),
    );
  });

  it("works with a scoped client token: its project only", async () => {
    if (!stack) throw new Error("the stack did not start");
    const minted = await client.api.POST("/client-tokens", {
      body: { project_ids: [503], user_id: 9 },
    });
    if (!minted.data) throw new Error("no client token");
    const scoped = createReelExportsClient({
      baseUrl: stack.producerUrl,
      token: minted.data.token,
    });
    const job = await scoped.createExport(overlay(503, 1));
    expect(job.user_id).toBe(9);
    expect((await scoped.waitFor(job.id)).status).toBe("complete");
    const other = await scoped.createExport(overlay(504, 1)).then(
      () => null,
      (error: unknown) => error,
    );
    expect(other).toMatchObject({ status: 403, code: "project_not_allowed" });
    const foreign = await scoped.getExport(crypto.randomUUID()).then(
      () => null,
      (error: unknown) => error,
    );
    expect(foreign).toMatchObject({ status: 404, code: "not_found" });
  });
});
