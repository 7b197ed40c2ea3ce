// Figure 6, plans at 1M rows: every statement of shared/sql/ planned and timed on a million
// seeded jobs (plansAt1M in ../d1-figures.ts, on the bench Worker's PLANS database).
import { STATS_SQL } from "../../shared/sql/stats.ts";
import { type BenchWorker, plansAt1M, SEED_JOBS, type Seeder } from "../d1-figures.ts";
import { median, round } from "../support.ts";
import { figure, results } from "./results.ts";
import { elapsed, load, note } from "./stack.ts";

export type Plans = Awaited<ReturnType<typeof plansAt1M>>;

/** Once the seeding is done and the stack stopped: the plans alone on the machine. */
export async function measurePlans(worker: BenchWorker): Promise<Plans> {
  load("plans");
  note("plans at 1M rows… ");
  const plans = await plansAt1M(worker);
  console.log(`${plans.plans.length} statements (${elapsed()})`);
  return plans;
}

/** The rows of figure 6, then `plans_detail` and `seeding`. */
export function reportPlans(measured: Plans, seeded: Awaited<Seeder["done"]>): void {
  const all = measured.plans;
  const plans = all.filter((pl) => !pl.statement.includes("["));
  const rare = all.filter((pl) => pl.statement.includes("["));
  const scanning = all.filter((pl) => pl.scans.length > 0);
  const failed = all.filter((pl) => pl.error);
  const medians = plans.filter((pl) => !pl.error).map((pl) => pl.median_ms);
  const slowest = [...plans].sort((a, b) => (b.median_ms || 0) - (a.median_ms || 0)).slice(0, 3);
  figure("plans_no_scan", `6. statements scanning a big table at ${SEED_JOBS / 1e6}M jobs`, {
    value: scanning.length,
    unit: `of ${all.length}`,
    target: "0",
    pass: scanning.length === 0 && failed.length === 0,
    note:
      (scanning.map((pl) => `${pl.statement}: ${pl.plan.join(" | ")}`).join("; ") || "none") +
      (failed.length
        ? `; failed: ${failed.map((pl) => `${pl.statement} (${pl.error})`).join("; ")}`
        : "") +
      (measured.missingBinds.length
        ? `; parameters guessed for ${measured.missingBinds.join(", ")}`
        : ""),
  });
  figure("plans_median_ms", "6. median time per statement at 1M (worst)", {
    value: Math.max(...medians),
    unit: "ms",
    target: "< 5 ms each",
    pass: medians.every((ms) => ms < 5),
    note:
      `${plans.length} statements of shared/sql/ with sample parameters after the query-plans test; ` +
      `median of the statements' medians ${median(medians)} ms; slowest ${slowest
        .map((pl) => `${pl.statement} ${pl.median_ms} ms (${pl.rows_read} rows read)`)
        .join(
          ", ",
        )}; each run ${plans[0]?.runs ?? 0} times through the bench Worker's D1 binding ` +
      "(ms resolution: workerd's clock moves on I/O only); statements that change many rows per run: " +
      (plans
        .filter((pl) => pl.rows_written > 50)
        .map((pl) => `${pl.statement} ${pl.rows_written} rows written, ${pl.median_ms} ms`)
        .join(", ") || "none"),
  });
  for (const pl of rare) {
    figure(`plans_${pl.statement.replace(/\W+/g, "_")}`, `6. ${pl.statement} at 1M (rare status)`, {
      value: pl.median_ms,
      unit: "ms",
      target: "< 5 ms",
      pass: pl.median_ms < 5,
      note:
        `${pl.rows_read} rows read for a page of a status only 20 of the 1M jobs have (a filter that ` +
        `walks an index newest first until its page is full would read them all); plan ${pl.plan.join(" | ")}`,
    });
  }
  const statsNames = ["counts", "oldestPending", "processingWithoutRun", "deadLetters", "archived"]
    .filter((name) => name in STATS_SQL)
    .map((name) => `stats.${name}`);
  const statsRows = plans
    .filter((pl) => statsNames.includes(pl.statement))
    .reduce((n, pl) => n + pl.rows_read, 0);
  figure("plans_stats_rows_read", "6. GET /stats rows read at 1M jobs", {
    value: statsRows,
    unit: "rows",
    target: "bounded (not ∝ jobs)",
    pass: statsRows < 5000,
    note: `${statsNames.map((n) => `${n} ${plans.find((pl) => pl.statement === n)?.rows_read}`).join(", ")}: the 4 counters, the oldest pending by index, the processing jobs (20 seeded) and the dead letters (500 seeded; the inbox is counted in full)`,
  });
  const metricsNames = [...statsNames, "stats.totals"];
  const metricsRows = plans
    .filter((pl) => metricsNames.includes(pl.statement))
    .reduce((n, pl) => n + pl.rows_read, 0);
  figure("plans_metrics_rows_read", "6. GET /metrics rows read at 1M jobs", {
    value: metricsRows,
    unit: "rows",
    target: "bounded (not ∝ jobs)",
    pass: metricsRows < 5000,
    note:
      "/stats' statements plus the running totals (stats.totals: " +
      `${plans.find((pl) => pl.statement === "stats.totals")?.rows_read} rows); the rest of ` +
      "/metrics comes from the dispatchers' status (Durable Object storage, no D1)",
  });
  const heavy = all.filter((pl) => pl.rows_read > 1000);
  figure("plans_rows_read_over_1000", "6. statements reading > 1,000 rows at 1M", {
    value: heavy.length,
    unit: "",
    target: "(info)",
    pass: null,
    note:
      heavy.map((pl) => `${pl.statement} ${pl.rows_read} rows, ${pl.median_ms} ms`).join("; ") ||
      "none",
  });
  results.plans_detail = all;
  results.seeding = {
    jobs: SEED_JOBS,
    seconds: round(seeded.seconds, 1),
    rows_written: seeded.rows_written,
  };
}
