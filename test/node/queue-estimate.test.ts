// Queue position and ETA as pure functions (shared/queue-estimate.ts), checked against a
// simulation of the dispatcher's own order: least dispatched key first, oldest first within it.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  etaSeconds,
  type KeyCounts,
  keySnapshot,
  positionOf,
  servedBefore,
} from "../../shared/queue-estimate.ts";

/** The order the fair queue admits jobs in: [key index, rank] pairs, first to last. */
function simulate(keys: KeyCounts[]): [number, number][] {
  const state = keys.map((k) => ({ ...k, next: 0 }));
  const order: [number, number][] = [];
  for (;;) {
    let best = -1;
    for (let i = 0; i < state.length; i++) {
      const k = state[i];
      if (!k || k.waiting === 0) continue;
      if (best === -1 || k.dispatched < (state[best]?.dispatched ?? 0)) best = i;
    }
    const k = state[best];
    if (!k) return order;
    order.push([best, k.next]);
    k.next += 1;
    k.waiting -= 1;
    k.dispatched += 1;
  }
}

describe("queue position", () => {
  it("two users, equal shares: the big backlog's jobs interleave with the small one's", () => {
    const big = { dispatched: 0, waiting: 500 };
    const small = { dispatched: 0, waiting: 3 };
    const snapshot = keySnapshot(
      new Map([
        ["big", big],
        ["small", small],
      ]),
    );
    // The small user's jobs: 0, 2, 4 jobs ahead (one of the big user's before each).
    expect([0, 1, 2].map((r) => positionOf(snapshot, "small", small, r))).toEqual([0, 2, 4]);
    // The big user's 100th job: its 99 before it and the small user's 3.
    expect(positionOf(snapshot, "big", big, 99)).toBe(102);
    // A snapshot older than the big user's backlog (read before it was offered): the job's own
    // rank still counts, from its key's counts now.
    const stale = keySnapshot(new Map([["small", small]]));
    expect(positionOf(stale, "big", big, 99)).toBe(102);
  });

  it("a key that starts waiting is level with the least served: its first job is next", () => {
    const snapshot = keySnapshot(
      new Map([
        ["a", { dispatched: 40, waiting: 200 }],
        ["b", { dispatched: 55, waiting: 10 }],
      ]),
    );
    expect(positionOf(snapshot, "new", null, 0)).toBe(0);
    // its second job: after one of the least served key's
    expect(positionOf(snapshot, "new", { dispatched: 40, waiting: 1 }, 1)).toBe(2);
  });

  it("matches the dispatcher's order within the ties between equally served keys", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            dispatched: fc.integer({ min: 0, max: 30 }),
            waiting: fc.integer({ min: 1, max: 40 }),
          }),
          { minLength: 1, maxLength: 8 },
        ),
        (keys) => {
          const snapshot = keySnapshot(new Map(keys.map((k, i) => [`k${i}`, k])));
          const order = simulate(keys);
          order.forEach(([key, rank], actual) => {
            const estimate = positionOf(snapshot, `k${key}`, keys[key] ?? null, rank);
            // Ties between keys served equally are broken by name in the dispatcher; the
            // estimate ignores the tie-break: off by at most the number of tied keys.
            expect(Math.abs(estimate - actual)).toBeLessThanOrEqual(keys.length - 1);
          });
        },
      ),
    );
  });

  it("sums in O(log keys): 100,000 keys answer as a direct sum does", () => {
    const keys = Array.from({ length: 100_000 }, (_, i) => ({
      dispatched: (i * 7919) % 1000,
      waiting: 1 + ((i * 104_729) % 50),
    }));
    const snapshot = keySnapshot(new Map(keys.map((k, i) => [`k${i}`, k])));
    for (const t of [0, 1, 500, 999, 1_020, 5_000]) {
      const direct = keys.reduce(
        (sum, k) => sum + Math.min(k.waiting, Math.max(0, t - k.dispatched)),
        0,
      );
      expect(servedBefore(snapshot, t)).toBe(direct);
    }
  });
});

describe("ETA", () => {
  it("the n-th start comes after (n − ½) run lengths per worker, plus the refill", () => {
    const inputs = { queuedAtRunpod: 0, servers: 3, runMs: 1_000, refillMs: 200 };
    expect(etaSeconds(0, inputs)).toBe(0); // ~0.37 s
    expect(etaSeconds(29, inputs)).toBe(10); // 29.5 × 333 ms + 0.2 s
    // runs already queued at RunPod start first
    expect(etaSeconds(29, { ...inputs, queuedAtRunpod: 30 })).toBe(20);
    // no worker up: as if one
    expect(etaSeconds(9, { ...inputs, servers: 0 })).toBe(10);
  });
});
