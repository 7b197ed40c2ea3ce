// `GET /exports/{id}/output`: the finished export's file, streamed from R2, with byte ranges
// (206, 416) and conditional requests (ETag / If-None-Match → 304), so players can seek and
// browsers can cache. An archived job's output key comes from its archive (shared/archive.ts): the
// object is served for as long as it exists.
import { createRoute, type RouteHandler, z } from "@hono/zod-openapi";
import { findJob } from "../../shared/archive.ts";
import { auth, errorReplies, jobIdParams, projectsOf, queryParam } from "../api.ts";
import { type AppEnv, apiError } from "../http.ts";

/** A signed download URL's query (checked by the route's auth, before anything else). */
const downloadQuery = z.object({
  expires: queryParam(
    z
      .string()
      .optional()
      .openapi({ description: "signed URL: its expiry, seconds since the epoch" }),
  ),
  kid: queryParam(z.string().optional().openapi({ description: "signed URL: its key id" })),
  sig: queryParam(
    z.string().optional().openapi({ description: "signed URL: its signature (no bearer needed)" }),
  ),
});

export const getExportOutputRoute = createRoute({
  method: "get",
  path: "/exports/{id}/output",
  operationId: "getExportOutput",
  summary:
    "Download a complete job's output from R2 (Range → 206, If-None-Match → 304; " +
    "Content-Type, Content-Length, ETag, Accept-Ranges: bytes), with a bearer token or as the " +
    "signed URL of POST /exports/{id}/download-url (`expires`, `kid`, `sig`; no bearer)",
  tags: ["exports"],
  ...auth("download"),
  request: { params: jobIdParams, query: downloadQuery },
  responses: {
    200: { description: "the file (video/mp4 unless R2 says otherwise)" },
    206: { description: "the requested byte range, with Content-Range" },
    304: { description: "the client's copy (If-None-Match) is current" },
    ...errorReplies("download", {
      404: ["not_found", "output_missing"],
      409: ["not_complete"],
      416: ["range_not_satisfiable"],
    }),
  },
});

type ByteRange = { offset: number; length: number } | "unsatisfiable" | null;

/** One `bytes=` range of RFC 9110 against an object of `size` bytes; null: serve it whole. */
export function parseRange(header: string | undefined, size: number): ByteRange {
  if (!header) return null;
  if (size === 0) return /^bytes=\d*-\d*$/.test(header.trim()) ? "unsatisfiable" : null;
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match) return null; // several ranges or another unit: the whole object, as RFC 9110 allows
  const [, first, last] = match;
  if (first === "" && last === "") return null;
  if (first === "") {
    const suffix = Number(last);
    if (suffix === 0) return "unsatisfiable";
    return { offset: Math.max(0, size - suffix), length: Math.min(suffix, size) };
  }
  const start = Number(first);
  const end = last === "" ? size - 1 : Math.min(Number(last), size - 1);
  if (start >= size || end < start) return "unsatisfiable";
  return { offset: start, length: end - start + 1 };
}

function etagMatches(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  if (header.trim() === "*") return true;
  const bare = (tag: string) => tag.trim().replace(/^W\//, "");
  return header.split(",").some((tag) => bare(tag) === bare(etag));
}

export const getExportOutput: RouteHandler<typeof getExportOutputRoute, AppEnv> = async (c) => {
  const { id } = c.req.valid("param");
  // A signed URL names its job; a bearer sees its projects' jobs.
  const job = await findJob(c.env.DB, c.env.VIDEOS, id, c.var.primaryDb, projectsOf(c));
  if (!job) return apiError(c, 404, "not_found", "no such export job");
  if (job.status !== "complete" || !job.output_video_key) {
    return apiError(c, 409, "not_complete", `the job is ${job.status}; there is no output yet`);
  }
  const key = job.output_video_key;
  const head = await c.env.VIDEOS.head(key);
  if (!head) return apiError(c, 404, "output_missing", `no object at ${key} any more`);

  const headers = new Headers({
    "Accept-Ranges": "bytes",
    ETag: head.httpEtag,
    "Content-Type": head.httpMetadata?.contentType ?? "video/mp4",
    "Cache-Control": "private, max-age=3600",
  });
  // A signed download URL is for saving the file: a link to it downloads even across origins
  // (a <video> plays it all the same).
  if (c.get("token") === "DOWNLOAD_URL") {
    const name = key.slice(key.lastIndexOf("/") + 1).replace(/[^\w.-]/g, "_") || "export.mp4";
    headers.set("Content-Disposition", `attachment; filename="${name}"`);
  }
  if (etagMatches(c.req.header("if-none-match"), head.httpEtag)) {
    return new Response(null, { status: 304, headers });
  }
  const range = parseRange(c.req.header("range"), head.size);
  if (range === "unsatisfiable") {
    c.header("Content-Range", `bytes */${head.size}`);
    return apiError(c, 416, "range_not_satisfiable", `the object has ${head.size} bytes`);
  }
  const object = await c.env.VIDEOS.get(key, range ? { range } : {});
  if (!object) return apiError(c, 404, "output_missing", `no object at ${key} any more`);
  if (range) {
    headers.set(
      "Content-Range",
      `bytes ${range.offset}-${range.offset + range.length - 1}/${head.size}`,
    );
    headers.set("Content-Length", String(range.length));
    return new Response(object.body, { status: 206, headers });
  }
  headers.set("Content-Length", String(head.size));
  return new Response(object.body, { status: 200, headers });
};
