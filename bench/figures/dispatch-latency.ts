// Figure 4, dispatch latency (phase A, before the burst): 20 POSTs from one client, 300 ms apart,
// runs of 400 ms that complete: from the POST's answer to RunPod's /run received. The same jobs
// give the per-job counts of the cost (figure 8).
import type { LocalStack } from "../../scripts/local-stack.ts";
import { median, quantile, sleep, sqlMs } from "../support.ts";
import { figure } from "./results.ts";
import {
  batches,
  ENDPOINTS,
  emulatorConfig,
  emulatorJobs,
  type Job,
  listJobs,
  load,
  note,
  type Posted,
  postExport,
  producer,
  type Run,
  runRequests,
  until,
} from "./stack.ts";

const LATENCY_JOBS = 20;
const LATENCY_SPACING_MS = 300;

/** Figure 4 (and the per-job counts of the cost): sparse POSTs that run to completion. */
async function dispatchLatency(s: LocalStack, endpoint: string, projectBase: number) {
  await emulatorConfig(s, endpoint, { queueMs: 50, runMs: 400 });
  const batchesBefore = batches.length;
  const posted: Posted[] = [];
  for (let i = 0; i < LATENCY_JOBS; i++) {
    const started = Date.now();
    posted.push(await postExport(producer.url, s.settings.API_TOKEN as string, projectBase + i));
    await sleep(Math.max(0, LATENCY_SPACING_MS - (Date.now() - started)));
  }
  const byId = new Map(posted.flatMap((p) => (p.id ? [[p.id, p] as const] : [])));
  const projects = Array.from({ length: LATENCY_JOBS }, (_, i) => projectBase + i);
  let jobs: Job[] = [];
  await until(30_000, 250, async () => {
    jobs = (await listJobs(s, projects)).filter((j) => byId.has(j.id));
    return jobs.length === byId.size && jobs.every((j) => j.status === "complete");
  });
  const runs = await runRequests(s, endpoint);
  const firstRun = new Map<string, number>();
  for (const r of runs) {
    const id = r.body?.input?.export_job_id;
    if (id && byId.has(id) && !firstRun.has(id)) firstRun.set(id, Date.parse(r.receivedAt));
  }
  const latencies = [...byId].flatMap(([id, p]) => {
    const at = firstRun.get(id);
    return at === undefined ? [] : [at - p.answeredAt];
  });
  const toComplete = jobs.flatMap((j) => {
    const p = byId.get(j.id);
    return p && j.completed_at ? [sqlMs(j.completed_at) - p.answeredAt] : [];
  });
  const emu = (await emulatorJobs(s, endpoint)).filter((j) =>
    byId.has(j.input.export_job_id ?? ""),
  );
  const own = batches.slice(batchesBefore);
  return {
    jobs: byId.size,
    complete: jobs.filter((j) => j.status === "complete").length,
    latencies,
    toComplete,
    webhooksPerJob: emu.reduce((n, j) => n + j.webhookDeliveries.length, 0) / emu.length,
    progressPerJob: emu.reduce((n, j) => n + j.progressCalls.length, 0) / emu.length,
    runsPerJob: runs.filter((r) => byId.has(r.body?.input?.export_job_id ?? "")).length / byId.size,
    messagesPerJob: own.reduce((n, b) => n + b.size, 0) / byId.size,
    batchesPerJob: own.length / byId.size,
  };
}

export type DispatchLatency = Awaited<ReturnType<typeof dispatchLatency>>;

/** On phase A's endpoint (paced, warmed up by the entry point). */
export async function measureDispatchLatency(run: Run): Promise<DispatchLatency> {
  load("dispatch_latency");
  note("dispatch latency… ");
  const lat = await dispatchLatency(run.s, ENDPOINTS.paced, 700_100);
  console.log(`p50 ${median(lat.latencies)} ms`);
  return lat;
}

/** The row of figure 4. */
export function reportDispatchLatency(l: DispatchLatency): void {
  figure("dispatch_latency", "4. POST answered → RunPod /run received, p50 / p99", {
    value: `${median(l.latencies)} / ${quantile(l.latencies, 0.99)} ms`,
    unit: "",
    target: "(max_batch_timeout 1000 ms)",
    pass: null,
    note:
      `${l.jobs} jobs POSTed ${LATENCY_SPACING_MS} ms apart by one client; a lone message waits for the ` +
      `queue's max_batch_timeout; POST answered → complete (400 ms run) p50 ${median(l.toComplete)} ms`,
  });
}
