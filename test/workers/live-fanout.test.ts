// Live fan-out on the real objects: what a batch of changes costs in Durable Object calls (one per
// live shard it touches; no call to a hub nobody listens to), that every listener still gets every
// change it may see (operators across all shards, a project's socket, a channel of several
// projects) and queue messages, and that a hub's subscription to its shard follows its listeners,
// across eviction. The publisher gets the real LIVE_HUB namespace wrapped in a counter: every
// call it makes, by object name, and the forwards each shard answers it made.
//
// The figures (per job and at 100 exports/s, one JSON line per scenario): `npm run live-fanout`.
import { evictDurableObject, listDurableObjectIds, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { consumerDeps } from "../../consumer/process-jobs.ts";
import * as state from "../../shared/job-state.ts";
import type { LiveHub } from "../../shared/live-hub.ts";
import {
  LIVE_SHARDS,
  OPERATORS_HUB,
  projectHubName,
  shardHubName,
  shardOfProject,
} from "../../shared/live-keys.ts";
import { livePublisher } from "../../shared/live-publisher.ts";
import type { JobRow } from "../../shared/sql/jobs/row.ts";
import { freshProjectId, waitFor } from "./helpers.ts";
import { connect, type LiveClient, mintAll, mintProjects } from "./live-client.ts";

/** What the publisher called: calls by object name, and the forwards the shards reported. */
class Counter {
  readonly calls = new Map<string, number>();
  forwards = 0;

  get total(): number {
    return [...this.calls.values()].reduce((a, b) => a + b, 0);
  }

  reset(): void {
    this.calls.clear();
    this.forwards = 0;
  }
}

/** The real LIVE_HUB namespace, counting every method called on the stubs it hands out. */
function countingHubs(counter: Counter): DurableObjectNamespace<LiveHub> {
  return new Proxy(env.LIVE_HUB, {
    get(target, property) {
      if (property !== "get") {
        const value: unknown = Reflect.get(target, property);
        return typeof value === "function" ? value.bind(target) : value;
      }
      return (id: DurableObjectId) => {
        const stub = target.get(id);
        const name = id.name ?? id.toString();
        return new Proxy(stub, {
          get(stubTarget, method) {
            const value: unknown = Reflect.get(stubTarget, method);
            if (typeof value !== "function" || typeof method !== "string") return value;
            // Called as it is: an RPC stub's method is itself a stub (its `apply` would be RPC).
            const call = value as (...args: unknown[]) => Promise<unknown>;
            return async (...args: unknown[]) => {
              counter.calls.set(name, (counter.calls.get(name) ?? 0) + 1);
              const answer = await call(...args);
              // A shard answers how many hubs it forwarded the batch to.
              if (typeof answer === "number") counter.forwards += answer;
              return answer;
            };
          },
        });
      };
    },
  });
}

const countingDeps = (counter: Counter) => ({
  ...consumerDeps(env),
  live: livePublisher({ LIVE_HUB: countingHubs(counter) }),
});

function createJob(deps: state.JobDeps, projectId: number) {
  return state.createJob(deps, {
    id: crypto.randomUUID(),
    project_id: projectId,
    type: "overlay",
    input_video_key: `uploads/${projectId}/in.mp4`,
    params: { highlight_regions: [{ start_time: 0, end_time: 1 }] },
  });
}

/** A job of each project: created, claimed in one batch, submitted, 3 × progress, completed. */
async function lifecycle(projects: readonly number[], counter: Counter): Promise<JobRow[]> {
  const deps = countingDeps(counter);
  const created: JobRow[] = [];
  for (const projectId of projects) {
    const row = await createJob(deps, projectId);
    if (!row) throw new Error("create failed");
    created.push(row);
  }
  const claimed = await state.claimJobs(
    deps,
    created.map((row) => row.id),
    120,
  );
  expect(claimed).toHaveLength(projects.length);
  const done: JobRow[] = [];
  for (const job of claimed) {
    const runId = `run-${crypto.randomUUID()}`;
    const recorded = await state.recordRun(deps, job, runId);
    if (!recorded) throw new Error("record failed");
    for (const progress of [25, 50, 75]) {
      await state.recordProgress(deps, job.id, job.attempt, progress);
    }
    await env.VIDEOS.put(state.plannedOutputKey(job), new Uint8Array([1]));
    const outcome = await state.applyRunStatus(deps, recorded, job.attempt, {
      id: runId,
      status: "COMPLETED",
      output: {},
    });
    expect(outcome).toBe("completed");
    const row = await env.DB.prepare("SELECT * FROM export_jobs WHERE id = ?")
      .bind(job.id)
      .first<JobRow>();
    if (!row) throw new Error("job gone");
    done.push(row);
  }
  return done;
}

const hub = (name: string) => env.LIVE_HUB.get(env.LIVE_HUB.idFromName(name));

/** Who subscribed to the object `name` (storage, as it survives eviction). */
function subscribersOf(name: string): Promise<string[]> {
  return runInDurableObject(hub(name), async (_hub, ctx) =>
    [...(await ctx.storage.list({ prefix: "sub:" })).keys()].map((key) => key.slice(4)),
  );
}

/** Whether the object `name` was ever created (called, or reached by a test). */
async function exists(name: string): Promise<boolean> {
  const id = env.LIVE_HUB.idFromName(name);
  return (await listDurableObjectIds(env.LIVE_HUB)).some((other) => other.equals(id));
}

/** Waits until the operators' hub (left by a test's closed socket) is subscribed to no shard. */
async function operatorsLeft(): Promise<void> {
  await waitFor(async () => {
    for (let shard = 0; shard < LIVE_SHARDS; shard++) {
      if ((await subscribersOf(shardHubName(shard))).includes(OPERATORS_HUB)) return undefined;
    }
    return true;
  }, "the operators' hub to leave every shard");
}

const distinctShards = (projects: readonly number[]) =>
  new Set(projects.map((id) => shardOfProject(id))).size;

const JOBS = 30;
const freshProjects = (n: number) => Array.from({ length: n }, () => freshProjectId());

describe("live fan-out", () => {
  it("a batch of 30 claimed jobs costs one call per live shard it touches, and a hub nobody listens to is never called", async () => {
    const projects = freshProjects(JOBS);
    const counter = new Counter();
    const deps = countingDeps(counter);
    const created: JobRow[] = [];
    for (const projectId of projects) created.push((await createJob(deps, projectId)) as JobRow);
    // One call per change, to the project's shard only.
    expect(counter.total).toBe(JOBS);
    expect([...counter.calls.keys()].every((name) => name.startsWith("all:"))).toBe(true);

    counter.reset();
    const claimed = await state.claimJobs(
      deps,
      created.map((row) => row.id),
      120,
    );
    expect(claimed).toHaveLength(JOBS);
    // 30 projects in a row cover every shard: 16 calls for 30 changes, one per shard.
    expect(distinctShards(projects)).toBe(LIVE_SHARDS);
    expect(counter.calls.size).toBe(LIVE_SHARDS);
    expect([...counter.calls.values()].every((n) => n === 1)).toBe(true);
    expect([...counter.calls.keys()].sort()).toEqual(
      Array.from({ length: LIVE_SHARDS }, (_, shard) => shardHubName(shard)).sort(),
    );

    // Nobody listens to these projects: their hubs were never called (never even created), and
    // the shards forwarded them to no project hub.
    for (const projectId of projects) expect(await exists(projectHubName(projectId))).toBe(false);
    for (let shard = 0; shard < LIVE_SHARDS; shard++) {
      const subscribers = await subscribersOf(shardHubName(shard));
      expect(
        subscribers.filter((name) => projects.some((id) => name === projectHubName(id))),
      ).toEqual([]);
    }
    expect(await exists(shardHubName(0))).toBe(true); // what `exists` sees of an object called
  });

  it("an operators' socket gets every change of projects on every shard; a project's socket and a channel get theirs", async () => {
    const projects = freshProjects(2 * LIVE_SHARDS);
    const [p, q, r] = projects as [number, number, number];
    const operators = await connect((await mintAll()).ticket);
    const single = await connect((await mintProjects(p)).ticket);
    const channel = await connect((await mintProjects(q, r)).ticket); // two shards
    expect(shardOfProject(q)).not.toBe(shardOfProject(r));
    const counter = new Counter();
    const done = await lifecycle(projects, counter);
    // The publisher calls shards only: one per single-row change, one per shard for the claims.
    expect([...counter.calls.keys()].every((name) => name.startsWith("all:"))).toBe(true);
    expect(counter.total).toBe(6 * projects.length + LIVE_SHARDS);

    const versions = [1, 2, 3, 4, 5, 6, 7]; // create, claim, record, 3 × progress, complete
    for (const job of done) {
      expect(job.version).toBe(7);
      await operators.untilVersion(job.id, 7);
      expect(operators.changes(job.id).map((seen) => seen.version)).toEqual(versions);
      expect(operators.latest(job.id)).toMatchObject({ status: "complete", version: 7 });
    }
    const ofProject = (projectId: number) => done.find((job) => job.project_id === projectId);
    for (const [client, mine] of [
      [single, [p]],
      [channel, [q, r]],
    ] as const) {
      for (const projectId of mine) {
        const job = ofProject(projectId) as JobRow;
        await client.untilVersion(job.id, 7);
        expect(client.changes(job.id).map((seen) => seen.version)).toEqual(versions);
      }
      expect(
        client.changes().every((job) => (mine as readonly number[]).includes(job.project_id)),
      ).toBe(true);
    }
    for (const client of [operators, single, channel]) client.close();
    await operatorsLeft();
  });

  it("changes published at once to one shard reach the operators' hub each exactly once, however many are in flight together", async () => {
    // 40 projects of one shard, a change of each published at the same time.
    const projects = freshProjects(40 * LIVE_SHARDS).filter(
      (id, _, all) => shardOfProject(id) === shardOfProject(all[0] as number),
    );
    expect(projects).toHaveLength(40);
    const operators = await connect((await mintAll()).ticket);
    const counter = new Counter();
    const deps = countingDeps(counter);
    const created = await Promise.all(projects.map((id) => createJob(deps, id)));
    expect(counter.total).toBe(40);
    // While a call to the operators' hub is in flight, the next changes wait and go together
    // (how many go together depends on timing: the figure is printed, only its bounds tested).
    expect(counter.forwards).toBeGreaterThanOrEqual(1);
    expect(counter.forwards).toBeLessThanOrEqual(40);
    for (const job of created) {
      if (!job) throw new Error("create failed");
      await operators.untilVersion(job.id, 1);
    }
    const ids = new Set(created.map((job) => job?.id));
    const seen = operators.changes().filter((job) => ids.has(job.id));
    expect(seen).toHaveLength(40);
    console.log(
      JSON.stringify({ scenario: "40 changes at once, one shard", forwards: counter.forwards }),
    );
    operators.close();
    await operatorsLeft();
  });

  it("a project's hub subscribes to its shard with its first listener and leaves with its last, across eviction", async () => {
    const [p, q] = [freshProjectId(), freshProjectId()];
    const shardP = shardHubName(shardOfProject(p));
    const shardQ = shardHubName(shardOfProject(q));
    expect(await subscribersOf(shardP)).not.toContain(projectHubName(p));

    const first = await connect((await mintProjects(p)).ticket);
    expect(await subscribersOf(shardP)).toContain(projectHubName(p));
    // A channel's subscription makes q's hub subscribe to q's shard, before the snapshot.
    const channel = await connect((await mintProjects(p, q)).ticket);
    expect(await subscribersOf(shardQ)).toContain(projectHubName(q));
    const second = await connect((await mintProjects(p)).ticket);
    first.close();
    channel.close();
    await waitFor(
      async () => (!(await subscribersOf(shardQ)).includes(projectHubName(q)) ? true : undefined),
      "q's hub to leave its shard with the channel",
    );
    // p's hub keeps its second socket, so it stays subscribed; evicted (its socket hibernated)
    // with its shard, both wake from storage for the next change.
    expect(await subscribersOf(shardP)).toContain(projectHubName(p));
    await evictDurableObject(hub(projectHubName(p)), { webSockets: "hibernate" });
    await evictDurableObject(hub(shardP));
    const counter = new Counter();
    const job = (await createJob(countingDeps(counter), p)) as JobRow;
    await second.untilVersion(job.id, 1);
    expect(counter.forwards).toBeGreaterThanOrEqual(1);

    second.close();
    await waitFor(
      async () => (!(await subscribersOf(shardP)).includes(projectHubName(p)) ? true : undefined),
      "p's hub to leave its shard with its last socket",
    );
    // Nobody listens any more: the next change stops at the shard.
    counter.reset();
    await createJob(countingDeps(counter), p);
    expect(counter.total).toBe(1);
    expect(counter.calls.get(shardP)).toBe(1);
  });

  it("the operators' hub listens to every shard while it holds a socket, and sends queue messages", async () => {
    const operators = await connect((await mintAll()).ticket);
    for (let shard = 0; shard < LIVE_SHARDS; shard++) {
      expect(await subscribersOf(shardHubName(shard))).toContain(OPERATORS_HUB);
    }
    const job = (await createJob(countingDeps(new Counter()), freshProjectId())) as JobRow;
    await operators.until(
      () =>
        operators.messages.some(
          (message) =>
            message.type === "queue" && message.jobs.some((queued) => queued.id === job.id),
        ),
      "a queue message naming the operators' new pending job",
    );
    expect(operators.changes(job.id).map((seen) => seen.version)).toEqual([1]);
    operators.close();
    await operatorsLeft();
  });
});

/** Per job and at 100 exports/s, from what `counter` saw over `jobs` lifecycles. */
function figures(scenario: string, counter: Counter, jobs: number) {
  const perJob = (n: number) => Math.round((n / jobs) * 100) / 100;
  const atRate = (n: number) => Math.round((n / jobs) * 100);
  const shardCalls = [...counter.calls.values()];
  const result = {
    scenario,
    publisher_calls_per_job: perJob(counter.total),
    forwards_per_job: perJob(counter.forwards),
    do_calls_per_job: perJob(counter.total + counter.forwards),
    shards_touched: counter.calls.size,
    all_shards_rps_at_100_exports_s: atRate(counter.total),
    busiest_shard_rps_at_100_exports_s: atRate(Math.max(0, ...shardCalls)),
  };
  console.log(JSON.stringify(result));
  return result;
}

describe("live fan-out, counted (create, claim as one batch, submit, 3 × progress, complete)", () => {
  it("with nobody listening: one call per change, none for a claim's batch beyond its shards", async () => {
    await operatorsLeft();
    const counter = new Counter();
    await lifecycle(freshProjects(JOBS), counter);
    const seen = figures("no listener", counter, JOBS);
    // 6 single-row changes per job, and a batch of 30 claims in one call per shard.
    expect(counter.total).toBe(6 * JOBS + LIVE_SHARDS);
    expect(seen.forwards_per_job).toBe(0);
  });

  it("with listeners: each shard call is forwarded once to each hub of its batch that listens", async () => {
    const scenarios = [
      { name: "an operator", operator: true, projects: false },
      { name: "a socket on every project", operator: false, projects: true },
      { name: "an operator and a socket on every project", operator: true, projects: true },
    ];
    for (const scenario of scenarios) {
      const projects = freshProjects(JOBS);
      const operators = scenario.operator ? await connect((await mintAll()).ticket) : null;
      const own = new Map<number, LiveClient>();
      if (scenario.projects) {
        for (const projectId of projects) {
          own.set(projectId, await connect((await mintProjects(projectId)).ticket));
        }
      }
      const counter = new Counter();
      const done = await lifecycle(projects, counter);
      figures(scenario.name, counter, JOBS);
      const shardCalls = 6 * JOBS + LIVE_SHARDS;
      expect(counter.total).toBe(shardCalls);
      // The operators' hub: once per shard call. Projects' hubs: once per single-row change, and
      // the claim's batch once per project (each shard's call carries its projects' jobs).
      expect(counter.forwards).toBe(
        (scenario.operator ? shardCalls : 0) + (scenario.projects ? 6 * JOBS + JOBS : 0),
      );
      for (const job of done) {
        for (const client of [operators, own.get(job.project_id)]) {
          if (!client) continue;
          await client.untilVersion(job.id, 7);
          expect(client.changes(job.id).map((seen) => seen.version)).toEqual([1, 2, 3, 4, 5, 6, 7]);
        }
      }
      for (const [projectId, client] of own) {
        expect(client.changes().every((job) => job.project_id === projectId)).toBe(true);
        client.close();
      }
      operators?.close();
      await operatorsLeft();
    }
  });
});
