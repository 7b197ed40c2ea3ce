// Requests checked against the served document by a validating OpenAPI library (openapi-backend,
// as a validating proxy in front of the API would): what the API accepts, the document accepts,
// and the limits the API enforces, the document states.

import OpenAPIBackend from "openapi-backend";
import { beforeAll, describe, expect, it } from "vitest";
import app from "../../producer/index.ts";
import { openApiDocument } from "../../producer/openapi.ts";

let api: OpenAPIBackend;

beforeAll(async () => {
  api = new OpenAPIBackend({
    definition: JSON.parse(JSON.stringify(openApiDocument(app))),
    validate: true,
    // quick: no check of the document itself, which this library knows as OpenAPI 3.0 only
    // (test/node/openapi.test.ts validates it as the 3.1 document it is).
    quick: true,
  });
  await api.init();
});

function check(path: string): { valid: boolean; errors: unknown } {
  const url = new URL(path, "https://exports.test");
  const query: Record<string, string | string[]> = {};
  for (const key of new Set(url.searchParams.keys())) {
    const values = url.searchParams.getAll(key);
    query[key] = values.length === 1 ? (values[0] as string) : values;
  }
  const result = api.validateRequest({
    method: "get",
    path: url.pathname,
    query,
    headers: { authorization: "Bearer x" },
  });
  return { valid: result.valid, errors: result.errors };
}

describe("GET /exports through a validating OpenAPI library", () => {
  it("accepts a user's listing, which names no project (user_id instead of project_id)", () => {
    expect(check("/exports?user_id=77&active=true")).toMatchObject({ valid: true });
  });

  it("accepts one or several project_id", () => {
    expect(check("/exports?project_id=1")).toMatchObject({ valid: true });
    expect(check("/exports?project_id=1&project_id=2&limit=20")).toMatchObject({ valid: true });
  });

  it("refuses what the API refuses for a single parameter: limit out of 1..100, a bad active", () => {
    expect(check("/exports?project_id=1&limit=0").valid).toBe(false);
    expect(check("/exports?project_id=1&limit=101").valid).toBe(false);
    expect(check("/exports?project_id=1&active=maybe").valid).toBe(false);
    expect(check("/exports?user_id=0").valid).toBe(false);
  });
});
