// The dispatch gate: its policy as pure functions of (state, time), and the Durable Object that
// keeps one such state per RunPod endpoint, through the real binding.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import {
  acquire,
  type GateConfig,
  type GateState,
  initialGate,
  report,
} from "../../shared/dispatch-gate.ts";
import { dispatchConfig, uniqueEndpoint } from "./helpers.ts";

const config: GateConfig = dispatchConfig({ runsPer10s: 100, breakerThreshold: 3 });
const T0 = 1_000_000;

/** Permits granted per call at `now`, as the gate would hand them out. */
function take(state: GateState, now: number, wanted: number, maxWaitMs = 5_000) {
  return acquire(state, config, now, wanted, maxWaitMs);
}

describe("dispatch gate: pace", () => {
  it("lets half a second's worth through at once, then spaces submissions 10 s / RUNPOD_RUNS_PER_10S apart", () => {
    const { state, grant } = take(initialGate(T0), T0, 30);
    // 100 per 10 s: a burst of 5, then one every 100 ms
    expect(grant.delaysMs.slice(0, 5)).toEqual(Array(5).fill(0));
    expect(grant.delaysMs.slice(5, 8)).toEqual([100, 200, 300]);
    expect(grant.delaysMs).toHaveLength(30);
    // The next caller queues behind: its first permit comes after the 30th.
    const next = take(state, T0, 1);
    expect(next.grant.delaysMs[0]).toBe(2_600);
  });

  it("grants no more than fits in the wait it may spend, and says when to come back", () => {
    const { grant } = take(initialGate(T0), T0, 1_000, 1_000);
    expect(grant.delaysMs).toHaveLength(15); // 5 at once + 10 within the next second
    expect(grant.retryInS).toBeGreaterThanOrEqual(1);
    expect(grant.retryInS).toBeLessThanOrEqual(2);
  });

  it("sustains exactly the configured rate over a minute of steady demand", () => {
    let state = initialGate(T0);
    let granted = 0;
    for (let now = T0; now < T0 + 60_000; now += 1_000) {
      const result = take(state, now, 50, 1_000);
      state = result.state;
      granted += result.grant.delaysMs.length;
    }
    // the burst of 5, then 10 per second
    expect(granted).toBe(605);
  });

  it("a 429 honours Retry-After and slows the pace, which recovers after quiet periods", () => {
    let state = take(initialGate(T0), T0, 10).state;
    state = report(state, config, T0, [{ kind: "rate_limited", retryAfterS: 3 }]);
    expect(state.slowdown).toBe(2);
    const during = take(state, T0 + 1_000, 1);
    expect(during.grant.delaysMs).toEqual([2_000]); // not before Retry-After ran out
    const later = take(during.state, T0 + 20_000, 5, 0);
    expect(later.state.slowdown).toBe(1);
  });
});

describe("dispatch gate: breaker", () => {
  it("pauses after BREAKER_THRESHOLD consecutive failures; a success in between resets the count", () => {
    const failed = { kind: "failed", error: "HTTP 503" } as const;
    let state = report(initialGate(T0), config, T0, [failed, failed, { kind: "ok" }]);
    expect(state.mode).toBe("running");
    state = report(state, config, T0, [failed, failed, failed]);
    expect(state).toMatchObject({ mode: "paused", pausedUntil: T0 + 30_000 });
    expect(state.reason).toMatch(/3 consecutive failed submissions; last: HTTP 503/);
    const paused = take(state, T0 + 10_000, 5);
    expect(paused.grant).toMatchObject({ delaysMs: [], mode: "paused", retryInS: 20 });
  });

  it("after the cooldown lets exactly one probe through; its success resumes dispatch", () => {
    const failed = { kind: "failed", error: "timeout" } as const;
    let state = report(initialGate(T0), config, T0, [failed, failed, failed]);
    const probe = take(state, T0 + 30_000, 10);
    expect(probe.grant).toMatchObject({ delaysMs: [0], probe: true, mode: "probing" });
    state = probe.state;
    // Others wait while the probe is out.
    expect(take(state, T0 + 30_500, 10).grant.delaysMs).toEqual([]);
    state = report(state, config, T0 + 31_000, [{ kind: "ok" }]);
    expect(state.mode).toBe("running");
    expect(take(state, T0 + 31_000, 10).grant.delaysMs).toHaveLength(10);
    expect(take(state, T0 + 31_000, 60).grant.delaysMs).toHaveLength(55); // 5 at once + 5 s
  });

  it("a failed probe doubles the pause, up to 600 s", () => {
    const failed = { kind: "failed", error: "HTTP 500" } as const;
    let state = report(initialGate(T0), config, T0, [failed, failed, failed]);
    const pauses: number[] = [];
    let now = T0;
    for (let i = 0; i < 7; i++) {
      now = state.pausedUntil;
      const probe = take(state, now, 1);
      expect(probe.grant.probe).toBe(true);
      state = report(probe.state, config, now, [failed]);
      pauses.push((state.pausedUntil - now) / 1000);
    }
    expect(pauses).toEqual([60, 120, 240, 480, 600, 600, 600]);
  });

  it("a 401/403 opens the breaker at once", () => {
    const state = report(initialGate(T0), config, T0, [{ kind: "auth_failed", error: "HTTP 401" }]);
    expect(state.mode).toBe("paused");
    expect(state.reason).toMatch(/API key/);
  });

  it("a probe that is never reported lets another probe through after a minute", () => {
    const failed = { kind: "failed", error: "x" } as const;
    const paused = report(initialGate(T0), config, T0, [failed, failed, failed]);
    const first = take(paused, T0 + 30_000, 1);
    expect(take(first.state, T0 + 60_000, 1).grant.delaysMs).toEqual([]);
    expect(take(first.state, T0 + 90_001, 1).grant).toMatchObject({ delaysMs: [0], probe: true });
  });
});

describe("dispatch gate: the Durable Object", () => {
  it("is one gate per endpoint: permits and pauses are shared by every caller, and GET /stats sees them", async () => {
    const endpoint = uniqueEndpoint("gate");
    const gate = env.DISPATCHER.get(env.DISPATCHER.idFromName(endpoint));
    const other = env.DISPATCHER.get(env.DISPATCHER.idFromName(uniqueEndpoint("gate")));
    const small = dispatchConfig({
      runsPer10s: 20,
      breakerThreshold: 2,
      breakerCooldownS: 60,
      maxInFlight: 100,
    });
    const offer = (prefix: string, count: number) =>
      Array.from({ length: count }, (_, i) => ({
        id: `${prefix}-${i}`,
        key: `project:${prefix}`,
        createdAt: `2026-12-01 00:00:0${i}`,
      }));

    const [a, b] = await Promise.all([
      gate.dispatch(offer("a", 3), small),
      gate.dispatch(offer("b", 3), small),
    ]);
    // One permit at once (a burst of half a second's worth), then one every 500 ms, across callers.
    const delays = [...a.admitted, ...b.admitted].map((x) => Math.round(x.delayMs / 100) * 100);
    expect(delays.sort((x, y) => x - y)).toEqual([0, 500, 1000, 1500, 2000, 2500]);
    const elsewhere = await other.dispatch(offer("c", 2), small);
    expect(elsewhere.admitted.map((x) => x.delayMs)).toEqual([0, 500]);

    const failed = { kind: "failed", error: "HTTP 502" } as const;
    await gate.report([failed, failed], small);
    expect(await gate.status()).toMatchObject({ state: "paused", runs_last_10s: 6, in_flight: 6 });
    // While paused, an offer waits: nothing is admitted.
    expect((await gate.dispatch(offer("d", 5), small)).admitted).toEqual([]);
    expect(await gate.status()).toMatchObject({ waiting: 5, waiting_keys: 1 });
    expect((await other.status()).state).toBe("running");
  });
});
