// `npm run integration`: the integration's figures, side by side in one run on the local stack.
//
//   1. batch against single creates: 100 exports in one POST /exports/batch against 100 POST
//      /exports one after the other (the frontend's "export every clip"), ROUNDS rounds, the order
//      alternating; jobs/s of each and their ratio;
//   2. notification latency: from each job's completion (its `completed_at` in D1) to its
//      webhook's arrival at the receiver (the emulator's, answering 200): p50 and p99 over every
//      job of (1), delivered through the outbox, the export-notifications queue and the consumer.
// (The /metrics rows read are figure 6 of `npm run bench`: `plans_metrics_rows_read` at 1M jobs.)
// Prints a table and writes bench/integration.json.
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { type LocalStack, startLocalStack } from "../scripts/local-stack.ts";
import { machine, median, quantile, round, sleep, sqlMs, writeResults } from "./support.ts";

const ROUNDS = Number(process.env.INTEGRATION_ROUNDS ?? 3);
const PER_ROUND = 100;
const RECEIVER = "integration-bench";
const tmp = mkdtempSync(path.join(os.tmpdir(), "reel-integration-"));
const logs: string[] = [];
let stack: LocalStack | null = null;

const body = (projectId: number, n: number) => ({
  project_id: projectId,
  user_id: projectId,
  type: "overlay",
  input_video_key: "uploads/demo/sample.mp4",
  // Distinct params: identical exports would be reused instead of run.
  params: { highlight_regions: [{ start_time: 1, end_time: 2 }], n },
});

async function post(s: LocalStack, route: string, payload: unknown): Promise<unknown> {
  const res = await fetch(`${s.producerUrl}${route}`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${s.settings.API_TOKEN}`,
      "content-type": "application/json",
    },
    body: JSON.stringify(payload),
  });
  if (res.status !== 202)
    throw new Error(`POST ${route} answered ${res.status}: ${await res.text()}`);
  return res.json();
}

/** 100 creates one after the other: the seconds they took, and the job ids. */
async function singles(s: LocalStack, projectId: number): Promise<[number, string[]]> {
  const ids: string[] = [];
  const started = performance.now();
  for (let i = 0; i < PER_ROUND; i++) {
    const answer = (await post(s, "/exports", body(projectId, i))) as { job: { id: string } };
    ids.push(answer.job.id);
  }
  return [(performance.now() - started) / 1000, ids];
}

/** The same 100 in one batch. */
async function batch(s: LocalStack, projectId: number): Promise<[number, string[]]> {
  const started = performance.now();
  const answer = (await post(s, "/exports/batch", {
    exports: Array.from({ length: PER_ROUND }, (_, i) => body(projectId, i)),
  })) as { jobs: { id: string }[] };
  return [(performance.now() - started) / 1000, answer.jobs.map((job) => job.id)];
}

interface Delivery {
  headers: Record<string, string>;
  body: string;
  receivedAt: string;
  status: number | null;
}

async function main() {
  console.log(`machine: ${JSON.stringify(machine())}`);
  const persistTo = path.join(tmp, "state");
  stack = await startLocalStack({
    producerPort: 37787,
    consumerPort: 37788,
    emulatorPort: 37790,
    inspectorPorts: [37229, 37230],
    r2WriterInspectorPort: 37231,
    exampleFrontendPort: null,
    persistTo,
    settings: {
      RUNPOD_ENDPOINT_ID: "integration-endpoint",
      RUNPOD_MAX_IN_FLIGHT: "200",
      NOTIFY_URL: "http://127.0.0.1:37790/__receiver/integration-bench",
    },
    emulatorEnv: {
      RUNPOD_EMULATOR_RUN_MS: "500",
      RUNPOD_EMULATOR_QUEUE_MS: "10",
      RUNPOD_EMULATOR_PROGRESS_STEPS: "",
      RUNPOD_EMULATOR_LOG: "0",
    },
    onOutput: (who, line) => {
      logs.push(`[${who}] ${line}`);
      if (logs.length > 500) logs.shift();
    },
  });
  const s = stack;
  // A first create switches the outbox on and warms both Workers up; not measured.
  await post(s, "/exports", body(1, -1));

  const single: number[] = [];
  const batched: number[] = [];
  const created: string[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 === 0 ? ["single", "batch"] : ["batch", "single"];
    for (const kind of order) {
      const projectId = 100 + r * 2 + (kind === "batch" ? 1 : 0);
      const [seconds, ids] =
        kind === "batch" ? await batch(s, projectId) : await singles(s, projectId);
      (kind === "batch" ? batched : single).push(PER_ROUND / seconds);
      created.push(...ids);
      console.log(`round ${r + 1} ${kind}: ${round(PER_ROUND / seconds, 1)} jobs/s`);
    }
  }

  // Every job completes at RunPod (the emulator), and its webhook reaches the receiver.
  const wanted = new Set(created);
  const deadline = Date.now() + 300_000;
  let deliveries: Delivery[] = [];
  for (;;) {
    const res = await fetch(`${s.emulatorUrl}/__receiver/${RECEIVER}/requests`);
    deliveries = ((await res.json()) as { requests: Delivery[] }).requests;
    const arrived = new Set(
      deliveries.map((d) => (JSON.parse(d.body) as { data: { job: { id: string } } }).data.job.id),
    );
    if ([...wanted].every((id) => arrived.has(id))) break;
    if (Date.now() > deadline) {
      throw new Error(`${[...wanted].filter((id) => !arrived.has(id)).length} webhooks missing`);
    }
    await sleep(1000);
  }
  const latencies: number[] = [];
  for (const delivery of deliveries) {
    const { data, type } = JSON.parse(delivery.body) as {
      type: string;
      data: { job: { id: string; completed_at: string | null } };
    };
    if (!wanted.has(data.job.id) || type !== "export.completed" || !data.job.completed_at) continue;
    latencies.push(Date.parse(delivery.receivedAt) - sqlMs(data.job.completed_at));
  }
  const results = {
    batch_jobs_per_s: { value: round(median(batched), 1), unit: "jobs/s", samples: batched },
    single_jobs_per_s: { value: round(median(single), 1), unit: "jobs/s", samples: single },
    batch_vs_single: {
      value: round(median(batched) / median(single), 1),
      unit: "×",
      note: `${PER_ROUND} exports in one POST /exports/batch against ${PER_ROUND} POST /exports one after the other, ${ROUNDS} rounds, medians`,
    },
    notify_latency_p50_ms: { value: round(quantile(latencies, 0.5), 0), unit: "ms" },
    notify_latency_p99_ms: {
      value: round(quantile(latencies, 0.99), 0),
      unit: "ms",
      note: `${latencies.length} export.completed webhooks: completed_at in D1 → arrival at the receiver`,
    },
    machine: machine(),
    generated_at: new Date().toISOString(),
  };
  console.table(
    Object.fromEntries(
      Object.entries(results)
        .filter(([, v]) => typeof v === "object" && v !== null && "value" in v)
        .map(([k, v]) => [k, (v as { value: number }).value]),
    ),
  );
  writeResults("bench/integration.json", results);
}

try {
  await main();
} catch (error) {
  console.error(logs.slice(-40).join("\n"));
  console.error(error);
  process.exitCode = 1;
} finally {
  await (stack as LocalStack | null)?.stop();
  rmSync(tmp, { recursive: true, force: true });
}
