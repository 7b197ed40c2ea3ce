// POST /exports/batch: all or nothing, one queue sendBatch, items' idempotency keys as the header,
// quotas counting every item (the whole batch refused), scoped tokens, inputs checked.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { Job } from "../../shared/sql/jobs/row.ts";
import {
  countJobs,
  freshProjectId,
  freshUserId,
  overlayRequest,
  postJson,
  putInput,
  sentMessagesFor,
  spyQueue,
  waitFor,
} from "./helpers.ts";

async function item(projectId: number, extra: Record<string, unknown> = {}) {
  const key = `uploads/${projectId}/batch.mp4`;
  await putInput(key);
  return {
    ...overlayRequest(projectId, key),
    params: { highlight_regions: [{ start_time: 0, end_time: 1, n: crypto.randomUUID() }] },
    ...extra,
  };
}

interface ErrorBody {
  error: { code: string; issues?: { path: (string | number)[] }[] };
}

describe("POST /exports/batch", () => {
  it("creates every item in order, with one sendBatch, and a repeat with the same keys answers the same jobs", async () => {
    const [a, b] = [freshProjectId(), freshProjectId()];
    const items = [
      await item(a, { idempotency_key: "clip-1" }),
      await item(b, { priority: "batch" }),
      await item(a, { idempotency_key: "clip-2" }),
    ];
    const spy = spyQueue();
    const res = await postJson(
      "/exports/batch",
      { exports: items },
      { bindings: { EXPORT_QUEUE: spy.queue } },
    );
    expect(res.status).toBe(202);
    const { jobs } = (await res.json()) as { jobs: Job[] };
    expect(jobs.map((job) => [job.project_id, job.status])).toEqual([
      [a, "pending"],
      [b, "pending"],
      [a, "pending"],
    ]);
    expect(jobs[1]?.priority).toBe("batch");
    // One sendBatch with the three messages.
    expect(spy.sent).toEqual([{ jobIds: jobs.map((job) => job.id), delaySeconds: undefined }]);
    for (const job of jobs) {
      await waitFor(
        async () => ((await sentMessagesFor(job.id)).length > 0 ? true : undefined),
        "its message",
      );
    }

    // The same batch again: the keyed items answer their jobs, the unkeyed one is new.
    const again = await postJson("/exports/batch", { exports: items });
    expect(again.status).toBe(202);
    const repeated = ((await again.json()) as { jobs: Job[] }).jobs;
    expect(repeated[0]?.id).toBe(jobs[0]?.id);
    expect(repeated[2]?.id).toBe(jobs[2]?.id);
    expect(repeated[1]?.id).not.toBe(jobs[1]?.id);
    expect(await countJobs(a)).toBe(2);
    expect((await sentMessagesFor(jobs[0]?.id as string)).length).toBe(1);

    // A key with another body refuses the whole batch.
    const other = await postJson("/exports/batch", {
      exports: [await item(b), { ...(await item(a)), idempotency_key: "clip-1" }],
    });
    expect(other.status).toBe(422);
    const body = (await other.json()) as ErrorBody;
    expect(body.error.code).toBe("idempotency_key_reused");
    expect(body.error.issues?.[0]?.path).toEqual(["exports", 1, "idempotency_key"]);
    expect(await countJobs(b)).toBe(2);
  });

  it("refuses the whole batch for one invalid item, naming its path, and writes and sends nothing", async () => {
    const projectId = freshProjectId();
    const good = await item(projectId);
    const bad = { ...(await item(projectId)), params: { highlight_regions: [] } };
    const spy = spyQueue();
    const res = await postJson(
      "/exports/batch",
      { exports: [good, good, good, bad] },
      { bindings: { EXPORT_QUEUE: spy.queue } },
    );
    expect(res.status).toBe(400);
    const body = (await res.json()) as ErrorBody;
    expect(body.error.code).toBe("invalid_request");
    expect(body.error.issues?.map((issue) => issue.path.slice(0, 4))).toEqual([
      ["exports", 3, "params", "highlight_regions"],
    ]);
    expect(await countJobs(projectId)).toBe(0);
    expect(spy.sent).toEqual([]);

    // Duplicate keys inside one batch, a missing input, an empty batch, more than 100.
    const dup = await postJson("/exports/batch", {
      exports: [
        { ...good, idempotency_key: "same" },
        { ...good, idempotency_key: "same" },
      ],
    });
    expect(dup.status).toBe(400);
    expect(((await dup.json()) as ErrorBody).error.issues?.[0]?.path).toEqual([
      "exports",
      1,
      "idempotency_key",
    ]);
    const twice = await postJson("/exports/batch", {
      exports: [
        { ...good, supersede_key: "clip" },
        { ...good, supersede_key: "clip" },
      ],
    });
    expect(twice.status).toBe(400);
    expect(((await twice.json()) as ErrorBody).error.issues?.[0]?.path).toEqual([
      "exports",
      1,
      "supersede_key",
    ]);
    const missing = await postJson("/exports/batch", {
      exports: [good, { ...good, input_video_key: `uploads/${projectId}/nope.mp4` }],
    });
    expect(missing.status).toBe(422);
    const missingBody = (await missing.json()) as ErrorBody;
    expect(missingBody.error.code).toBe("input_not_found");
    expect(missingBody.error.issues?.[0]?.path).toEqual(["exports", 1, "input_video_key"]);
    expect((await postJson("/exports/batch", { exports: [] })).status).toBe(400);
    const tooMany = await postJson("/exports/batch", {
      exports: Array.from({ length: 101 }, () => good),
    });
    expect(tooMany.status).toBe(400);
    expect(((await tooMany.json()) as ErrorBody).error.issues?.[0]?.path).toEqual(["exports"]);
    expect(await countJobs(projectId)).toBe(0);
  });

  it("counts every item against the quota and refuses a batch that would pass it, whole", async () => {
    const projectId = freshProjectId();
    const userId = freshUserId();
    const vars = { MAX_ACTIVE_PER_USER: "3" };
    const mine = await item(projectId, { user_id: userId });
    const first = await postJson("/exports/batch", { exports: [mine, mine] }, { vars });
    expect(first.status).toBe(202);
    // Two active; two more would make four: refused, nothing written.
    const refused = await postJson("/exports/batch", { exports: [mine, mine] }, { vars });
    expect(refused.status).toBe(429);
    expect(refused.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(((await refused.json()) as ErrorBody).error.code).toBe("quota_exceeded");
    expect(await countJobs(projectId)).toBe(2);
    const row = await env.DB.prepare("SELECT n FROM active_jobs WHERE fair_key = ?")
      .bind(`user:${userId}`)
      .first<{ n: number }>();
    expect(row?.n).toBe(2);
    // Another user's item in the same batch does not make it pass.
    const mixed = await postJson(
      "/exports/batch",
      { exports: [await item(projectId, { user_id: freshUserId() }), mine, mine] },
      { vars },
    );
    expect(mixed.status).toBe(429);
    expect(await countJobs(projectId)).toBe(2);
    // One more fits.
    expect((await postJson("/exports/batch", { exports: [mine] }, { vars })).status).toBe(202);
    expect(await countJobs(projectId)).toBe(3);
  });

  it("with a scoped token: its projects only (403 for the whole batch), as its user", async () => {
    const [mine, theirs] = [freshProjectId(), freshProjectId()];
    const userId = freshUserId();
    const tokenRes = await postJson("/client-tokens", { project_ids: [mine], user_id: userId });
    const { token } = (await tokenRes.json()) as { token: string };
    const refused = await postJson(
      "/exports/batch",
      { exports: [await item(mine), await item(theirs)] },
      { token },
    );
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as ErrorBody).error.code).toBe("project_not_allowed");
    expect(await countJobs(mine)).toBe(0);
    const ok = await postJson(
      "/exports/batch",
      { exports: [await item(mine), await item(mine)] },
      { token },
    );
    expect(ok.status).toBe(202);
    const { jobs } = (await ok.json()) as { jobs: Job[] };
    expect(jobs.map((job) => job.user_id)).toEqual([userId, userId]);
  });
});
