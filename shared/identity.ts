// What makes two exports identical (GPU seconds, never wasted): the same project, the same input
// object (its key and its R2 ETag), the same type, and the same params as canonical JSON. The
// producer stores the ETag and `paramsHash` with every job; the restore script recomputes the hash
// of an archived job, so nothing else needs to keep it.

import { toHex } from "./signing.ts";

/** JSON with object keys sorted at every level, so equal values serialize equally. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value && typeof value === "object") {
    const entries = Object.entries(value)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/** SHA-256 (hex) of a value's canonical JSON. */
export async function sha256OfJson(value: unknown): Promise<string> {
  const bytes = new TextEncoder().encode(canonicalJson(value));
  return toHex(await crypto.subtle.digest("SHA-256", bytes));
}

/** The part of an export that its output depends on, besides the input object's bytes. */
export interface ExportIdentity {
  type: string;
  input_video_key: string;
  params: Record<string, unknown>;
}

/** `params_hash`: SHA-256 of the canonical JSON of type, input key and params. */
export function paramsHash(job: ExportIdentity): Promise<string> {
  return sha256OfJson({
    type: job.type,
    input_video_key: job.input_video_key,
    params: job.params,
  });
}
