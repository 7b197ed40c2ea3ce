// The refill path: the consumer's Refill entrypoint claims and submits the jobs the dispatcher
// admitted for freed slots, as a queue batch would, without a queue message. Called here as the
// dispatcher calls it (ctx.exports.Refill), on the real bindings and the emulator.
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { Refill } from "../../consumer/index.ts";
import {
  configureEndpoint,
  emulatorRequests,
  insertPendingJob,
  readJob,
  runCalls,
  sentMessagesFor,
  uniqueEndpoint,
} from "./helpers.ts";

describe("the refill entrypoint", () => {
  it("claims and submits admitted jobs to the dispatcher's endpoint; a job no longer pending is left alone", async () => {
    const endpoint = uniqueEndpoint("refill");
    await configureEndpoint(endpoint, { runMs: 600_000 });
    const [a, b, gone] = [
      await insertPendingJob(),
      await insertPendingJob(),
      await insertPendingJob(),
    ];
    await env.DB.prepare(
      "UPDATE export_jobs SET status = 'error', error = 'cancelled' WHERE id = ?",
    )
      .bind(gone.id)
      .run();
    const ctx = createExecutionContext();
    const refill = new Refill(ctx, env);
    const left = await refill.submit(endpoint, [
      { id: a.id, delayMs: 0 },
      { id: b.id, delayMs: 50 },
      { id: gone.id, delayMs: 0 },
    ]);
    await waitOnExecutionContext(ctx);
    expect(left).toEqual([]);
    for (const job of [a, b]) {
      expect(await readJob(job.id)).toMatchObject({ status: "processing", attempt: 1 });
      expect((await readJob(job.id))?.runpod_job_id).toBeTruthy();
    }
    expect(await readJob(gone.id)).toMatchObject({ status: "error", attempt: 0 });
    const runs = runCalls(await emulatorRequests(endpoint));
    expect(
      runs.map((r) => (r.body as { input: { export_job_id: string } }).input.export_job_id).sort(),
    ).toEqual([a.id, b.id].sort());
    // No queue message was needed.
    for (const job of [a, b, gone]) expect(await sentMessagesFor(job.id)).toEqual([]);
  });
});
