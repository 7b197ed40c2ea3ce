// The dispatch gate: its policy as pure functions of (state, time), and the Durable Object that
// keeps one such state per RunPod endpoint, through the real binding.
import { env } from "cloudflare:workers";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  acquire,
  type GateConfig,
  type GateState,
  initialGate,
  isDown,
  markOf,
  report,
  restoreGate,
  type SubmitOutcome,
  trips,
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

/** The contract's defaults: a window of 20, down at 5 failures and 50 %, 3 probes, 30 s. */
const breaker: GateConfig = dispatchConfig({ runsPer10s: 100 });

/** One outcome per mark: "x" a 503, "o" a run id, "!" a 401. */
function outcomes(marks: string): SubmitOutcome[] {
  return [...marks].map((mark) =>
    mark === "x"
      ? { kind: "failed", error: "HTTP 503" }
      : mark === "!"
        ? { kind: "auth_failed", error: "HTTP 401" }
        : { kind: "ok" },
  );
}

/** Reports the marks one batch each, as many consumers would; `at`: when it paused, or -1. */
function feed(state: GateState, marks: string, now = T0, config = breaker) {
  let at = -1;
  let next = state;
  [...marks].forEach((mark, i) => {
    next = report(next, config, now, outcomes(mark));
    if (at < 0 && next.mode === "paused") at = i;
  });
  return { state: next, at };
}

/** A gate paused at `now` by five 503s in a row. */
function tripped(now = T0): GateState {
  const state = report(initialGate(now), breaker, now, outcomes("xxxxx"));
  expect(state.mode).toBe("paused");
  return state;
}

/** Lets the round of probes through when the pause is over and reports `marks` for them. */
function probeRound(state: GateState, marks: string) {
  const now = state.pausedUntil;
  const { state: probing, grant } = acquire(state, breaker, now, 10, 5_000);
  expect(grant).toMatchObject({ probe: true, mode: "probing" });
  expect(grant.delaysMs).toHaveLength(breaker.breakerProbes);
  return { state: report(probing, breaker, now, outcomes(marks)), now };
}

/** The pause a paused state is in (s). */
const pauseOf = (state: GateState) => (state.pausedUntil - state.since) / 1000;

/** A small, seeded PRNG (mulberry32): the same numbers on every run. */
function seeded(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

describe("dispatch gate: the breaker judges rates, not single calls", () => {
  it("trips: BREAKER_THRESHOLD failures or more that are BREAKER_FAILURE_RATE or more of the last BREAKER_WINDOW submissions, or a refused key", () => {
    const cases: [string, boolean][] = [
      ["xxxx", false], // below the threshold, however high the rate
      ["xxxxx", true],
      // A window not yet full is judged over the submissions it holds.
      ["oxxoxoxx", true], // 5 of 8
      ["oxoxoxoxox", true], // 5 of 10: exactly the rate
      ["ooxoxoxoxox", false], // 5 of 11
      // A full window: the last 20 only.
      [`${"o".repeat(15)}xxxxx`, false], // 5 of 20 = 25 %
      [`${"o".repeat(11)}${"x".repeat(9)}`, false],
      [`${"o".repeat(10)}${"x".repeat(10)}`, true],
      [`${"x".repeat(10)}${"o".repeat(11)}`, false], // the failures slide out
      [`${"x".repeat(10)}oo${"ox".repeat(9)}`, false], // 9 of the last 20
      [`${"x".repeat(10)}${"ox".repeat(10)}`, true], // 10 of the last 20
      ["!", true],
      [`${"o".repeat(30)}!`, true],
    ];
    for (const [marks, down] of cases)
      expect([marks, trips(marks, breaker)]).toEqual([marks, down]);
    // The rate is a share of the submissions judged, compared exactly: 6 of 20 is 30 %.
    const rate30 = dispatchConfig({ breakerFailureRate: 0.3 });
    expect(trips(`${"o".repeat(14)}${"x".repeat(6)}`, rate30)).toBe(true);
    expect(trips(`${"o".repeat(15)}${"x".repeat(5)}`, rate30)).toBe(false); // 25 %, and 5 is enough
    // What counts: 5xx/timeouts/network errors fail; any answer (a run, a 4xx, a 429) is RunPod up.
    expect(
      [
        { kind: "ok" },
        { kind: "rejected" },
        { kind: "rate_limited", retryAfterS: 1 },
        { kind: "failed", error: "timeout" },
        { kind: "auth_failed", error: "HTTP 403" },
      ].map((outcome) => markOf(outcome as SubmitOutcome)),
    ).toEqual(["o", "o", "o", "x", "!"]);
  });

  it("the gate pauses at the first submission after which its own history trips (property)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom("x", "o", "o", "o"), { maxLength: 120 }).map((a) => a.join("")),
        fc.boolean(),
        (marks, oneBatch) => {
          let expected = -1;
          for (let i = 0; i < marks.length && expected < 0; i++) {
            if (trips(marks.slice(0, i + 1), breaker)) expected = i;
          }
          const state = oneBatch
            ? report(initialGate(T0), breaker, T0, outcomes(marks))
            : feed(initialGate(T0), marks).state;
          expect(state.mode).toBe(expected < 0 ? "running" : "paused");
          if (!oneBatch) expect(feed(initialGate(T0), marks).at).toBe(expected);
          if (expected >= 0) {
            const judged = marks.slice(0, expected + 1).slice(-breaker.breakerWindow);
            const failed = [...judged].filter((mark) => mark === "x").length;
            expect(state.reason).toBe(
              `${failed} of the last ${judged.length} submissions failed; last: HTTP 503`,
            );
          } else expect(state.window).toBe(marks.slice(-breaker.breakerWindow)); // compact
        },
      ),
      { numRuns: 300 },
    );
  });

  it("degraded is not down: 20 % or 25 % of /run failing, spread out, never pauses, and neither do 5 failures among the last 20", () => {
    for (const pattern of ["oooox", "ooox"]) {
      const { state } = feed(initialGate(T0), pattern.repeat(2_500));
      expect(state).toMatchObject({ mode: "running", reason: null });
    }
    expect(feed(initialGate(T0), "oooox".repeat(20)).at).toBe(-1); // 100 submissions
    // Five in a row once a window of successes came: 5 of the last 20.
    expect(feed(initialGate(T0), `${"o".repeat(15)}xxxxx`).state.mode).toBe("running");
    // The same five at the start: 5 of 5.
    expect(feed(initialGate(T0), "xxxxx").at).toBe(4);
  });

  it("a 401/403 pauses at once, whatever came before", () => {
    const { state, at } = feed(initialGate(T0), `${"o".repeat(30)}!`);
    expect(at).toBe(30);
    expect(state).toMatchObject({ mode: "paused", pausedUntil: T0 + 30_000 });
    expect(state.reason).toBe("RunPod refused the API key: HTTP 401");
    expect(isDown(state)).toBe(true);
  });

  it("down: nothing is granted for BREAKER_COOLDOWN_S, then exactly BREAKER_PROBES permits, and the rest wait for their verdict", () => {
    let state = tripped();
    expect(state.reason).toBe("5 of the last 5 submissions failed; last: HTTP 503");
    expect(isDown(state)).toBe(true);
    expect(acquire(state, breaker, T0 + 10_000, 5, 5_000).grant).toMatchObject({
      delaysMs: [],
      mode: "paused",
      retryInS: 20,
    });
    // Outcomes reported while paused (the rest of a batch, earlier submissions) are ignored.
    expect(report(state, breaker, T0 + 10_000, outcomes("ooooo"))).toEqual(state);

    const probes = acquire(state, breaker, T0 + 30_000, 10, 5_000);
    expect(probes.grant).toMatchObject({ probe: true, mode: "probing" });
    expect(probes.grant.delaysMs).toEqual([0, 0, 0]);
    state = probes.state;
    expect(isDown(state)).toBe(true);
    expect(acquire(state, breaker, T0 + 30_500, 10, 5_000).grant.delaysMs).toEqual([]);
    // The verdict waits for all three, each reported by whichever consumer sent it.
    state = report(state, breaker, T0 + 31_000, outcomes("x"));
    state = report(state, breaker, T0 + 31_000, outcomes("o"));
    expect(state.mode).toBe("probing");
    // 1 of 3 failed (33 % < 50 %): running again, the window fresh.
    state = report(state, breaker, T0 + 31_000, outcomes("o"));
    expect(state).toMatchObject({ mode: "running", reason: null, window: "", since: T0 + 31_000 });
    expect(isDown(state)).toBe(false);
    expect(acquire(state, breaker, T0 + 31_000, 60, 5_000).grant.delaysMs).toHaveLength(55);
  });

  it("2 of 3 probes failing doubles the pause; failed rounds double it up to 600 s", () => {
    let state = tripped();
    const round = probeRound(state, "xox");
    expect(round.state.reason).toBe("2 of 3 probes failed; last: HTTP 503");
    expect(pauseOf(round.state)).toBe(60);
    state = round.state;
    const pauses: number[] = [];
    for (let i = 0; i < 6; i++) {
      state = probeRound(state, "xxx").state;
      pauses.push(pauseOf(state));
    }
    expect(pauses).toEqual([120, 240, 480, 600, 600, 600]);
    // A refused key among the probes is down at once: no need to wait for the others.
    const refused = acquire(tripped(), breaker, T0 + 30_000, 3, 5_000).state;
    const after = report(refused, breaker, T0 + 30_000, outcomes("!"));
    expect(after).toMatchObject({ mode: "paused", reason: "RunPod refused the API key: HTTP 401" });
    expect(pauseOf(after)).toBe(60);
  });

  it("running without going down halves the next pause back toward BREAKER_COOLDOWN_S: once per BREAKER_WINDOW submissions", () => {
    let state = tripped();
    for (const marks of ["xxx", "xxo", "xxx"]) state = probeRound(state, marks).state;
    expect(pauseOf(state)).toBe(240);
    state = probeRound(state, "oox").state;
    expect(state.mode).toBe("running");
    // Down again at once: the same pause, neither doubled nor forgotten.
    let now = state.since;
    state = feed(state, "xxxxx", now).state;
    expect(pauseOf(state)).toBe(240);
    state = probeRound(state, "ooo").state;
    now = state.since;
    // 20 submissions judged while running (failures among them too): 120 s; then 10 failures of
    // the last 20 (nine of them still judged, not down): paused for 120 s.
    state = feed(state, `${"o".repeat(20)}${"x".repeat(10)}`, now).state;
    expect(pauseOf(state)).toBe(120);
    state = probeRound(state, "ooo").state;
    now = state.since;
    const halvings: number[] = [];
    for (let i = 0; i < 4; i++) {
      state = feed(state, "o".repeat(20), now).state;
      halvings.push(state.pauseS);
    }
    expect(halvings).toEqual([60, 30, 30, 30]);
    expect(pauseOf(feed(state, "xxxxxxxxxx", now).state)).toBe(30);
  });

  it("probes never reported (a consumer crashed): after a minute their permits go again", () => {
    const paused = tripped();
    const first = acquire(paused, breaker, T0 + 30_000, 3, 5_000);
    expect(first.grant.delaysMs).toHaveLength(3);
    let state = report(first.state, breaker, T0 + 31_000, outcomes("o")); // two are lost
    expect(acquire(state, breaker, T0 + 89_000, 3, 5_000).grant.delaysMs).toEqual([]);
    const again = acquire(state, breaker, T0 + 90_001, 3, 5_000);
    expect(again.grant).toMatchObject({ probe: true, mode: "probing" });
    expect(again.grant.delaysMs).toHaveLength(2);
    state = report(again.state, breaker, T0 + 91_000, outcomes("oo"));
    expect(state.mode).toBe("running");
    // Outcomes while probing beyond the permits outstanding came from before the pause.
    const fresh = acquire(tripped(), breaker, T0 + 30_000, 0, 5_000).state;
    expect(fresh.mode).toBe("probing");
    expect(report(fresh, breaker, T0 + 30_000, outcomes("xxxxx"))).toEqual(fresh);
  });

  it("whatever happens, pauses stay within 600 s, probing grants at most BREAKER_PROBES outstanding, and the state stays small (property)", () => {
    const step = fc.oneof(
      fc.record({ kind: fc.constant("acquire" as const), wanted: fc.integer({ min: 0, max: 8 }) }),
      fc.record({
        kind: fc.constant("report" as const),
        marks: fc.array(fc.constantFrom("x", "o", "!"), { maxLength: 8 }).map((a) => a.join("")),
      }),
      fc.record({ kind: fc.constant("wait" as const), ms: fc.integer({ min: 0, max: 200_000 }) }),
    );
    fc.assert(
      fc.property(fc.array(step, { maxLength: 80 }), (steps) => {
        let state = initialGate(T0);
        let now = T0;
        for (const s of steps) {
          if (s.kind === "wait") now += s.ms;
          else if (s.kind === "acquire") {
            const { state: next, grant } = acquire(state, breaker, now, s.wanted, 5_000);
            if (next.mode === "probing") {
              expect(grant.delaysMs.length).toBeLessThanOrEqual(breaker.breakerProbes);
              expect(next.probes).toBeLessThanOrEqual(breaker.breakerProbes);
            }
            state = next;
          } else state = report(state, breaker, now, outcomes(s.marks));
          if (state.mode === "paused") {
            expect(pauseOf(state)).toBeGreaterThanOrEqual(breaker.breakerCooldownS);
            expect(pauseOf(state)).toBeLessThanOrEqual(600);
          }
          expect(state.window.length).toBeLessThanOrEqual(breaker.breakerWindow);
          expect(state.probed.length).toBeLessThanOrEqual(state.probes);
          expect(state.pauseS).toBeLessThanOrEqual(600);
        }
      }),
      { numRuns: 300 },
    );
  });

  it("80 % of /run answered over ten simulated minutes: running most of the time, and the first good round of probes after an outage resumes", () => {
    // The fleet asks for one permit every 200 ms (the chaos run's 1,000 jobs take about that long)
    // and reports at once. Failures at random, seeded: the same run every time.
    const run = (seed: number, failureRate: number, outage = 0) => {
      const random = seeded(seed);
      let state = initialGate(T0);
      let paused = 0;
      let longest = 0;
      let stretch = 0;
      for (let now = T0; now < T0 + 600_000; now += 200) {
        const { state: next, grant } = acquire(state, breaker, now, 1, 5_000);
        if (grant.delaysMs.length === 0) {
          paused += 200;
          stretch += 200;
          longest = Math.max(longest, stretch);
        } else stretch = 0;
        const failing = now < T0 + outage || random() < failureRate;
        state = report(
          next,
          breaker,
          now,
          outcomes(grant.delaysMs.map(() => (failing ? "x" : "o")).join("")),
        );
      }
      return { running: 1 - paused / 600_000, longestS: longest / 1000 };
    };
    const seeds = Array.from({ length: 40 }, (_, i) => i + 1);
    const meanRunning = (runs: { running: number }[]) =>
      runs.reduce((sum, r) => sum + r.running, 0) / runs.length;
    // 80 % answered: 10 of 20 failing by chance trips about once per 1,500 submissions, a 30 s
    // pause each (running 91 % of the time on average here). At 75 % it is once per 350 (64 %):
    // the contract's window of 20 is what decides that (README, "Breaker").
    expect(meanRunning(seeds.map((seed) => run(seed, 0.2)))).toBeGreaterThan(0.85);
    expect(meanRunning(seeds.map((seed) => run(seed, 0.1)))).toBeGreaterThan(0.99);
    // A 40 s outage: down after 5 submissions, 30 s, a round of probes still in it, 60 s; then
    // the first round of probes that meets RunPod answering 80 % resumes (fails 10 % of the time).
    const outage = seeds.map((seed) => run(seed, 0.2, 40_000));
    expect(outage.filter((r) => r.longestS <= 60).length).toBeGreaterThan(seeds.length * 0.8);
  });
});

describe("dispatch gate: stored state", () => {
  it("a state stored by the consecutive-failures breaker is read with the new fields initial", () => {
    const old = {
      mode: "paused",
      reason: "5 consecutive failed submissions",
      since: T0,
      pausedUntil: T0 + 60_000,
      pauseS: 60,
      failures: 0,
      tat: T0,
      blockedUntil: 0,
      slowdown: 1,
      slowedAt: 0,
      probeUntil: 0,
    } as unknown as Partial<GateState>;
    const state = restoreGate(old, T0 + 1_000);
    expect(state).toMatchObject({ mode: "paused", pauseS: 60, window: "", probes: 0, probed: "" });
    const probes = acquire(state, breaker, T0 + 60_000, 5, 5_000);
    expect(probes.grant.delaysMs).toHaveLength(3);
    expect(report(probes.state, breaker, T0 + 60_000, outcomes("oox")).mode).toBe("running");
    expect(restoreGate(undefined, T0)).toEqual(initialGate(T0));
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
