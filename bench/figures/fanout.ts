// Figure 2, one invocation's fan-out (phase C): one batch of 100 messages against a /run that
// answers after 100 ms, with SUBMIT_CONCURRENCY=1 and then 6, each on a consumer of its own whose
// config (a copy of wrangler.toml) makes the batch 100 messages long.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { LocalStack } from "../../scripts/local-stack.ts";
import { root, sleep } from "../support.ts";
import { figure } from "./results.ts";
import {
  batches,
  CLIENTS,
  countBy,
  DEPLOYED_SUBMIT_CONCURRENCY,
  ENDPOINTS,
  elapsed,
  emulatorConfig,
  LONG_RUN_MS,
  load,
  note,
  postMany,
  producer,
  type Run,
  runRequests,
  swapConsumer,
  tmp,
  until,
  warmUp,
} from "./stack.ts";

const FANOUT_JOBS = 100;
const FANOUT_RUN_DELAY_MS = 100;

/** wrangler.toml with the export-jobs consumer's batch changed and every path absolute. */
function fanoutConfig(maxBatchSize: number, maxBatchTimeoutS: number): string {
  const text = readFileSync(path.join(root, "wrangler.toml"), "utf8");
  const consumerBlock =
    /(\[\[env\.consumer\.queues\.consumers\]\]\s*\nqueue = "export-jobs"\s*\n)max_batch_size = \d+\s*\nmax_batch_timeout = \d+/;
  if (!consumerBlock.test(text)) {
    throw new Error("wrangler.toml: the export-jobs consumer block is not as the bench expects");
  }
  const abs = (p: string) => JSON.stringify(path.join(root, p));
  const out = text
    .replace(
      consumerBlock,
      `$1max_batch_size = ${maxBatchSize}\nmax_batch_timeout = ${maxBatchTimeoutS}`,
    )
    .replace(/^(main\s*=\s*)"([^"]+)"/gm, (_, k: string, p: string) => `${k}${abs(p)}`)
    .replace(/^(directory\s*=\s*)"([^"]+)"/gm, (_, k: string, p: string) => `${k}${abs(p)}`)
    .replace(/^(migrations_dir\s*=\s*)"([^"]+)"/gm, (_, k: string, p: string) => `${k}${abs(p)}`)
    .replace(/^("module"\s*=\s*)"([^"]+)"/gm, (_, k: string, p: string) => `${k}${abs(p)}`);
  const dir = path.join(tmp, "fanout");
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, "wrangler.toml");
  writeFileSync(file, out);
  return file;
}

async function fanout(
  s: LocalStack,
  endpoint: string,
  consumer: string,
  concurrency: number,
  projectBase: number,
) {
  const batchesBefore = batches.length;
  const before = (await runRequests(s, endpoint)).length;
  const { ids, ms } = await postMany(
    producer.url,
    s.settings.API_TOKEN as string,
    FANOUT_JOBS,
    CLIENTS,
    (i) => projectBase + (i % 50),
  );
  const expectMs = (FANOUT_JOBS * FANOUT_RUN_DELAY_MS * 2) / concurrency + 10_000;
  await until(
    expectMs,
    200,
    async () => (await runRequests(s, endpoint)).length - before >= ids.size,
  );
  await sleep(FANOUT_RUN_DELAY_MS + 300); // the last answers, and the batch's QUEUE line
  await until(10_000, 100, async () =>
    batches.slice(batchesBefore).some((b) => b.consumer === consumer),
  );
  const records = (await runRequests(s, endpoint)).filter((r) =>
    ids.has(r.body?.input?.export_job_id ?? ""),
  );
  // Answers other than 200 (a 429) come at once: only accepted runs took runDelayMs.
  const runs = records
    .filter((r) => r.responseStatus === 200)
    .map((r) => Date.parse(r.receivedAt))
    .sort((a, b) => a - b);
  const own = batches.slice(batchesBefore).filter((b) => b.consumer === consumer);
  const largest = own.reduce((a, b) => (b.size > (a?.size ?? 0) ? b : a), own[0]);
  // Each answer takes runDelayMs: runs received less than that apart were in flight together.
  const concurrent = Math.max(
    0,
    ...runs.map((t) => runs.filter((u) => u <= t && u > t - FANOUT_RUN_DELAY_MS).length),
  );
  // The batch's own times: its start (its QUEUE line, less its ms) to the first /run, the /run
  // span, and from the last answer to its end.
  const end = largest?.at ?? Number.NaN;
  const start = end - (largest?.ms ?? Number.NaN);
  const lastAnswer = (runs.at(-1) ?? Number.NaN) + FANOUT_RUN_DELAY_MS;
  return {
    before_first_run_ms: (runs[0] ?? Number.NaN) - start,
    after_last_answer_ms: end - lastAnswer,
    run_answers: countBy(records.map((r) => r.responseStatus ?? "none")),
    max_concurrent_runs: concurrent,
    run_offsets_ms: runs.map((t) => t - (runs[0] ?? t)),
    post_ms: ms,
    posted: ids.size,
    batches: own.map((b) => ({ size: b.size, acked: b.acked, ms: b.ms })),
    batch_size: largest?.size ?? 0,
    batch_ms: largest?.ms ?? Number.NaN,
    run_span_ms: (runs.at(-1) ?? Number.NaN) - (runs[0] ?? Number.NaN) + FANOUT_RUN_DELAY_MS,
  };
}

export type FanoutBatch = Awaited<ReturnType<typeof fanout>>;
/** By SUBMIT_CONCURRENCY: 1 and 6. */
export type Fanout = Record<number, FanoutBatch>;

/** Phase C: one batch of 100 messages, SUBMIT_CONCURRENCY 1 then 6. */
export async function measureFanout(run: Run): Promise<Fanout> {
  const { s, seeder } = run;
  const fanoutToml = fanoutConfig(FANOUT_JOBS, 3);
  const fan: Fanout = {};
  for (const [slot, c, endpoint] of [
    [1, 1, ENDPOINTS.fanout1],
    [2, DEPLOYED_SUBMIT_CONCURRENCY, ENDPOINTS.fanout6],
  ] as const) {
    seeder.release();
    const name = `consumer-fanout-c${c}`;
    run.consumer = await swapConsumer(
      s,
      run.consumer,
      name,
      slot,
      {
        RUNPOD_ENDPOINT_ID: endpoint,
        RUNPOD_RUNS_PER_10S: "100000",
        RUNPOD_MAX_IN_FLIGHT: "2000",
        SUBMIT_CONCURRENCY: String(c),
      },
      fanoutToml,
    );
    await emulatorConfig(s, endpoint, {
      runDelayMs: FANOUT_RUN_DELAY_MS,
      runMs: LONG_RUN_MS,
      runRateLimitPerS: 0,
    });
    await warmUp(s, endpoint, 730_000 + c * 100);
    await seeder.hold();
    load(`fanout_c${c}`);
    note(`fan-out, SUBMIT_CONCURRENCY=${c}: `);
    fan[c] = await fanout(s, endpoint, name, c, 730_000 + c * 100);
    console.log(`batch of ${fan[c]?.batch_size} in ${fan[c]?.batch_ms} ms (${elapsed()})`);
  }
  return fan;
}

/** The rows of figure 2. */
export function reportFanout(fan: Fanout): void {
  const c1 = fan[1];
  const c6 = fan[DEPLOYED_SUBMIT_CONCURRENCY];
  const rounds = Math.ceil(FANOUT_JOBS / DEPLOYED_SUBMIT_CONCURRENCY);
  const floor = rounds * FANOUT_RUN_DELAY_MS;
  const c6Ms = c6?.batch_ms ?? Number.NaN;
  // What one invocation sustains, from the figure: 6 submissions per measured round.
  const roundMs = (c6?.run_span_ms ?? Number.NaN) / rounds;
  const perInvocation = (DEPLOYED_SUBMIT_CONCURRENCY * 1000) / roundMs;
  const defaultPace = 90; // RUNPOD_RUNS_PER_10S = 900
  const concurrency = Math.ceil(defaultPace / perInvocation) + 1;
  const recommendation =
    `One invocation sustains ${perInvocation.toFixed(0)} submissions/s at this /run latency ` +
    `(${roundMs.toFixed(0)} ms per round of ${DEPLOYED_SUBMIT_CONCURRENCY}); the default pace (900 per 10 s = ${defaultPace}/s) ` +
    `needs ${Math.ceil(defaultPace / perInvocation)} at once, so max_concurrency ≥ ${concurrency}; ` +
    `a batch of B waits ≈ ceil(B/6) rounds for its last job, so max_batch_size 30 (5 rounds, ≈ ${(roundMs * 5).toFixed(0)} ms) ` +
    "rather than 100 keeps the dispatch latency of a batch's last job under a second at the same throughput";
  figure(
    "fanout_batch_c6_vs_floor",
    `2. one batch of ${FANOUT_JOBS}, SUBMIT_CONCURRENCY=6 ÷ floor`,
    {
      value: c6Ms / floor,
      unit: "× floor",
      target: `≤ 1.25 × ${floor} ms`,
      pass: c6Ms / floor <= 1.25 && c6?.batch_size === FANOUT_JOBS,
      note:
        `batch wall time (miniflare's QUEUE line) ${c6Ms} ms for ${c6?.batch_size} messages ` +
        `(batches seen ${JSON.stringify(c6?.batches)}), /run answers ${JSON.stringify(c6?.run_answers)}: ` +
        `≈${c6?.before_first_run_ms} ms before the first /run (pending read, dispatcher, claim and its ` +
        `live publications), ${c6?.run_span_ms} ms from the first /run to the last answer ` +
        `(${roundMs.toFixed(0)} ms per round of 6 against ${FANOUT_RUN_DELAY_MS} ms), ≈${c6?.after_last_answer_ms} ms ` +
        "after it (the last record, the gate's report); " +
        `at most ${c6?.max_concurrent_runs} /run in flight at once; SUBMIT_CONCURRENCY=1: ${c1?.batch_ms} ms ` +
        `(${c1?.batch_size} messages, floor ${FANOUT_JOBS * FANOUT_RUN_DELAY_MS} ms, at most ${c1?.max_concurrent_runs} in flight); speed-up ` +
        `${((c1?.batch_ms ?? Number.NaN) / c6Ms).toFixed(2)}× (ceiling ${(FANOUT_JOBS / rounds).toFixed(2)}×). ` +
        `Measured with a copy of wrangler.toml whose export-jobs consumer has max_batch_size = ${FANOUT_JOBS} ` +
        `(max_batch_timeout 3 s), /run answering after ${FANOUT_RUN_DELAY_MS} ms. ${recommendation}.`,
    },
  );
  figure("fanout_batch_c1", `2. one batch of ${FANOUT_JOBS}, SUBMIT_CONCURRENCY=1`, {
    value: c1?.batch_ms ?? null,
    unit: "ms",
    target: `(floor ${FANOUT_JOBS * FANOUT_RUN_DELAY_MS} ms)`,
    pass: null,
    note: `first /run to last answer ${c1?.run_span_ms} ms`,
  });
  figure("fanout_max_concurrent", "2. most /run in flight at once, SUBMIT_CONCURRENCY=6", {
    value: c6?.max_concurrent_runs ?? null,
    unit: "",
    target: `≤ ${DEPLOYED_SUBMIT_CONCURRENCY}`,
    pass: (c6?.max_concurrent_runs ?? 0) <= DEPLOYED_SUBMIT_CONCURRENCY,
    note:
      "from the emulator's receivedAt: runs received less than runDelayMs apart were in flight together " +
      "(a Worker invocation holds at most 6 connections waiting for headers)",
  });
}
