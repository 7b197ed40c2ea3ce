// RUNPOD_MAX_IN_FLIGHT=auto against the emulator's fleet, over real HTTP: the dispatcher reads
// RunPod's /health, grows the cap while a backlog waits so the autoscaler adds workers, keeps
// RunPod's queue short once the fleet stopped growing, backs off on a 429 and recovers step by
// step, and stretches a lost /run answer's claim deadline while runs queue at RunPod.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { consumerDeps } from "../../consumer/process-jobs.ts";
import { reconcile } from "../../consumer/reconciler.ts";
import {
  autoscalingEndpoint,
  configureEndpoint,
  dispatchConfig,
  emulatorOrigin,
  processingJob,
  readJob,
  uniqueEndpoint,
  waitFor,
} from "./helpers.ts";

const auto = (maxWorkers: number | null) =>
  dispatchConfig({
    maxInFlight: "auto",
    maxWorkers,
    fleetPollS: 0.2,
    runsPer10s: 10_000,
    breakerThreshold: 1_000,
  });

function dispatcherFor(endpoint: string) {
  return env.DISPATCHER.get(env.DISPATCHER.idFromName(endpoint));
}

/** Plays the consumer: every job the dispatcher admitted gets its run at RunPod, once. */
async function submitAdmitted(endpoint: string, submitted: Set<string>): Promise<void> {
  for (const id of await dispatcherFor(endpoint).inFlight()) {
    if (submitted.has(id)) continue;
    submitted.add(id);
    const res = await fetch(`${emulatorOrigin}/v2/${endpoint}/run`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${env.RUNPOD_API_KEY}`,
        "content-type": "application/json",
      },
      body: JSON.stringify({ input: { export_job_id: id } }),
    });
    expect(res.status).toBe(200);
  }
}

const offer = (prefix: string, count: number) =>
  Array.from({ length: count }, (_, i) => ({
    id: `${prefix}-${i}`,
    key: `user:${prefix}`,
    createdAt: `2026-12-01 00:00:${String(i).padStart(2, "0")}`,
  }));

async function health(endpoint: string) {
  const res = await fetch(`${emulatorOrigin}/v2/${endpoint}/health`, {
    headers: { authorization: `Bearer ${env.RUNPOD_API_KEY}` },
  });
  return (await res.json()) as {
    workers: { running: number; initializing: number };
    jobs: { inQueue: number };
  };
}

/** An endpoint that scales from 0 to `max` workers on a short queue delay; runs never end. */
const autoscaling = (name: string, max: number) => autoscalingEndpoint(name, { max });

describe("RUNPOD_MAX_IN_FLIGHT=auto with an autoscaling fleet", () => {
  it("grows the cap while a backlog waits, until the fleet is at its maximum; then only the headroom queues at RunPod", async () => {
    const endpoint = await autoscaling("grow", 6);
    const d = dispatcherFor(endpoint);
    const config = auto(6);
    const first = await d.dispatch(offer("big", 40), config);
    // Before RunPod's /health has answered: a small cap.
    expect(first.admitted.length).toBeLessThanOrEqual(2);
    const submitted = new Set<string>();
    let most = 0;
    const status = await waitFor(async () => {
      await submitAdmitted(endpoint, submitted);
      const now = await d.status();
      most = Math.max(most, now.in_flight);
      return now.fleet?.running === 6 && now.cap_reason.includes("maximum") ? now : undefined;
    }, "the fleet at its maximum");
    expect(status.mode).toBe("auto");
    // 6 workers and 1 run of headroom (refill 1 s × 6 workers / a 30 s run not yet learned).
    expect(status.max_in_flight).toBe(7);
    expect(most).toBeLessThanOrEqual(7);
    expect(status.in_flight).toBe(7);
    // The queue at RunPod is the headroom alone: a job admitted now starts within about a run.
    const fleet = await health(endpoint);
    expect(fleet.workers.running).toBe(6);
    expect(fleet.jobs.inQueue).toBe(1);
    expect(status.waiting).toBe(33);
  });

  it("without a backlog, the cap does not ask the autoscaler for workers", async () => {
    const endpoint = await autoscaling("nobacklog", 6);
    const d = dispatcherFor(endpoint);
    await d.dispatch(offer("few", 2), auto(6));
    const submitted = new Set<string>();
    const status = await waitFor(async () => {
      await submitAdmitted(endpoint, submitted);
      const now = await d.status();
      return now.fleet?.running === 2 ? now : undefined;
    }, "both running");
    expect(status.cap_reason).toContain("no backlog");
    expect(status.max_in_flight).toBe(3); // 2 workers + 1 headroom
  });

  it("backs off at once on a 429 and grows back one step per poll of the fleet", async () => {
    const endpoint = await autoscaling("backoff", 6);
    const d = dispatcherFor(endpoint);
    const config = auto(6);
    await d.dispatch(offer("b", 40), config);
    const submitted = new Set<string>();
    await waitFor(async () => {
      await submitAdmitted(endpoint, submitted);
      const now = await d.status();
      return now.max_in_flight === 7 && now.fleet?.running === 6 ? now : undefined;
    }, "the grown fleet");
    await d.report([{ kind: "rate_limited", retryAfterS: 1 }], config);
    const cut = await d.status();
    expect(cut.max_in_flight).toBe(5); // ⌊7 × 0.75⌋
    expect(cut.cap_reason).toContain("429");
    const seen = new Set<number>();
    await waitFor(async () => {
      const now = await d.status();
      seen.add(now.max_in_flight);
      return now.max_in_flight === 7 ? now : undefined;
    }, "the cap back at 7");
    // Step by step: 5, 6, 7 (one worker in eight a poll, at least one run).
    expect([...seen].sort()).toEqual([5, 6, 7]);
  });

  it("a submission whose /run answer was lost is not called lost while runs queue at RunPod", async () => {
    // One worker, busy; four runs queued behind it: a run submitted now waits minutes.
    const busy = uniqueEndpoint("queued");
    await configureEndpoint(busy, { maxWorkers: 1, queueMs: 0, runMs: 600_000 });
    const d = dispatcherFor(busy);
    await d.dispatch(offer("q", 5), auto(1));
    const submitted = new Set<string>();
    for (let i = 0; i < 5; i++) submitted.add(`other-${i}`);
    for (const id of submitted) {
      await fetch(`${emulatorOrigin}/v2/${busy}/run`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${env.RUNPOD_API_KEY}`,
          "content-type": "application/json",
        },
        body: JSON.stringify({ input: { export_job_id: id } }),
      });
    }
    await waitFor(async () => {
      const now = await d.status();
      return (now.fleet?.in_queue ?? 0) >= 4 ? now : undefined;
    }, "the dispatcher sees the queue");

    // Claimed 130 s ago (CLAIM_TIMEOUT_S is 120), no run recorded: its /run answer was lost.
    const claimedLongAgo = async () => {
      const job = await processingJob({ runId: null });
      await env.DB.prepare(
        `UPDATE export_jobs SET started_at = strftime('%Y-%m-%d %H:%M:%f', 'now', '-130 seconds'),
                due_at = datetime('now', '-1 seconds') WHERE id = ?`,
      )
        .bind(job.id)
        .run();
      return job;
    };
    const waitingAtRunpod = await claimedLongAgo();
    const report = await reconcile(consumerDeps({ ...env, RUNPOD_ENDPOINT_ID: busy }));
    expect(report.outcomes.claim_stretched).toBeGreaterThanOrEqual(1);
    expect(await readJob(waitingAtRunpod.id)).toMatchObject({
      status: "processing",
      retry_count: 0,
    });

    // The same claim against an endpoint with nothing queued: the run counts as lost.
    const idle = uniqueEndpoint("idle");
    const lost = await claimedLongAgo();
    const idleReport = await reconcile(consumerDeps({ ...env, RUNPOD_ENDPOINT_ID: idle }));
    expect(idleReport.claimsExpired).toBeGreaterThanOrEqual(1);
    expect(await readJob(lost.id)).toMatchObject({ status: "pending", retry_count: 1 });
  });
});
