// GET /metrics' body: the Prometheus text exposition format (version 0.0.4), built from what
// GET /stats reads (the trigger-kept counts, the dispatchers' status) and the running totals of
// migration 0015. Gauges are the state now; `_total` families are counters that only grow.
import type { DispatchStatus } from "../shared/dispatcher.ts";
import type { MetricTotals, StatsWithArchive } from "../shared/sql/stats.ts";

export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Record<string, string>;
interface Family {
  name: string;
  help: string;
  type: "gauge" | "counter";
  samples: { labels?: Labels; value: number }[];
}

/** A label value as the format escapes it: backslash, double quote and line feed. */
function labelValue(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

function sample(name: string, labels: Labels | undefined, value: number): string {
  const pairs = Object.entries(labels ?? {}).map(([k, v]) => `${k}="${labelValue(v)}"`);
  const number = Number.isFinite(value) ? String(value) : value > 0 ? "+Inf" : "NaN";
  return `${name}${pairs.length ? `{${pairs.join(",")}}` : ""} ${number}`;
}

const GATE_STATES: DispatchStatus["state"][] = ["running", "paused", "probing"];
const FLEET_STATES = ["ready", "running", "initializing", "throttled"] as const;
const LANES = ["interactive", "standard", "batch"] as const;

/** The exposition of the pipeline's state: one family per metric, HELP and TYPE first. */
export function renderMetrics(
  stats: StatsWithArchive,
  totals: MetricTotals,
  gates: Record<string, DispatchStatus | null>,
): string {
  const endpoints = Object.entries(gates).filter(
    (entry): entry is [string, DispatchStatus] => entry[1] !== null,
  );
  const families: Family[] = [
    {
      name: "reel_exports_jobs",
      help: "Export jobs in D1 by status.",
      type: "gauge",
      samples: Object.entries(stats.jobs).map(([status, value]) => ({ labels: { status }, value })),
    },
    {
      name: "reel_exports_waiting_jobs",
      help: "Jobs waiting in the dispatchers for a slot, by lane (all endpoints).",
      type: "gauge",
      samples: LANES.map((lane) => ({
        labels: { lane },
        value: endpoints.reduce((sum, [, gate]) => sum + (gate.waiting_by_lane[lane] ?? 0), 0),
      })),
    },
    {
      name: "reel_exports_in_flight_runs",
      help: "Runs submitted to RunPod and not yet ended, by endpoint.",
      type: "gauge",
      samples: endpoints.map(([endpoint, gate]) => ({
        labels: { endpoint },
        value: gate.in_flight,
      })),
    },
    {
      name: "reel_exports_max_in_flight",
      help: "The dispatcher's cap of runs in flight (auto: it follows the fleet), by endpoint.",
      type: "gauge",
      samples: endpoints.map(([endpoint, gate]) => ({
        labels: { endpoint },
        value: gate.max_in_flight,
      })),
    },
    {
      name: "reel_exports_oldest_pending_age_seconds",
      help: "Age of the oldest pending job (0 when none is pending).",
      type: "gauge",
      samples: [{ value: stats.oldest_pending_age_s ?? 0 }],
    },
    {
      name: "reel_exports_dispatch_state",
      help: "The dispatch gate's state by endpoint: 1 for the current state (paused = breaker open).",
      type: "gauge",
      samples: endpoints.flatMap(([endpoint, gate]) =>
        GATE_STATES.map((state) => ({
          labels: { endpoint, state },
          value: gate.state === state ? 1 : 0,
        })),
      ),
    },
    {
      name: "reel_exports_fleet_workers",
      help: "The endpoint's workers by state, as RunPod's /health last said.",
      type: "gauge",
      samples: endpoints.flatMap(([endpoint, gate]) =>
        gate.fleet
          ? FLEET_STATES.map((state) => ({
              labels: { endpoint, state },
              value: gate.fleet?.[state] ?? 0,
            }))
          : [],
      ),
    },
    {
      name: "reel_exports_gpu_seconds_total",
      help: "GPU execution seconds of every run counted so far (RunPod's executionTime).",
      type: "counter",
      samples: [{ value: totals.gpu_ms / 1000 }],
    },
    {
      name: "reel_exports_dead_letters",
      help: "Dead letters not replayed.",
      type: "gauge",
      samples: [{ value: stats.dead_letters.not_replayed }],
    },
    {
      name: "reel_exports_notify_failures_total",
      help: "Outbound webhook deliveries that failed for good (after 24 h of retries).",
      type: "counter",
      samples: [{ value: totals.notify_failures }],
    },
    {
      name: "reel_exports_archived_jobs_total",
      help: "Finished jobs archived to R2 and removed from D1.",
      type: "counter",
      samples: [{ value: stats.archived }],
    },
  ];
  const lines: string[] = [];
  for (const family of families) {
    lines.push(`# HELP ${family.name} ${family.help}`, `# TYPE ${family.name} ${family.type}`);
    for (const each of family.samples) lines.push(sample(family.name, each.labels, each.value));
  }
  return `${lines.join("\n")}\n`;
}
