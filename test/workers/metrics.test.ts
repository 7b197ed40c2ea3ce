// GET /metrics: the Prometheus text exposition, read with a Prometheus-format parser from npm
// (parse-prometheus-text-format), never with a regex of our own, and checked against GET /stats.
import parsePrometheusTextFormat, { type PrometheusFamily } from "parse-prometheus-text-format";
import { describe, expect, it } from "vitest";
import { renderMetrics } from "../../producer/prometheus.ts";
import type { DispatchStatus } from "../../shared/dispatcher.ts";
import {
  ADMIN_TOKEN,
  callbackPath,
  postJson,
  processingJob,
  producerFetch,
  putOutput,
} from "./helpers.ts";

const FAMILIES = [
  "reel_exports_jobs",
  "reel_exports_waiting_jobs",
  "reel_exports_in_flight_runs",
  "reel_exports_max_in_flight",
  "reel_exports_oldest_pending_age_seconds",
  "reel_exports_dispatch_state",
  "reel_exports_fleet_workers",
  "reel_exports_gpu_seconds_total",
  "reel_exports_dead_letters",
  "reel_exports_notify_failures_total",
];

async function scrape(): Promise<Map<string, PrometheusFamily>> {
  const res = await producerFetch("/metrics", { token: ADMIN_TOKEN });
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
  const families = parsePrometheusTextFormat(await res.text());
  return new Map(families.map((family) => [family.name, family]));
}

function value(
  families: Map<string, PrometheusFamily>,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const sample = families
    .get(name)
    ?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
  return sample === undefined ? undefined : Number(sample.value);
}

interface StatsAnswer {
  jobs: Record<string, number>;
  oldest_pending_age_s: number | null;
  dead_letters: { total: number; not_replayed: number };
  dispatch_by_endpoint: Record<string, DispatchStatus | null>;
}

describe("GET /metrics", () => {
  it("has the contract's families, typed and described, and agrees with GET /stats", async () => {
    // Something in every family: a pending job, a processing one (a slot in flight).
    await processingJob();
    const families = await scrape();
    const statsRes = await producerFetch("/stats", { token: ADMIN_TOKEN });
    const stats = (await statsRes.json()) as StatsAnswer;

    for (const name of FAMILIES) {
      const family = families.get(name);
      expect({ name, present: family !== undefined }).toEqual({ name, present: true });
      expect(family?.help.length).toBeGreaterThan(0);
      expect(family?.type).toBe(name.endsWith("_total") ? "COUNTER" : "GAUGE");
    }
    for (const status of ["pending", "processing", "complete", "error"]) {
      expect({ status, n: value(families, "reel_exports_jobs", { status }) }).toEqual({
        status,
        n: stats.jobs[status],
      });
    }
    expect(value(families, "reel_exports_dead_letters")).toBe(stats.dead_letters.not_replayed);
    if (stats.oldest_pending_age_s !== null) {
      expect(value(families, "reel_exports_oldest_pending_age_seconds")).toBeGreaterThanOrEqual(0);
    }
    for (const [id, gate] of Object.entries(stats.dispatch_by_endpoint)) {
      if (!gate) continue;
      const labels = { endpoint: id };
      expect(value(families, "reel_exports_in_flight_runs", labels)).toBe(gate.in_flight);
      expect(value(families, "reel_exports_max_in_flight", labels)).toBe(gate.max_in_flight);
      for (const state of ["running", "paused", "probing"]) {
        expect(value(families, "reel_exports_dispatch_state", { ...labels, state })).toBe(
          gate.state === state ? 1 : 0,
        );
      }
    }
    for (const lane of ["interactive", "standard", "batch"] as const) {
      const waiting = Object.values(stats.dispatch_by_endpoint).reduce(
        (sum, gate) => sum + (gate?.waiting_by_lane[lane] ?? 0),
        0,
      );
      expect(value(families, "reel_exports_waiting_jobs", { lane })).toBe(waiting);
    }
  });

  it("counts GPU seconds as runs end (the trigger-kept total), in seconds", async () => {
    const before = value(await scrape(), "reel_exports_gpu_seconds_total") ?? Number.NaN;
    const job = await processingJob();
    await putOutput(job);
    const res = await postJson(
      await callbackPath("webhook", job.id, job.attempt),
      { id: job.runpod_job_id, status: "COMPLETED", executionTime: 2500, delayTime: 10 },
      { token: null },
    );
    expect(res.status).toBe(200);
    const after = value(await scrape(), "reel_exports_gpu_seconds_total") ?? Number.NaN;
    expect(after - before).toBeCloseTo(2.5, 6);
  });

  it("escapes label values as the format says, and the parser reads them back", () => {
    // Endpoint ids are plain today (RUNPOD_ENDPOINTS refuses others); the format's escapes
    // still hold for any label value.
    const endpoint = 'ep "quoted" \\ back\nslash';
    const gate = {
      state: "running",
      in_flight: 3,
      max_in_flight: 7,
      fleet: null,
      waiting_by_lane: { interactive: 0, standard: 0, batch: 0 },
    } as unknown as DispatchStatus;
    const text = renderMetrics(
      {
        jobs: { pending: 0, processing: 0, complete: 0, error: 0 },
        oldest_pending_created_at: null,
        oldest_pending_age_s: null,
        processing_without_run: 0,
        dead_letters: { total: 0, not_replayed: 0 },
        archived: 0,
      },
      { gpu_ms: 1500, notify_failures: 0 },
      { [endpoint]: gate },
    );
    const families = new Map(
      parsePrometheusTextFormat(text).map((family) => [family.name, family]),
    );
    expect(value(families, "reel_exports_in_flight_runs", { endpoint })).toBe(3);
    expect(value(families, "reel_exports_max_in_flight", { endpoint })).toBe(7);
    expect(value(families, "reel_exports_gpu_seconds_total")).toBe(1.5);
  });
});
