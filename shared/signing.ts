// RunPod signs nothing, so the webhook and progress URLs carry their own proof:
// sig = lowercase hex HMAC-SHA256(WEBHOOK_SECRET, "<kind>:<job id>:<attempt>"), kind "webhook" or
// "progress". Distinct messages: the GPU handler, which sees progress_url, cannot sign a webhook.
// Everything else the producer signs (client tokens, download URLs, live tickets) uses keys
// derived from the secret (shared/keys.ts). Verification accepts WEBHOOK_SECRET_PREVIOUS too.

const encoder = new TextEncoder();

/** Lowercase hex of bytes (signatures, digests). */
export function toHex(bytes: ArrayBuffer): string {
  return [...new Uint8Array(bytes)].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

// Imported once per isolate and secret, not once per job of a batch or per webhook.
const keys = new Map<string, Promise<CryptoKey>>();

function hmacKey(secret: string, usage: "sign" | "verify"): Promise<CryptoKey> {
  if (!secret) throw new Error("WEBHOOK_SECRET is not set");
  const cacheKey = `${usage}:${secret}`;
  let key = keys.get(cacheKey);
  if (!key) {
    key = crypto.subtle.importKey(
      "raw",
      encoder.encode(secret),
      { name: "HMAC", hash: "SHA-256" },
      false,
      [usage],
    );
    keys.set(cacheKey, key);
  }
  return key;
}

/** Lowercase hex HMAC-SHA256 of `text` keyed with `secret`. */
export async function signText(secret: string, text: string): Promise<string> {
  return toHex(
    await crypto.subtle.sign("HMAC", await hmacKey(secret, "sign"), encoder.encode(text)),
  );
}

/**
 * Constant-time check of a lowercase hex HMAC-SHA256 of `text` under `key` (crypto.subtle.verify
 * compares in constant time).
 */
export async function verifyHex(key: CryptoKey, text: string, sig: string): Promise<boolean> {
  if (!/^[0-9a-f]{64}$/.test(sig)) return false;
  const bytes = new Uint8Array(32);
  for (let i = 0; i < 32; i++) bytes[i] = Number.parseInt(sig.slice(i * 2, i * 2 + 2), 16);
  return crypto.subtle.verify("HMAC", key, bytes, encoder.encode(text));
}

/** Constant-time check of a `signText` signature. */
export async function verifyText(secret: string, text: string, sig: string): Promise<boolean> {
  return verifyHex(await hmacKey(secret, "verify"), text, sig);
}

export type SignedUrlKind = "webhook" | "progress";

const message = (kind: SignedUrlKind, jobId: string, attempt: number) =>
  `${kind}:${jobId}:${attempt}`;

export function signAttempt(
  secret: string,
  kind: SignedUrlKind,
  jobId: string,
  attempt: number,
): Promise<string> {
  return signText(secret, message(kind, jobId, attempt));
}

/**
 * Whether `sig` signs this kind, job and attempt under one of `secrets` (WEBHOOK_SECRET, then
 * WEBHOOK_SECRET_PREVIOUS while it is set: a run submitted before a rotation keeps calling back).
 */
export async function verifyAttempt(
  secrets: readonly (string | undefined)[],
  kind: SignedUrlKind,
  jobId: string,
  attempt: number,
  sig: string,
): Promise<boolean> {
  for (const secret of secrets) {
    if (secret && (await verifyText(secret, message(kind, jobId, attempt), sig))) return true;
  }
  return false;
}

/** The signed webhook and progress URLs of one attempt of a job. */
export async function attemptUrls(
  publicUrl: string,
  secret: string,
  jobId: string,
  attempt: number,
): Promise<{ webhook: string; progress: string }> {
  const query = async (kind: SignedUrlKind) =>
    `attempt=${attempt}&sig=${await signAttempt(secret, kind, jobId, attempt)}`;
  const id = encodeURIComponent(jobId);
  return {
    webhook: `${publicUrl}/runpod/webhook/${id}?${await query("webhook")}`,
    progress: `${publicUrl}/runpod/progress/${id}?${await query("progress")}`,
  };
}
