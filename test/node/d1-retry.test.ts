import { describe, expect, it } from "vitest";
import { retryTransient, retryTransientOutcome } from "../../shared/d1-retry.ts";

describe("retryTransient", () => {
  it("retries a transient D1 failure and returns the eventual answer", async () => {
    let calls = 0;
    const answer = await retryTransient(async () => {
      calls += 1;
      if (calls < 3) throw new Error("D1_ERROR: database is locked: SQLITE_BUSY");
      return "row";
    });
    expect(answer).toBe("row");
    expect(calls).toBe(3);
  });

  it("gives up after the last attempt, and never retries other errors", async () => {
    let calls = 0;
    await expect(
      retryTransient(async () => {
        calls += 1;
        throw new Error("D1_ERROR: Network connection lost.");
      }, 3),
    ).rejects.toThrow(/Network connection lost/);
    expect(calls).toBe(3);

    let constraint = 0;
    await expect(
      retryTransient(async () => {
        constraint += 1;
        throw new Error("D1_ERROR: CHECK constraint failed: status");
      }),
    ).rejects.toThrow(/CHECK constraint/);
    expect(constraint).toBe(1);
  });

  it("tells when a failed try may have committed: a lost connection may, a busy database did not", async () => {
    const failingOnce = (message: string) => {
      let calls = 0;
      return async () => {
        calls += 1;
        if (calls === 1) throw new Error(message);
        return null;
      };
    };
    const lost = await retryTransientOutcome(failingOnce("D1_ERROR: Network connection lost."));
    expect(lost).toEqual({ value: null, ambiguous: true });
    const reset = await retryTransientOutcome(
      failingOnce(
        "D1_ERROR: Durable Object reset because its code was updated (object to be reset)",
      ),
    );
    expect(reset.ambiguous).toBe(true);
    const busy = await retryTransientOutcome(
      failingOnce("D1_ERROR: database is locked: SQLITE_BUSY"),
    );
    expect(busy).toEqual({ value: null, ambiguous: false });
    const clean = await retryTransientOutcome(async () => "row");
    expect(clean).toEqual({ value: "row", ambiguous: false });
  });
});
