// The auto cap's policy (shared/capacity.ts) as pure functions of what the dispatcher knows of
// the fleet: growth while a backlog waits, a short queue once the fleet stops growing, the
// headroom of Little's law, the scalers, and back-off with additive recovery.
import { describe, expect, it } from "vitest";
import {
  BACKOFF_SPACING_MS,
  type CapacityState,
  capOf,
  expectedQueueMs,
  FLEET_UNKNOWN_CAP,
  type Fleet,
  initialCapacity,
  noteAsking,
  observeFleet,
  observeOutcomes,
  observeRefill,
  observeRuns,
  STALL_MS,
  UNKNOWN_MAX_RUNS,
} from "../../shared/capacity.ts";
import type { CapacityConfig } from "../../shared/settings.ts";

const T0 = 1_000_000;
const auto = (overrides: Partial<CapacityConfig> = {}): CapacityConfig => ({
  maxInFlight: "auto",
  maxWorkers: 32,
  fleetPollS: 5,
  scaler: { kind: "queue_delay" },
  ...overrides,
});
const fleet = (workers: Partial<Fleet>, at = T0): Fleet => ({
  ready: 0,
  running: 0,
  initializing: 0,
  throttled: 0,
  unhealthy: 0,
  inQueue: 0,
  inProgress: 0,
  at,
  ...workers,
});
/** A state that knows the fleet, runs of `runMs` and a refill of `refillMs`. */
function knowing(workers: Partial<Fleet>, runMs = 3_000, refillMs = 250): CapacityState {
  let state = observeRuns(initialCapacity(), [
    { type: "framing", delayMs: 100, executionMs: runMs },
  ]);
  state = observeRefill({ ...state, refillMs }, refillMs);
  return observeFleet(state, fleet(workers), 0);
}

describe("the auto cap", () => {
  it("a fixed RUNPOD_MAX_IN_FLIGHT is the cap, whatever the fleet", () => {
    const cap = capOf(knowing({ running: 50 }), auto({ maxInFlight: 7 }), 1_000, T0);
    expect(cap).toMatchObject({ cap: 7, growth: 0 });
  });

  it("admits a little until the fleet is known", () => {
    expect(capOf(initialCapacity(), auto(), 500, T0).cap).toBe(FLEET_UNKNOWN_CAP);
  });

  it("while a backlog waits, queues a run for every worker the fleet may still add (max known)", () => {
    const cap = capOf(knowing({ running: 4 }), auto({ maxWorkers: 32 }), 300, T0);
    // 4 running + 28 for the autoscaler + headroom ceil(250 ms × 4 / 3 s) = 1
    expect(cap).toMatchObject({ cap: 33, growth: 28 });
    // never more than the backlog
    expect(capOf(knowing({ running: 4 }), auto(), 5, T0)).toMatchObject({ cap: 10, growth: 5 });
  });

  it("without RUNPOD_MAX_WORKERS the fleet may double each time, up to 100 runs", () => {
    const config = auto({ maxWorkers: null });
    expect(capOf(knowing({ running: 4 }), config, 1_000, T0)).toMatchObject({ growth: 4 });
    expect(capOf(knowing({ running: 0 }), config, 1_000, T0)).toMatchObject({ growth: 2 });
    const big = capOf(knowing({ running: 100 }, 3_000, 0), config, 1_000, T0);
    expect(big.cap).toBeLessThanOrEqual(UNKNOWN_MAX_RUNS + 1);
    expect(big.reason).toContain("RUNPOD_MAX_WORKERS");
  });

  it("once the fleet is at its maximum, only the headroom waits at RunPod", () => {
    const cap = capOf(knowing({ running: 32 }), auto(), 1_000, T0);
    expect(cap.growth).toBe(0);
    // 32 × 250 ms / 3 s = 2.7: 3 runs queued, ≤ max(2, 32/4)
    expect(cap.cap).toBe(35);
    expect(cap.reason).toContain("maximum");
  });

  it("the headroom is the refill latency times the completion rate (Little's law)", () => {
    const slowRefill = capOf(knowing({ running: 32 }, 3_000, 1_000), auto(), 1_000, T0);
    expect(slowRefill.cap).toBe(32 + Math.ceil((1_000 * 32) / 3_000));
    const longRuns = capOf(knowing({ running: 32 }, 60_000, 1_000), auto(), 1_000, T0);
    expect(longRuns.cap).toBe(33);
  });

  it("initializing workers get runs waiting for them; no backlog: no growth", () => {
    const cap = capOf(knowing({ running: 4, initializing: 3 }), auto(), 0, T0);
    expect(cap).toMatchObject({ cap: 8, growth: 0 });
  });

  it("growth stalls when runs waited for the autoscaler and no worker came, and is tried again later", () => {
    let state = knowing({ running: 4 });
    const asking = capOf(state, auto(), 300, T0);
    expect(asking.growth).toBe(28);
    state = noteAsking(state, asking.growth, T0);
    // Runs not yet at RunPod (a paused gate, the pace) are no sign: the fleet may still grow.
    state = observeFleet(state, fleet({ running: 4, inQueue: 0 }, T0 + STALL_MS), asking.cap);
    expect(capOf(state, auto(), 300, T0 + STALL_MS).growth).toBe(28);
    // Runs queued at RunPod for STALL_MS, and no worker came.
    state = observeFleet(state, fleet({ running: 4, inQueue: 28 }, T0 + STALL_MS + 1), asking.cap);
    expect(capOf(state, auto(), 300, T0 + STALL_MS + 1).growth).toBe(28);
    state = observeFleet(
      state,
      fleet({ running: 4, inQueue: 28 }, T0 + 2 * STALL_MS + 1),
      asking.cap,
    );
    const stalled = capOf(state, auto(), 300, T0 + 2 * STALL_MS + 1);
    expect(stalled.growth).toBe(0);
    expect(stalled.cap).toBe(5);
    expect(stalled.reason).toContain("autoscaler added no worker");
    expect(capOf(state, auto(), 300, T0 + STALL_MS + 10 * 60_000).growth).toBe(28);
  });

  it("REQUEST_COUNT with s runs a worker: keeping W workers takes W·s runs in flight", () => {
    const config = auto({ scaler: { kind: "request_count", runsPerWorker: 3 }, maxWorkers: 10 });
    expect(capOf(knowing({ running: 10 }), config, 100, T0)).toMatchObject({ cap: 30 + 1 });
    expect(capOf(knowing({ running: 4 }), config, 100, T0)).toMatchObject({ cap: 30 + 1 });
    expect(capOf(knowing({ running: 4 }), config, 0, T0)).toMatchObject({ cap: 12 + 1 });
  });

  it("backs off at once on a 429, and grows back one step per clean poll", () => {
    let state = knowing({ running: 32 });
    const before = capOf(state, auto(), 1_000, T0).cap;
    state = observeOutcomes(
      state,
      [{ kind: "ok" }, { kind: "rate_limited", retryAfterS: 1 }],
      T0,
      before,
    );
    const after = capOf(state, auto(), 1_000, T0);
    expect(after.cap).toBe(Math.floor(before * 0.75));
    expect(after.reason).toContain("429");
    // a second 429 within the spacing is the same congestion: no second cut
    const again = observeOutcomes(
      state,
      [{ kind: "rate_limited", retryAfterS: 1 }],
      T0 + 1,
      after.cap,
    );
    expect(capOf(again, auto(), 1_000, T0).cap).toBe(after.cap);
    let cap = after.cap;
    for (let poll = 1; cap < before; poll++) {
      state = observeFleet(state, fleet({ running: 32 }, T0 + poll * 5_000), cap);
      const next = capOf(state, auto(), 1_000, T0 + poll * 5_000).cap;
      // an eighth of the cap before the cut a poll (the last step up to the model's cap)
      expect(next - cap).toBe(Math.min(Math.ceil(before / 8), before - cap));
      expect(next).toBeGreaterThan(cap);
      cap = next;
    }
    expect(cap).toBe(before);
    // and the ceiling goes once the model's cap is below it
    state = observeFleet(state, fleet({ running: 32 }, T0 + 99_000), before);
    expect(state.ceiling).toBeNull();
  });

  it("throttled or unhealthy workers halve the cap; a failure here and there does not", () => {
    const state = knowing({ running: 16 });
    const before = capOf(state, auto(), 1_000, T0).cap;
    const throttled = observeFleet(state, fleet({ running: 16, throttled: 2 }, T0 + 5_000), before);
    expect(capOf(throttled, auto(), 1_000, T0 + 5_000).cap).toBe(Math.floor(before / 2));
    const degraded = observeOutcomes(
      state,
      [
        { kind: "ok" },
        { kind: "failed", error: "500" },
        { kind: "ok" },
        { kind: "ok" },
        { kind: "ok" },
      ],
      T0,
      before,
    );
    expect(capOf(degraded, auto(), 1_000, T0).cap).toBe(before);
    // An unlucky small batch (2 of 3 failed) is no verdict: fewer than 10 outcomes seen.
    const unlucky = observeOutcomes(
      state,
      [{ kind: "failed", error: "500" }, { kind: "failed", error: "502" }, { kind: "ok" }],
      T0 + BACKOFF_SPACING_MS,
      before,
    );
    expect(capOf(unlucky, auto(), 1_000, T0).cap).toBe(before);
    // Half of the last ten and more: a cut, and the window starts again.
    const failing = observeOutcomes(
      unlucky,
      [...Array(4).fill({ kind: "failed", error: "500" }), ...Array(3).fill({ kind: "ok" })],
      T0 + BACKOFF_SPACING_MS,
      before,
    );
    expect(capOf(failing, auto(), 1_000, T0).cap).toBe(Math.floor(before * 0.75));
    expect(failing.outcomes).toBe("");
  });

  it("runs waiting longer and longer at RunPod back off while the fleet is not growing", () => {
    let state = knowing({ running: 8 });
    state = observeFleet(state, fleet({ running: 8 }, T0 + 5_000), 9);
    state = observeRuns(
      state,
      Array(10).fill({ type: "framing", delayMs: 20_000, executionMs: 3_000 }),
    );
    state = observeFleet(state, fleet({ running: 8 }, T0 + 10_000), 9);
    expect(capOf(state, auto(), 0, T0 + 10_000).reason).toContain("wait longer");
  });

  it("the long waits of runs queued for the autoscaler are no reason to back off", () => {
    let state = knowing({ running: 4 });
    const asking = capOf(state, auto(), 300, T0);
    state = noteAsking(state, asking.growth, T0);
    // The fleet reached its maximum: no more runs for the autoscaler from now on.
    state = observeFleet(state, fleet({ running: 32 }, T0 + 5_000), asking.cap);
    state = noteAsking(state, capOf(state, auto(), 300, T0 + 5_000).growth, T0 + 5_000);
    // The runs that waited for cold starts end, reporting long delays.
    state = observeRuns(
      state,
      Array(10).fill({ type: "framing", delayMs: 8_000, executionMs: 3_000 }),
    );
    state = observeFleet(state, fleet({ running: 32 }, T0 + 10_000), 35);
    expect(capOf(state, auto(), 300, T0 + 10_000).reason).not.toContain("backing off");
  });

  it("a lost /run answer may wait as long as the runs queued ahead take, plus a cold start at zero", () => {
    expect(expectedQueueMs(knowing({ running: 4 }))).toBe(100); // the learned delay, no queue
    const queued = knowing({ running: 4, inQueue: 8 }, 3_000);
    expect(expectedQueueMs(queued)).toBe(6_000); // 8 runs × 3 s / 4 workers
    const cold = knowing({ inQueue: 2 }, 3_000);
    expect(expectedQueueMs(cold)).toBeGreaterThanOrEqual(120_000);
  });
});
