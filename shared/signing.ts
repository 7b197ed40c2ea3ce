// RunPod signs nothing, so the webhook and progress URLs carry their own proof:
// sig = lowercase hex HMAC-SHA256(WEBHOOK_SECRET, "<kind>:<job id>:<attempt>"), kind "webhook" or
// "progress". Distinct messages: the GPU handler, which sees progress_url, cannot sign a webhook.
// Live-status tickets (shared/live-ticket.ts) sign "live:<payload>" with the same key.

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

/** Constant-time check of a `signText` signature (crypto.subtle.verify compares in constant time). */
export async function verifyText(secret: string, text: string, sig: string): Promise<boolean> {
  if (!/^[0-9a-f]{64}$/.test(sig)) return false;
  const bytes = new Uint8Array(32);
  for (let i = 0; i < 32; i++) bytes[i] = Number.parseInt(sig.slice(i * 2, i * 2 + 2), 16);
  return crypto.subtle.verify("HMAC", await hmacKey(secret, "verify"), bytes, encoder.encode(text));
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

export function verifyAttempt(
  secret: string,
  kind: SignedUrlKind,
  jobId: string,
  attempt: number,
  sig: string,
): Promise<boolean> {
  return verifyText(secret, message(kind, jobId, attempt), sig);
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
