import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { MAX_BODY_BYTES } from "../../producer/http.ts";
import {
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

const KiB = 1024;
const MiB = 1024 * KiB;

/** A piece of a streamed body: literal bytes, or `length` copies of one byte. */
type Segment = Uint8Array | { fill: number; length: number };

interface StreamStats {
  /** Bytes the stream's `pull` has handed out so far. */
  pulled: number;
  cancelled: boolean;
}

/**
 * A body with no Content-Length: a pull-based `ReadableStream` producing `segments` in chunks of
 * `chunkSize` bytes, generated lazily so a 64 MiB body costs nothing until someone reads it.
 */
function countingStream(
  segments: Segment[],
  chunkSize: number,
): { stream: ReadableStream<Uint8Array>; stats: StreamStats } {
  const stats: StreamStats = { pulled: 0, cancelled: false };
  const parts = segments.map((s) => (s instanceof Uint8Array ? { bytes: s, length: s.length } : s));
  let index = 0;
  let offset = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      const chunk = new Uint8Array(chunkSize);
      let filled = 0;
      while (filled < chunkSize && index < parts.length) {
        const part = parts[index] as (typeof parts)[number];
        const take = Math.min(chunkSize - filled, part.length - offset);
        if ("bytes" in part) chunk.set(part.bytes.subarray(offset, offset + take), filled);
        else chunk.fill(part.fill, filled, filled + take);
        filled += take;
        offset += take;
        if (offset === part.length) {
          index += 1;
          offset = 0;
        }
      }
      if (filled > 0) {
        stats.pulled += filled;
        controller.enqueue(filled === chunkSize ? chunk : chunk.slice(0, filled));
      }
      if (index >= parts.length) controller.close();
    },
    cancel() {
      stats.cancelled = true;
    },
  });
  return { stream, stats };
}

const encode = (text: string) => new TextEncoder().encode(text);

/**
 * `overlayRequest(projectId, key)` with `params.pad` a string of `padBytes` bytes of "x", as the
 * segments of its JSON text: everything before the pad, the pad, everything after it.
 */
function paddedRequest(projectId: number, key: string, padBytes: number): Segment[] {
  const marker = "@@PAD@@";
  const good = overlayRequest(projectId, key);
  const text = JSON.stringify({ ...good, params: { ...good.params, pad: marker } });
  const [head, tail] = text.split(marker) as [string, string];
  return [encode(head), { fill: "x".charCodeAt(0), length: padBytes }, encode(tail)];
}

const segmentsLength = (segments: Segment[]) => segments.reduce((n, s) => n + s.length, 0);

function postStream(stream: ReadableStream<Uint8Array>, headers: Record<string, string> = {}) {
  return producerFetch("/exports", {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: stream,
    // Needed by runtimes that follow the fetch spec for streamed request bodies.
    duplex: "half",
  } as RequestInit);
}

async function expectTooLarge(res: Response): Promise<void> {
  expect(res.status).toBe(413);
  expect(res.headers.get("content-type")).toContain("application/json");
  expect(((await res.json()) as { error: { code: string } }).error.code).toBe("payload_too_large");
}

/**
 * No row for `projectId`, and no message for a job without a row: a sentinel request is sent
 * after the refusals, and once its message has arrived every earlier message has too.
 */
async function expectNothingWrittenOrSent(projectId: number, key: string): Promise<void> {
  expect(await countJobs(projectId)).toBe(0);
  const res = await postJson("/exports", overlayRequest(projectId, key));
  expect(res.status).toBe(202);
  const { job } = (await res.json()) as { job: { id: string } };
  await waitFor(
    async () => ((await sentMessagesFor(job.id)).length ? true : undefined),
    "sentinel",
  );
  expect(await countJobs(projectId)).toBe(1);
  const orphans = await env.DB.prepare(
    `SELECT COUNT(*) AS n FROM test_sent_messages
     WHERE json_extract(body, '$.job_id') IS NULL
        OR json_extract(body, '$.job_id') NOT IN (SELECT id FROM export_jobs)`,
  ).first<{ n: number }>();
  expect(orphans?.n).toBe(0);
}

describe("POST /exports body size limit", () => {
  it("refuses a 64 MiB chunked body with 413 after reading little more than the limit", async () => {
    const projectId = freshProjectId();
    const key = `uploads/${projectId}/in.mp4`;
    await putInput(key);
    const chunk = 64 * KiB;
    const { stream, stats } = countingStream(paddedRequest(projectId, key, 64 * MiB), chunk);

    await expectTooLarge(await postStream(stream));
    // Before the fix the whole 64 MiB was pulled; now the read stops at the first chunk past the
    // limit and the rest of the stream is cancelled.
    expect(stats.pulled).toBeLessThan(MAX_BODY_BYTES + 2 * chunk);
    expect(stats.cancelled).toBe(true);
    await expectNothingWrittenOrSent(projectId, key);
  });

  it("accepts a valid chunked body of exactly the limit, multi-byte text split across chunks", async () => {
    const projectId = freshProjectId();
    const key = `uploads/${projectId}/in.mp4`;
    await putInput(key);
    const good = overlayRequest(projectId, key);
    // "é" is two bytes in UTF-8; an odd chunk size splits some of them between chunks.
    const skeleton = encode(JSON.stringify({ ...good, params: { ...good.params, pad: "" } }));
    const padChars = Math.floor((MAX_BODY_BYTES - skeleton.length) / 2);
    let pad = "é".repeat(padChars);
    if (skeleton.length + 2 * padChars < MAX_BODY_BYTES) pad += "x";
    const body = encode(JSON.stringify({ ...good, params: { ...good.params, pad } }));
    expect(body.length).toBe(MAX_BODY_BYTES);
    const { stream } = countingStream([body], 4093);

    const res = await postStream(stream);
    expect(res.status).toBe(202);
    const { job } = (await res.json()) as { job: { id: string; params: { pad: string } } };
    expect(job.params.pad).toBe(pad);
    expect((await readJob(job.id))?.status).toBe("pending");
  });

  it("refuses a chunked body one byte over the limit", async () => {
    const projectId = freshProjectId();
    const key = `uploads/${projectId}/in.mp4`;
    await putInput(key);
    const skeleton = paddedRequest(projectId, key, 0);
    const segments = paddedRequest(projectId, key, MAX_BODY_BYTES + 1 - segmentsLength(skeleton));
    expect(segmentsLength(segments)).toBe(MAX_BODY_BYTES + 1);

    await expectTooLarge(await postStream(countingStream(segments, 16 * KiB).stream));
    await expectNothingWrittenOrSent(projectId, key);
  });

  it("refuses a declared Content-Length over the limit without reading the body", async () => {
    const projectId = freshProjectId();
    const key = `uploads/${projectId}/in.mp4`;
    await putInput(key);
    const chunk = 64 * KiB;
    const segments = paddedRequest(projectId, key, 64 * MiB);
    const { stream, stats } = countingStream(segments, chunk);

    const res = await postStream(stream, { "content-length": String(segmentsLength(segments)) });
    await expectTooLarge(res);
    // At most what the stream queued of its own accord before anyone read it.
    expect(stats.pulled).toBeLessThanOrEqual(chunk);

    // And a plain (non-streamed) body over the limit, as a client with a string would send it.
    const good = overlayRequest(projectId, key);
    await expectTooLarge(
      await postJson("/exports", {
        ...good,
        params: { ...good.params, pad: "x".repeat(300 * KiB) },
      }),
    );
    await expectNothingWrittenOrSent(projectId, key);
  });
});
