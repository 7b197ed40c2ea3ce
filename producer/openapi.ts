// The OpenAPI 3.1 document of the producer, generated from the routes the app mounts (their
// createRoute declarations). The named schemas (producer/api-schemas.ts) are written by zod's own
// JSON Schema generator, which says more than the library's (a literal is a `const`; r2Key's
// rules are a pattern), under the same names the paths refer to.

import type { OpenAPIHono } from "@hono/zod-openapi";
import { z } from "zod";
import { r2Key } from "../shared/schemas.ts";
import { components } from "./api-schemas.ts";
import { BOOKMARK_HEADER } from "./d1-session.ts";
import type { AppEnv } from "./http.ts";

type JsonSchema = z.core.JSONSchema.BaseSchema;

export interface OpenApiDocument {
  openapi: "3.1.0";
  info: { title: string; version: string; description: string };
  tags: { name: string; description: string }[];
  paths: Record<string, Record<string, Operation>>;
  components: {
    securitySchemes: Record<
      string,
      | { type: "http"; scheme: "bearer"; description: string }
      | { type: "apiKey"; in: "query"; name: string; description: string }
    >;
    schemas: Record<string, JsonSchema>;
  };
}
interface Parameter {
  name: string;
  in: "path" | "query" | "header";
  required?: boolean;
  description?: string;
  schema: JsonSchema;
}
interface Operation {
  operationId: string;
  summary: string;
  tags: string[];
  security: Record<string, string[]>[];
  parameters?: Parameter[];
  requestBody?: { content: { "application/json": { schema: JsonSchema } } };
  responses: Record<
    string,
    {
      description: string;
      headers?: Record<string, unknown>;
      content?: { "application/json": { schema: JsonSchema } };
    }
  >;
}

const JSON_SCHEMA_OPTIONS = {
  target: "draft-2020-12",
  io: "input",
  unrepresentable: "any",
  override: ({ zodSchema, jsonSchema }) => {
    // r2Key's refinements: the same rules as a pattern, and a bound its byte limit implies.
    if (zodSchema === r2Key) {
      jsonSchema.pattern = "^(?!/)(?!(?:.*/)?\\.\\.?(?:/|$))[^\\u0000-\\u001f\\u007f]*$";
      jsonSchema.maxLength = 1024;
      jsonSchema.description =
        "A relative R2 key: no leading '/', no '.' or '..' segment, no control characters, " +
        "at most 1024 UTF-8 bytes.";
    }
  },
} satisfies z.core.ToJSONSchemaParams;

/** The named schemas as zod writes them, each a component the others refer to by $ref. */
function componentSchemas(): Record<string, JsonSchema> {
  const registry = z.registry<{ id: string }>();
  for (const [id, { schema }] of components()) registry.add(schema, { id });
  const { schemas } = z.toJSONSchema(registry, {
    ...JSON_SCHEMA_OPTIONS,
    uri: (id) => `#/components/schemas/${id}`,
  });
  if ("__shared" in schemas) throw new Error("a schema needs $defs; name it with component()");
  const out: Record<string, JsonSchema> = {};
  for (const [id, { $schema: _dialect, $id: _id, ...rest }] of Object.entries(schemas)) {
    const note = components().get(id)?.note;
    out[id] = { ...rest, ...(note ? { description: note } : {}) };
  }
  return out;
}

function build(app: OpenAPIHono<AppEnv>): OpenApiDocument {
  const generated = app.getOpenAPI31Document({
    openapi: "3.1.0",
    info: {
      title: "reel-exports producer",
      version: "0.1.0",
      description:
        "Export jobs for the frontend (bearer API_TOKEN, or a scoped client token in a browser), " +
        "RunPod's callbacks (signed URLs) and the operators' routes (bearer ADMIN_TOKEN). Every " +
        "error is the `Error` envelope.",
    },
    tags: [
      {
        name: "exports",
        description: "The frontend's export jobs (API_TOKEN, or a scoped client token)",
      },
      {
        name: "runpod",
        description:
          "RunPod's callbacks; no bearer token: `attempt` and its HMAC `sig` in the query " +
          "authenticate the call",
      },
      {
        name: "live",
        description:
          "Live status: a signed ticket (either token), then a WebSocket of the ticket's jobs",
      },
      { name: "operators", description: "Dead letters, stats and listings (ADMIN_TOKEN)" },
      { name: "meta", description: "No auth" },
    ],
  });
  const document = JSON.parse(JSON.stringify(generated)) as OpenApiDocument;
  addBookmarks(document);
  document.components = {
    securitySchemes: {
      apiToken: {
        type: "http",
        scheme: "bearer",
        description: "The frontend's token: the Worker's API_TOKEN secret",
      },
      adminToken: {
        type: "http",
        scheme: "bearer",
        description: "The operators' token: the Worker's ADMIN_TOKEN secret",
      },
      clientToken: {
        type: "http",
        scheme: "bearer",
        description:
          "A scoped client token of POST /client-tokens, for a browser: the frontend's routes " +
          "for the projects it names, until it expires",
      },
      downloadUrl: {
        type: "apiKey",
        in: "query",
        name: "sig",
        description:
          "The signature of a download URL (POST /exports/{id}/download-url): `expires`, `kid` " +
          "and `sig` in the query, no bearer",
      },
    },
    schemas: { ...document.components?.schemas, ...componentSchemas() },
  };
  return document;
}

/**
 * D1 sessions (producer/d1-session.ts) wrap every route that reads D1 (those whose 400 answers
 * carry `invalid_bookmark`): each takes an optional `x-d1-bookmark` and its successful answers
 * return one. Added here, in one place, rather than in every createRoute.
 */
function addBookmarks(document: OpenApiDocument): void {
  for (const operations of Object.values(document.paths)) {
    for (const operation of Object.values(operations)) {
      if (!operation.responses["400"]?.description.includes("`invalid_bookmark`")) continue;
      operation.parameters = [
        ...(operation.parameters ?? []),
        {
          name: BOOKMARK_HEADER,
          in: "header",
          required: false,
          description:
            "A bookmark from an earlier answer: this request reads D1 at least as new as that " +
            "answer (read your own writes across replicas)",
          schema: { type: "string", pattern: "^[0-9a-fA-F-]{1,256}$" },
        },
      ];
      for (const [status, response] of Object.entries(operation.responses)) {
        if (!status.startsWith("2")) continue;
        response.headers = {
          ...response.headers,
          [BOOKMARK_HEADER]: {
            description: "The D1 session's bookmark after this request: send it back to read it",
            schema: { type: "string" },
          },
        };
      }
    }
  }
}

const built = new WeakMap<object, OpenApiDocument>();

/** The document of `app`'s routes, built on first use and shared afterwards (do not mutate it). */
export function openApiDocument(app: OpenAPIHono<AppEnv>): OpenApiDocument {
  let document = built.get(app);
  if (!document) {
    document = build(app);
    built.set(app, document);
  }
  return document;
}
