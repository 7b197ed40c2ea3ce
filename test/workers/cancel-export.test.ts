import { describe, expect, it } from "vitest";
import {
  configureEndpoint,
  emulatorOrigin,
  emulatorRequests,
  insertPendingJob,
  postJson,
  processingJob,
  readJob,
  submitEmulatorRun,
  uniqueEndpoint,
} from "./helpers.ts";

const cancel = (id: string, vars: Record<string, string> = {}) =>
  postJson(`/exports/${id}/cancel`, {}, { vars });

describe("POST /exports/{id}/cancel", () => {
  it("cancels a pending job without calling RunPod", async () => {
    const job = await insertPendingJob();
    const res = await cancel(job.id);
    expect(res.status).toBe(200);
    const { job: body } = (await res.json()) as { job: { status: string; error: string } };
    expect(body).toMatchObject({ status: "error", error: "cancelled" });
    expect(await readJob(job.id)).toMatchObject({ status: "error", error: "cancelled" });
  });

  it("cancels a running job and its RunPod run", async () => {
    const endpoint = uniqueEndpoint("cancel");
    await configureEndpoint(endpoint, { runMs: 60_000 });
    const runId = await submitEmulatorRun(endpoint);
    const job = await processingJob({ runId });

    const res = await cancel(job.id, { RUNPOD_ENDPOINT_ID: endpoint });
    expect(res.status).toBe(200);
    expect(await readJob(job.id)).toMatchObject({ status: "error", error: "cancelled" });
    const calls = (await emulatorRequests(endpoint)).filter((r) => r.path.includes("/cancel/"));
    expect(calls.map((c) => c.path)).toEqual([`/v2/${endpoint}/cancel/${runId}`]);
    const state = await fetch(`${emulatorOrigin}/__emulator/jobs/${runId}`);
    expect(((await state.json()) as { status: string }).status).toBe("CANCELLED");
  });

  it("keeps the job cancelled when RunPod's cancel fails", async () => {
    const endpoint = uniqueEndpoint("cancel-404");
    const job = await processingJob({ runId: "run-unknown-to-runpod" });
    const res = await cancel(job.id, { RUNPOD_ENDPOINT_ID: endpoint });
    expect(res.status).toBe(200);
    expect(await readJob(job.id)).toMatchObject({ status: "error", error: "cancelled" });
  });

  it("answers 409 already_finished for terminal jobs and 404 for unknown ones", async () => {
    const job = await insertPendingJob();
    await cancel(job.id);
    const again = await cancel(job.id);
    expect(again.status).toBe(409);
    expect(((await again.json()) as { error: { code: string } }).error.code).toBe(
      "already_finished",
    );
    const missing = await cancel(crypto.randomUUID());
    expect(missing.status).toBe(404);
    expect((await postJson(`/exports/${job.id}/cancel`, {}, { token: null })).status).toBe(401);
  });
});
