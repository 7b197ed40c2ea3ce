import { describe, expect, it } from "vitest";
import { retryTransient } from "../../shared/d1-retry.ts";

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
});
