import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import {
  ADMIN_TOKEN,
  countJobs,
  freshProjectId,
  overlayRequest,
  postJson,
  producerFetch,
  putInput,
  readJob,
  sentMessagesFor,
  waitFor,
} from "./helpers.ts";

async function orphanMessages(): Promise<number> {
  await sentMessagesFor("");
  const row = await env.DB.prepare(
    `SELECT COUNT(*) AS n FROM test_sent_messages
     WHERE json_extract(body, '$.job_id') IS NULL
        OR json_extract(body, '$.job_id') NOT IN (SELECT id FROM export_jobs)`,
  ).first<{ n: number }>();
  return row?.n ?? -1;
}

describe("POST /exports", () => {
  it("accepts a valid request: pending row, Location, and exactly one {job_id} message", async () => {
    const projectId = freshProjectId();
    const key = `uploads/${projectId}/clip one.mp4`;
    await putInput(key);
    const res = await postJson("/exports", overlayRequest(projectId, key));
    expect(res.status).toBe(202);
    const { job } = (await res.json()) as { job: Record<string, unknown> };
    expect(res.headers.get("location")).toBe(`/exports/${job.id}`);
    expect(job).toMatchObject({
      project_id: projectId,
      type: "overlay",
      status: "pending",
      progress: 0,
      retry_count: 0,
      input_video_key: key,
      runpod_job_id: null,
      output_video_key: null,
      params: { highlight_regions: [{ start_time: 1, end_time: 2.5, color: "#ff0" }] },
    });
    const row = await readJob(job.id as string);
    expect(row?.status).toBe("pending");
    const messages = await waitFor(async () => {
      const found = await sentMessagesFor(job.id as string);
      return found.length > 0 ? found : undefined;
    }, "the job's message");
    expect(messages).toEqual([{ job_id: job.id }]);
  });

  it("validates params per type and reports zod's paths", async () => {
    const projectId = freshProjectId();
    const cases: [unknown, (string | number)[]][] = [
      [{ ...overlayRequest(projectId, "a.mp4"), params: {} }, ["params", "highlight_regions"]],
      [
        {
          ...overlayRequest(projectId, "a.mp4"),
          params: { highlight_regions: [{ start_time: 3, end_time: 3 }] },
        },
        ["params", "highlight_regions", 0, "end_time"],
      ],
      [
        {
          project_id: projectId,
          type: "framing",
          input_video_key: "a.mp4",
          params: { crop_keyframes: [{ time: 0, x: 0, y: 0, width: 0, height: 10 }] },
        },
        ["params", "crop_keyframes", 0, "width"],
      ],
      [
        { project_id: projectId, type: "framing", input_video_key: "a.mp4", params: {} },
        ["params", "crop_keyframes"],
      ],
      [
        {
          project_id: projectId,
          type: "annotate",
          input_video_key: "a.mp4",
          params: { annotations: [] },
        },
        ["params", "annotations"],
      ],
      [{ ...overlayRequest(projectId, "a.mp4"), type: "blur" }, ["type"]],
      [{ ...overlayRequest(0, "a.mp4") }, ["project_id"]],
      [{ ...overlayRequest(1.5, "a.mp4") }, ["project_id"]],
      [{ ...overlayRequest(projectId, "/abs/a.mp4") }, ["input_video_key"]],
      [{ ...overlayRequest(projectId, "uploads/../secret.mp4") }, ["input_video_key"]],
      [{ ...overlayRequest(projectId, "x".repeat(1025)) }, ["input_video_key"]],
      [{ ...overlayRequest(projectId, "a.mp4"), params: "nope" }, ["params"]],
    ];
    for (const [body, path] of cases) {
      const res = await postJson("/exports", body);
      expect(res.status, JSON.stringify(body).slice(0, 120)).toBe(400);
      const { error } = (await res.json()) as {
        error: { code: string; issues: { path: (string | number)[] }[] };
      };
      expect(error.code).toBe("invalid_request");
      expect(error.issues.map((issue) => issue.path)).toContainEqual(path);
    }
    expect(await countJobs(projectId)).toBe(0);
  });

  it("accepts every type with extra params keys passed through", async () => {
    const projectId = freshProjectId();
    await putInput("uploads/types.mp4");
    for (const [type, params] of [
      ["framing", { crop_keyframes: [{ time: 0, x: 1, y: 2, width: 3, height: 4 }], fps: 30 }],
      ["annotate", { annotations: [{ text: "goal" }], font: "Inter" }],
    ] as const) {
      const res = await postJson("/exports", {
        project_id: projectId,
        type,
        input_video_key: "uploads/types.mp4",
        params,
      });
      expect(res.status).toBe(202);
      expect(((await res.json()) as { job: { params: unknown } }).job.params).toEqual(params);
    }
    expect(await countJobs(projectId)).toBe(2);
  });

  it("refuses bad requests with a stable code and writes no row and sends no message", async () => {
    const projectId = freshProjectId();
    const key = `uploads/${projectId}/in.mp4`;
    await putInput(key);
    const good = overlayRequest(projectId, key);
    const refusals: [Promise<Response>, number, string][] = [
      [postJson("/exports", good, { token: null }), 401, "unauthorized"],
      [postJson("/exports", good, { token: "wrong" }), 401, "unauthorized"],
      [postJson("/exports", good, { token: ADMIN_TOKEN }), 401, "unauthorized"],
      [
        postJson("/exports", JSON.stringify(good), { headers: { "content-type": "text/plain" } }),
        415,
        "unsupported_media_type",
      ],
      [postJson("/exports", "{not json"), 400, "invalid_json"],
      [
        postJson("/exports", { ...good, params: { ...good.params, pad: "x".repeat(300 * 1024) } }),
        413,
        "payload_too_large",
      ],
      [
        postJson("/exports", overlayRequest(projectId, `uploads/${projectId}/missing.mp4`)),
        422,
        "input_not_found",
      ],
    ];
    for (const [pending, status, code] of refusals) {
      const res = await pending;
      expect(res.status).toBe(status);
      expect(res.headers.get("content-type")).toContain("application/json");
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe(code);
    }
    expect(await countJobs(projectId)).toBe(0);

    // A sentinel request after the refusals: once its message has arrived, every message sent
    // before it has too, and none of them may name a job without a row.
    const res = await postJson("/exports", good);
    const { job } = (await res.json()) as { job: { id: string } };
    await waitFor(
      async () => ((await sentMessagesFor(job.id)).length ? true : undefined),
      "sentinel",
    );
    expect(await countJobs(projectId)).toBe(1);
    expect(await orphanMessages()).toBe(0);
  });
});

describe("GET /exports/{id} and /health", () => {
  it("returns the job with params parsed, 404 otherwise, and health without auth", async () => {
    const projectId = freshProjectId();
    await putInput("uploads/get.mp4");
    const created = await postJson("/exports", overlayRequest(projectId, "uploads/get.mp4"));
    const { job } = (await created.json()) as { job: { id: string } };

    const res = await producerFetch(`/exports/${job.id}`);
    expect(res.status).toBe(200);
    expect(((await res.json()) as { job: unknown }).job).toMatchObject({
      id: job.id,
      params: { highlight_regions: [{ start_time: 1, end_time: 2.5, color: "#ff0" }] },
    });

    const missing = await producerFetch(`/exports/${crypto.randomUUID()}`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: { code: string } }).error.code).toBe("not_found");

    expect((await producerFetch(`/exports/${job.id}`, { token: null })).status).toBe(401);

    const health = await producerFetch("/health", { token: null });
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ ok: true });
  });
});

describe("CORS", () => {
  it("answers the frontend's preflight only when CORS_ORIGIN is set", async () => {
    const preflight = (vars: Record<string, string>) =>
      producerFetch("/exports", {
        method: "OPTIONS",
        token: null,
        vars,
        headers: {
          origin: "https://editor.example",
          "access-control-request-method": "POST",
          "access-control-request-headers": "authorization, content-type, idempotency-key",
        },
      });
    const allowed = await preflight({ CORS_ORIGIN: "https://editor.example" });
    expect(allowed.headers.get("access-control-allow-origin")).toBe("https://editor.example");
    expect(allowed.headers.get("access-control-allow-headers")?.toLowerCase()).toContain(
      "idempotency-key",
    );
    const none = await preflight({});
    expect(none.headers.get("access-control-allow-origin")).toBeNull();
  });
});
