// LOCAL ONLY (scripts/local-r2/wrangler.toml, never deployed): a tiny HTTP front for the local R2
// bucket `reel-ballers-videos`, so the RunPod emulator (a Node process) can do what a real GPU
// handler does through R2's S3 API: read the job's input and write its output.
//
//   GET|HEAD /objects/<key>  → 200 the object (content-type, etag, content-length), 404
//   PUT      /objects/<key>  → 201 {"key","size","etag"}; the body is stored with its content-type
//   GET      /health         → 200
//   POST     /queue/export-jobs  body {"job_id"} → 202: one more message on the local queue (the
//            chaos harness's duplicate deliveries; the producer sends the first)
//
// Keys are the path after /objects/, percent-decoded per segment. It listens on 127.0.0.1 only and
// has no authentication: it is the local stack's, like the emulator.

interface Env {
  VIDEOS: R2Bucket;
  EXPORT_QUEUE: Queue<{ job_id: string }>;
}

const PREFIX = "/objects/";

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

/** The R2 key a request names, or null when it names none (or is not decodable). */
function keyOf(pathname: string): string | null {
  if (!pathname.startsWith(PREFIX)) return null;
  try {
    const key = pathname.slice(PREFIX.length).split("/").map(decodeURIComponent).join("/");
    return key === "" ? null : key;
  } catch {
    return null;
  }
}

export default {
  async fetch(request, env): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname === "/health") return json(200, { ok: true });
    if (url.pathname === "/queue/export-jobs" && request.method === "POST") {
      const body = (await request.json().catch(() => null)) as { job_id?: unknown } | null;
      if (typeof body?.job_id !== "string") return json(400, { error: "body must be {job_id}" });
      await env.EXPORT_QUEUE.send({ job_id: body.job_id });
      return json(202, { sent: body.job_id });
    }
    const key = keyOf(url.pathname);
    if (key === null) return json(404, { error: "not found: use /objects/<key>" });

    if (request.method === "GET" || request.method === "HEAD") {
      const object = await env.VIDEOS.get(key);
      if (!object) return json(404, { error: `no object at ${key}` });
      const headers = new Headers({ etag: object.httpEtag, "content-length": String(object.size) });
      object.writeHttpMetadata(headers);
      return new Response(request.method === "HEAD" ? null : object.body, { headers });
    }
    if (request.method === "PUT") {
      // R2 needs the length up front: a body without Content-Length (chunked) is read whole.
      const body = request.headers.has("content-length")
        ? request.body
        : await request.arrayBuffer();
      const contentType = request.headers.get("content-type") ?? "application/octet-stream";
      // S3's user metadata headers (x-amz-meta-*) become the object's custom metadata, as R2's
      // S3 API stores them.
      const customMetadata: Record<string, string> = {};
      for (const [name, value] of request.headers) {
        if (name.startsWith("x-amz-meta-")) customMetadata[name.slice(11)] = value;
      }
      const stored = await env.VIDEOS.put(key, body, {
        httpMetadata: { contentType },
        customMetadata,
      });
      if (!stored) return json(500, { error: `R2 did not store ${key}` });
      return json(201, { key, size: stored.size, etag: stored.httpEtag });
    }
    return json(405, { error: "method not allowed" });
  },
} satisfies ExportedHandler<Env>;
