// Cost per million exports on list prices (bench/prices.json), from counts the bench measured
// (per job: requests, queue messages, D1 rows, RunPod calls) and a few stated assumptions (CPU
// time, Durable Object active time, output size), next to the GPU's own cost.
import { readFileSync } from "node:fs";
import path from "node:path";
import { root } from "./support.ts";

export interface Prices {
  as_of: string;
  source: string;
  cloudflare: {
    workers_requests_per_million: number;
    workers_cpu_ms_per_million: number;
    queues_operations_per_million: number;
    queues_operations_per_message: number;
    d1_rows_read_per_million: number;
    d1_rows_written_per_million: number;
    durable_objects_requests_per_million: number;
    durable_objects_gb_s_per_million: number;
    durable_objects_memory_gb: number;
    durable_objects_sqlite_rows_read_per_million: number;
    durable_objects_sqlite_rows_written_per_million: number;
    r2_class_a_per_million: number;
    r2_class_b_per_million: number;
    r2_storage_per_gb_month: number;
  };
  runpod: { gpu: string; price_per_s: number };
}

export const readPrices = (): Prices =>
  JSON.parse(readFileSync(path.join(root, "bench/prices.json"), "utf8")) as Prices;

/** Per job, as measured (or, where marked, derived from the code or assumed). */
export interface CostInputs {
  /** Worker invocations: POST /exports, webhook, progress reports, consumer batches (÷ batch). */
  workerRequests: number;
  workerRequestsDetail: string;
  /** Assumed CPU per Worker invocation (ms): not measurable under wrangler dev. */
  cpuMsPerRequest: number;
  queueMessages: number;
  d1RowsRead: number;
  d1RowsWritten: number;
  doRequests: number;
  doRequestsDetail: string;
  /** Assumed active wall time per Durable Object request (s). */
  doActiveSPerRequest: number;
  /** Estimated from shared/fair-queue.ts and shared/dispatcher.ts (not measured). */
  doSqliteRowsWritten: number;
  r2ClassA: number;
  r2ClassB: number;
  /** Output kept this many GB for a month (assumption). */
  outputGbMonth: number;
  gpuSeconds: number;
}

export interface CostLine {
  item: string;
  per_job: number;
  unit: string;
  usd_per_million_exports: number;
  basis: string;
}

export function costPerMillion(p: Prices, x: CostInputs): { lines: CostLine[]; summary: Summary } {
  const cf = p.cloudflare;
  const line = (
    item: string,
    perJob: number,
    unit: string,
    pricePerMillionUnits: number,
    basis: string,
  ): CostLine => ({
    item,
    per_job: Number(perJob.toFixed(4)),
    unit,
    // per job × 1e6 jobs × price per 1e6 units = per job × price
    usd_per_million_exports: Number((perJob * pricePerMillionUnits).toFixed(2)),
    basis,
  });
  const lines: CostLine[] = [
    line(
      "Workers requests",
      x.workerRequests,
      "requests",
      cf.workers_requests_per_million,
      x.workerRequestsDetail,
    ),
    line(
      "Workers CPU",
      x.workerRequests * x.cpuMsPerRequest,
      "CPU-ms",
      cf.workers_cpu_ms_per_million,
      `assumed ${x.cpuMsPerRequest} CPU-ms per invocation (wrangler dev cannot measure CPU)`,
    ),
    line(
      "Queues operations",
      x.queueMessages * cf.queues_operations_per_message,
      "operations",
      cf.queues_operations_per_million,
      `${x.queueMessages.toFixed(2)} messages per job (measured) × ${cf.queues_operations_per_message} (write, read, delete)`,
    ),
    line(
      "D1 rows read",
      x.d1RowsRead,
      "rows",
      cf.d1_rows_read_per_million,
      "meta.rows_read over the job's statements (measured)",
    ),
    line(
      "D1 rows written",
      x.d1RowsWritten,
      "rows",
      cf.d1_rows_written_per_million,
      "meta.rows_written over the job's statements (measured)",
    ),
    line(
      "Durable Objects requests",
      x.doRequests,
      "requests",
      cf.durable_objects_requests_per_million,
      x.doRequestsDetail,
    ),
    line(
      "Durable Objects duration",
      x.doRequests * x.doActiveSPerRequest * cf.durable_objects_memory_gb,
      "GB-s",
      cf.durable_objects_gb_s_per_million,
      `assumed ${x.doActiveSPerRequest * 1000} ms active per request × ${cf.durable_objects_memory_gb} GB (hibernated sockets cost nothing)`,
    ),
    line(
      "Durable Objects SQLite rows written",
      x.doSqliteRowsWritten,
      "rows",
      cf.durable_objects_sqlite_rows_written_per_million,
      "the dispatcher's SQLite (shared/fair-queue.ts): offer ≈ 5 (waiting row + 2 index entries, " +
        "fair_keys row + its partial index), admit ≈ 7 (waiting out, in_flight in, fair_keys), " +
        "free ≈ 2, plus the gate's and config's puts per batch; counted from the code, not measured",
    ),
    line(
      "R2 Class A",
      x.r2ClassA,
      "operations",
      cf.r2_class_a_per_million,
      "the GPU worker's output PUT",
    ),
    line(
      "R2 Class B",
      x.r2ClassB,
      "operations",
      cf.r2_class_b_per_million,
      "producer HEAD of the input, webhook HEAD of the output, GPU GET of the input, one download",
    ),
  ];
  const pipeline = lines.reduce((sum, l) => sum + l.usd_per_million_exports, 0);
  const storage = x.outputGbMonth * cf.r2_storage_per_gb_month * 1e6;
  const gpu = x.gpuSeconds * p.runpod.price_per_s * 1e6;
  return {
    lines,
    summary: {
      pipeline_usd_per_million: Number(pipeline.toFixed(2)),
      r2_storage_usd_per_million_per_month: Number(storage.toFixed(2)),
      gpu_usd_per_million: Number(gpu.toFixed(2)),
      gpu_basis: `${p.runpod.gpu} at $${p.runpod.price_per_s}/s × ${x.gpuSeconds} s per export`,
      pipeline_share_of_pipeline_plus_gpu: Number((pipeline / (pipeline + gpu)).toFixed(5)),
      storage_basis: `${x.outputGbMonth * 1000} MB output kept one month (assumption)`,
    },
  };
}

export interface Summary {
  pipeline_usd_per_million: number;
  r2_storage_usd_per_million_per_month: number;
  gpu_usd_per_million: number;
  gpu_basis: string;
  pipeline_share_of_pipeline_plus_gpu: number;
  storage_basis: string;
}
