// A copy of an R2 object under another key, streamed: outputs can be gigabytes, and a Worker has
// 128 MB of memory. Up to `singlePutMax` bytes, one get streamed into one put; above it, a
// multipart upload of ranged gets, `partBytes` each (R2: parts of 5 MiB to 5 GiB, all but the last
// of one size; a single put takes at most 5 GiB). Every read names the source's ETag, so an object
// replaced mid-copy fails the copy instead of mixing two versions.

export interface CopyOptions {
  singlePutMax?: number;
  partBytes?: number;
  /** The copy's custom metadata, from the source's (default: the source's). */
  customMetadata?: (source: Record<string, string>) => Record<string, string>;
}

const MIB = 1024 * 1024;
export const SINGLE_PUT_MAX = 1024 * MIB;
export const PART_BYTES = 256 * MIB;

/** A stream of exactly `size` bytes from `body`: a body R2's put and uploadPart take. */
function fixedLength(body: ReadableStream, size: number): ReadableStream {
  const { readable, writable } = new FixedLengthStream(size);
  body.pipeTo(writable).catch(() => {
    // The reader (put / uploadPart) fails on a short stream and reports it.
  });
  return readable;
}

/** Copies `from` to `to`; null when there is no object at `from`. */
export async function copyObject(
  bucket: R2Bucket,
  from: string,
  to: string,
  options: CopyOptions = {},
): Promise<R2Object | null> {
  const singlePutMax = options.singlePutMax ?? SINGLE_PUT_MAX;
  const partBytes = options.partBytes ?? PART_BYTES;
  const source = await bucket.head(from);
  if (!source) return null;
  const metadata = {
    httpMetadata: source.httpMetadata,
    customMetadata: (options.customMetadata ?? ((same) => same))(source.customMetadata ?? {}),
  };
  const onlyIf = { etagMatches: source.etag };
  if (source.size <= singlePutMax) {
    const object = await bucket.get(from, { onlyIf });
    if (!object) return null;
    if (!("body" in object)) throw new Error(`${from} changed during the copy`);
    return bucket.put(to, fixedLength(object.body, source.size), metadata);
  }
  const upload = await bucket.createMultipartUpload(to, metadata);
  try {
    const parts: R2UploadedPart[] = [];
    for (let offset = 0, n = 1; offset < source.size; offset += partBytes, n += 1) {
      const length = Math.min(partBytes, source.size - offset);
      const range = await bucket.get(from, { range: { offset, length }, onlyIf });
      if (!range || !("body" in range)) throw new Error(`${from} changed during the copy`);
      parts.push(await upload.uploadPart(n, fixedLength(range.body, length)));
    }
    return await upload.complete(parts);
  } catch (error) {
    await upload.abort().catch(() => undefined);
    throw error;
  }
}
