// The producer's OpenAPI document (of the routes the app mounts) against the OpenAPI 3.1 schema.
// It runs in Node because the validator reads its meta-schemas from disk;
// test/workers/openapi.test.ts checks that the Worker serves this same document and that it
// covers exactly the routes the app registers.

import { Validator } from "@seriousme/openapi-schema-validator";
import { describe, expect, it } from "vitest";
import app from "../../producer/index.ts";
import { openApiDocument } from "../../producer/openapi.ts";

describe("the OpenAPI document", () => {
  // The validator also resolves every $ref (an unknown component is an error).
  it("is a valid OpenAPI 3.1 document", async () => {
    const doc = openApiDocument(app);
    expect(doc.openapi).toBe("3.1.0");
    const result = await new Validator().validate(JSON.parse(JSON.stringify(doc)));
    if (!result.valid) console.error(JSON.stringify(result.errors, null, 2));
    expect(result.valid).toBe(true);
  });
});
