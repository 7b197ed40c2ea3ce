// What live fan-out costs, counted on the real objects: the Durable Object calls a representative
// job lifecycle makes (create, claim in one batch of 30, submit, 3 progress reports, complete),
// with nobody listening and with listeners. The publisher gets the real LIVE_HUB namespace
// wrapped in a counter (every call it makes, by object name).
//
// The figures: `npx vitest run --project workers --silent=false test/workers/live-fanout.test.ts`
// prints them (one JSON line per scenario).
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { consumerDeps } from "../../consumer/process-jobs.ts";
import * as state from "../../shared/job-state.ts";
import type { LiveHub } from "../../shared/live-hub.ts";
import { livePublisher } from "../../shared/live-publisher.ts";
import type { JobRow } from "../../shared/sql/jobs/row.ts";
import { freshProjectId } from "./helpers.ts";
import { connect, type LiveClient, mintAll, mintProjects } from "./live-client.ts";

/** Calls made to each object, by its name. */
type Calls = Map<string, number>;

/** The real LIVE_HUB namespace, counting every method called on the stubs it hands out. */
function countingHubs(calls: Calls): DurableObjectNamespace<LiveHub> {
  const hubs = env.LIVE_HUB;
  return new Proxy(hubs, {
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
            const call = value as (...args: unknown[]) => unknown;
            return (...args: unknown[]) => {
              calls.set(name, (calls.get(name) ?? 0) + 1);
              return call(...args);
            };
          },
        });
      };
    },
  });
}

const JOBS = 30;

/** JOBS jobs of JOBS projects, each created, claimed (one batch), submitted, 3 × progress, done. */
async function lifecycle(projects: number[], calls: Calls): Promise<JobRow[]> {
  const deps = { ...consumerDeps(env), live: livePublisher({ LIVE_HUB: countingHubs(calls) }) };
  const created: JobRow[] = [];
  for (const projectId of projects) {
    const row = await state.createJob(deps, {
      id: crypto.randomUUID(),
      project_id: projectId,
      type: "overlay",
      input_video_key: `uploads/${projectId}/in.mp4`,
      params: { highlight_regions: [{ start_time: 0, end_time: 1 }] },
    });
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

const isAllHub = (name: string) => name === "all" || name.startsWith("all:");
const sum = (values: Iterable<number>) => [...values].reduce((a, b) => a + b, 0);

/** Per job and at 100 exports/s, from the calls of JOBS jobs. */
function figures(scenario: string, calls: Calls, jobs: number) {
  const all = [...calls].filter(([name]) => isAllHub(name));
  const perJob = (n: number) => Math.round((n / jobs) * 100) / 100;
  const result = {
    scenario,
    publisher_calls_per_job: perJob(sum(calls.values())),
    all_hub_calls_per_job: perJob(sum(all.map(([, n]) => n))),
    all_hubs_touched: all.length,
    all_hubs_rps_at_100_exports_s: Math.round((sum(all.map(([, n]) => n)) / jobs) * 100),
    busiest_all_hub_rps_at_100_exports_s: Math.round(
      (Math.max(0, ...all.map(([, n]) => n)) / jobs) * 100,
    ),
  };
  console.log(JSON.stringify(result));
  return result;
}

describe("live fan-out, counted", () => {
  it("with nobody listening", async () => {
    const projects = Array.from({ length: JOBS }, () => freshProjectId());
    const calls: Calls = new Map();
    await lifecycle(projects, calls);
    figures("no listener", calls, JOBS);
  });

  it("with an operator and a socket on every project", async () => {
    const projects = Array.from({ length: JOBS }, () => freshProjectId());
    const clients: LiveClient[] = [await connect((await mintAll()).ticket)];
    for (const projectId of projects) {
      clients.push(await connect((await mintProjects(projectId)).ticket));
    }
    const calls: Calls = new Map();
    const done = await lifecycle(projects, calls);
    figures("operator + every project", calls, JOBS);
    const [operator] = clients;
    for (const job of done) await operator?.untilVersion(job.id, job.version);
    for (const client of clients) client.close();
  });
});
