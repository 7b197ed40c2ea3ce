import { describe, expect, it } from "vitest";
import { z } from "zod";
import app from "../../producer/index.ts";
import { type OpenApiDocument, openApiDocument } from "../../producer/openapi.ts";
import { createExportRequest, JOB_TYPES } from "../../shared/schemas.ts";
import { producerFetch } from "./helpers.ts";

async function fetchDocument(): Promise<OpenApiDocument> {
  const res = await producerFetch("/openapi.json", { token: null });
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/^application\/json/);
  expect(res.headers.get("cache-control")).toBe("public, max-age=300");
  return (await res.json()) as OpenApiDocument;
}

describe("GET /openapi.json", () => {
  // The validator reads its meta-schemas with node:fs, which workerd lacks: test/node/openapi.test.ts
  // validates the document producer/openapi.ts builds, which is the one served here.
  it("answers the OpenAPI 3.1.0 document of producer/openapi.ts without auth", async () => {
    const doc = await fetchDocument();
    expect(doc.openapi).toBe("3.1.0");
    expect(doc).toEqual(JSON.parse(JSON.stringify(openApiDocument(app))));
  });

  it("documents exactly the (method, path) pairs the app serves", async () => {
    const doc = await fetchDocument();
    const served = new Set(
      app.routes
        .filter((route) => route.method !== "ALL")
        .map((route) => `${route.method} ${route.path.replace(/:(\w+)/g, "{$1}")}`),
    );
    const documented = new Set(
      Object.entries(doc.paths).flatMap(([path, item]) =>
        Object.keys(item).map((method) => `${method.toUpperCase()} ${path}`),
      ),
    );
    expect([...documented].sort()).toEqual([...served].sort());
  });

  it("describes auth: bearer tokens on the APIs, none on the signed callbacks", async () => {
    const doc = await fetchDocument();
    expect(doc.components.securitySchemes.apiToken).toMatchObject({
      type: "http",
      scheme: "bearer",
    });
    expect(doc.components.securitySchemes.adminToken).toMatchObject({
      type: "http",
      scheme: "bearer",
    });
    expect(doc.components.securitySchemes.clientToken).toMatchObject({
      type: "http",
      scheme: "bearer",
    });
    expect(doc.components.securitySchemes.downloadUrl).toMatchObject({
      type: "apiKey",
      in: "query",
      name: "sig",
    });
    expect(doc.paths["/exports"]?.post?.security).toEqual([{ apiToken: [] }, { clientToken: [] }]);
    expect(doc.paths["/client-tokens"]?.post?.security).toEqual([{ apiToken: [] }]);
    expect(doc.paths["/exports/{id}/output"]?.get?.security).toEqual([
      { apiToken: [] },
      { clientToken: [] },
      { downloadUrl: [] },
    ]);
    expect(doc.paths["/stats"]?.get?.security).toEqual([{ adminToken: [] }]);
    const webhook = doc.paths["/runpod/webhook/{id}"]?.post;
    expect(webhook?.security).toEqual([]);
    expect(webhook?.parameters?.filter((p) => p.in === "query").map((p) => p.name)).toEqual([
      "attempt",
      "sig",
    ]);
    expect(doc.paths["/openapi.json"]?.get?.security).toEqual([]);
  });

  it("gives POST /exports its real answers, all errors as the Error envelope", async () => {
    const doc = await fetchDocument();
    const create = doc.paths["/exports"]?.post;
    expect(Object.keys(create?.responses ?? {}).sort()).toEqual(
      ["200", "202", "400", "401", "403", "413", "415", "422", "429", "500"].sort(),
    );
    expect(create?.responses["202"]?.headers).toHaveProperty("Location");
    expect(create?.responses["422"]?.description).toContain("input_not_found");
    expect(create?.responses["422"]?.description).toContain("idempotency_key_reused");
    expect(create?.responses["403"]?.description).toContain("project_not_allowed");
    expect(create?.responses["429"]?.description).toContain("quota_exceeded");
    expect(create?.responses["429"]?.description).toContain("rate_limited");
    expect(create?.responses["400"]?.description).toContain("input_key_outside_project");
    expect(create?.responses["400"]?.content?.["application/json"].schema).toEqual({
      $ref: "#/components/schemas/Error",
    });
    expect(create?.parameters?.map((p) => [p.in, p.name])).toEqual([
      ["header", "Idempotency-Key"],
      ["header", "x-d1-bookmark"],
    ]);
  });

  it("has a POST /exports body schema that accepts and rejects as the zod schema does", async () => {
    const doc = await fetchDocument();
    expect(doc.paths["/exports"]?.post?.requestBody?.content["application/json"].schema).toEqual({
      $ref: "#/components/schemas/CreateExportRequest",
    });
    const json = doc.components.schemas.CreateExportRequest;
    if (!json) throw new Error("no CreateExportRequest component");
    const branches = (json.oneOf ?? []).filter((branch) => typeof branch !== "boolean");
    expect(branches.map((branch) => branch.required)).toEqual(
      JOB_TYPES.map(() => ["project_id", "type", "input_video_key", "params"]),
    );
    const types = branches.map((branch) => {
      const type = branch.properties?.type;
      return typeof type === "boolean" ? undefined : type?.const;
    });
    expect(types).toEqual([...JOB_TYPES]);

    // The document's schema, read back by zod's JSON Schema reader, against the route's schema.
    const documented = z.fromJSONSchema(json);
    const valid = {
      project_id: 7,
      type: "overlay",
      input_video_key: "uploads/a.mp4",
      params: { highlight_regions: [{ start_time: 1, end_time: 2, color: "#ff0" }] },
    };
    const samples: Record<string, unknown> = {
      valid,
      framing: {
        project_id: 1,
        type: "framing",
        input_video_key: "a.mp4",
        params: { crop_keyframes: [{ time: 0, x: 0, y: 0, width: 1, height: 1 }] },
      },
      annotate: { ...valid, type: "annotate", params: { annotations: [{ text: "hi" }] } },
      unknownTopLevelKey: { ...valid, extra: true },
      hiddenSegment: { ...valid, input_video_key: "a/.hidden/b.mp4" },
      noProjectId: { ...valid, project_id: undefined },
      projectIdZero: { ...valid, project_id: 0 },
      fractionalProjectId: { ...valid, project_id: 1.5 },
      unknownType: { ...valid, type: "render" },
      paramsOfAnotherType: { ...valid, type: "framing" },
      noRegions: { ...valid, params: { highlight_regions: [] } },
      absoluteKey: { ...valid, input_video_key: "/uploads/a.mp4" },
      dotDotKey: { ...valid, input_video_key: "uploads/../a.mp4" },
      controlCharacterKey: { ...valid, input_video_key: "uploads/a\n.mp4" },
      emptyKey: { ...valid, input_video_key: "" },
    };
    for (const [name, sample] of Object.entries(samples)) {
      const expected = createExportRequest.safeParse(sample).success;
      expect({ name, accepted: documented.safeParse(sample).success }).toEqual({
        name,
        accepted: expected,
      });
    }
    expect(createExportRequest.safeParse(valid).success).toBe(true);
    expect(createExportRequest.safeParse(samples.noProjectId).success).toBe(false);
  });
});
