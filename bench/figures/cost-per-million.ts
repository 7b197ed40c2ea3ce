// Figure 8, cost per million exports on list prices (../prices.json, ../cost.ts): the per-job
// counts measured by figure 4, the D1 rows of figure 5, and stated assumptions where the local
// stack cannot measure.
import { LIVE_SHARDS } from "../../shared/live-keys.ts";
import { type CostInputs, costPerMillion, readPrices } from "../cost.ts";
import type { LifeRows } from "../d1-figures.ts";
import type { DispatchLatency } from "./dispatch-latency.ts";
import { figure, results } from "./results.ts";

/** `cost_per_million_exports`, then the rows of figure 8. */
export function reportCost(l: DispatchLatency, lives: LifeRows[]): void {
  const prices = readPrices();
  const batch = Math.max(1, l.messagesPerJob / Math.max(1e-9, l.batchesPerJob));
  const progress = l.progressPerJob;
  const happy = lives[0] as LifeRows;
  // D1: the happy path measured with 3 progress reports; others cost 3 rows each (measured).
  const progressRow = happy.steps.find((st) => st.step.startsWith("progress"));
  const rowsWritten = happy.rows_written + (progress - 3) * (progressRow?.rows_written ?? 3);
  const rowsRead = happy.rows_read + (progress - 3) * (progressRow?.rows_read ?? 2);
  // Live status with nobody listening (test/workers/live-fanout.test.ts counts it): one call to
  // the project's shard per change, and a claimed batch one call per shard it touches (at most
  // LIVE_SHARDS); a listening hub adds one forward per change it hears. The dispatcher: offerNew
  // at create, dispatch + report per batch, free at the run's end.
  const live = 1 + Math.min(batch, LIVE_SHARDS) / batch + 1 + progress + 1;
  const doRequests = live + 2 / batch + 1 + 1;
  const inputs: CostInputs = {
    workerRequests: 1 + l.webhooksPerJob + progress + l.batchesPerJob,
    workerRequestsDetail: `POST 1 + webhook ${l.webhooksPerJob.toFixed(2)} + progress ${progress.toFixed(2)} + consumer invocations ${l.batchesPerJob.toFixed(2)} per job (measured, dispatch-latency phase)`,
    cpuMsPerRequest: 3,
    queueMessages: l.messagesPerJob,
    d1RowsRead: rowsRead,
    d1RowsWritten: rowsWritten,
    doRequests,
    doRequestsDetail: `${doRequests.toFixed(2)} per job, counted from the code with the measured progress reports: live publication ${live.toFixed(2)} with nobody listening (one call per change to its project's shard: created, submitted, ${progress.toFixed(0)} progress, completed; the claims of a batch of ${batch.toFixed(1)} one call per shard touched), dispatcher offerNew 1 + dispatch + report per batch of ${batch.toFixed(1)} + free 1`,
    doActiveSPerRequest: 0.01,
    doSqliteRowsWritten: 15,
    r2ClassA: 1,
    r2ClassB: 4,
    outputGbMonth: 0.05,
    gpuSeconds: 60,
  };
  const cost = costPerMillion(prices, inputs);
  results.cost_per_million_exports = { prices_as_of: prices.as_of, inputs, ...cost };
  figure("cost_pipeline_per_million", "8. pipeline cost per million exports", {
    value: cost.summary.pipeline_usd_per_million,
    unit: "USD",
    target: "(info)",
    pass: null,
    note:
      `${cost.lines.map((c) => `${c.item} $${c.usd_per_million_exports}`).join(", ")}; ` +
      `R2 storage $${cost.summary.r2_storage_usd_per_million_per_month}/month (${cost.summary.storage_basis}); ` +
      `prices of ${prices.as_of} (bench/prices.json)`,
  });
  figure("cost_gpu_per_million", "8. RunPod GPU per million exports", {
    value: cost.summary.gpu_usd_per_million,
    unit: "USD",
    target: "(info)",
    pass: null,
    note: `${cost.summary.gpu_basis}; the pipeline is ${(cost.summary.pipeline_share_of_pipeline_plus_gpu * 100).toFixed(2)} % of pipeline + GPU`,
  });
}
