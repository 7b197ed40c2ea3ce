// Signed download URLs: `POST /exports/{id}/download-url` hands out
// `<origin>/exports/<id>/output?expires=<unix s>&kid=<kid>&sig=<hex>`, where sig is the lowercase
// hex HMAC-SHA256 of "<id>:<expires>" under the `download-url` key derived from WEBHOOK_SECRET
// (shared/keys.ts). The URL needs no bearer: a browser's <video> or <a download> fetches the bytes
// from the edge directly. Good until `expires`, under the current secret or the previous one.
import { type Secrets, type SigningKey, signWith, verifyingKey, verifyWith } from "./keys.ts";

const signed = (jobId: string, expires: number) => `${jobId}:${expires}`;

/** The query (`expires`, `kid`, `sig`) of `jobId`'s download URL, good until `expiresAt` (ms). */
export async function downloadQuery(
  key: SigningKey,
  jobId: string,
  expiresAt: number,
): Promise<string> {
  const expires = Math.floor(expiresAt / 1000);
  const sig = await signWith(key, signed(jobId, expires));
  return `expires=${expires}&kid=${key.kid}&sig=${sig}`;
}

/**
 * Whether `query` (the URL's `expires`, `kid`, `sig`) is a valid, unexpired signature of
 * `jobId`'s download at `now` (ms). Malformed values of any length are simply not valid.
 */
export async function verifyDownload(
  env: Secrets,
  jobId: string,
  query: { expires?: string | undefined; kid?: string | undefined; sig?: string | undefined },
  now: number,
): Promise<boolean> {
  const { expires = "", kid = "", sig = "" } = query;
  if (!/^\d{1,12}$/.test(expires) || !/^[0-9a-f]{8}$/.test(kid)) return false;
  if (Number(expires) * 1000 <= now) return false;
  const key = await verifyingKey(env, "download-url", kid);
  return key !== null && (await verifyWith(key, signed(jobId, Number(expires)), sig));
}
