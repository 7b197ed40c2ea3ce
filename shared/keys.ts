// The keys of what the producer signs for browsers: client tokens, download URLs and live tickets.
// Each purpose has its own HMAC-SHA256 key, derived from WEBHOOK_SECRET with HKDF-SHA256 (RFC 5869)
// under its own label, so a signature of one purpose never verifies as another and the secret
// itself signs nothing a browser sees. Each key has a key id (`kid`, 8 hex characters, an HMAC
// of the label under the key: it says which secret signed, and reveals nothing of it), carried by
// what it signs. Verification accepts the key of WEBHOOK_SECRET and, while it is set, that of
// WEBHOOK_SECRET_PREVIOUS: a rotation keeps every token, ticket and URL minted before it good
// until it expires. (RunPod's callback URLs keep their signature with the secret itself:
// shared/signing.ts.)

import { decodeBase64Url, encodeBase64Url } from "./base64url.ts";
import { toHex, verifyHex } from "./signing.ts";

export type KeyPurpose = "client-token" | "download-url" | "live-ticket";

const LABELS: Record<KeyPurpose, string> = {
  "client-token": "reel-exports client-token v1",
  "download-url": "reel-exports download-url v1",
  "live-ticket": "reel-exports live-ticket v1",
};
const SALT = new TextEncoder().encode("reel-exports");
const encoder = new TextEncoder();

export interface SigningKey {
  kid: string;
  key: CryptoKey;
}

/** The secrets a Worker verifies with: the current one first. */
export interface Secrets {
  WEBHOOK_SECRET?: string | undefined;
  WEBHOOK_SECRET_PREVIOUS?: string | undefined;
}

// Derived once per isolate, secret and purpose.
const derived = new Map<string, Promise<SigningKey>>();

async function derive(secret: string, purpose: KeyPurpose): Promise<SigningKey> {
  const base = await crypto.subtle.importKey("raw", encoder.encode(secret), "HKDF", false, [
    "deriveKey",
  ]);
  const info = encoder.encode(LABELS[purpose]);
  const key = await crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: SALT, info },
    base,
    { name: "HMAC", hash: "SHA-256", length: 256 },
    false,
    ["sign", "verify"],
  );
  const kid = toHex(await crypto.subtle.sign("HMAC", key, encoder.encode("key id"))).slice(0, 8);
  return { kid, key };
}

function keyOf(secret: string, purpose: KeyPurpose): Promise<SigningKey> {
  const cacheKey = `${purpose}\u0000${secret}`;
  let key = derived.get(cacheKey);
  if (!key) {
    key = derive(secret, purpose);
    derived.set(cacheKey, key);
  }
  return key;
}

/** What signs `purpose` now (WEBHOOK_SECRET's key); null when the secret is not set. */
export function signingKey(env: Secrets, purpose: KeyPurpose): Promise<SigningKey> | null {
  return env.WEBHOOK_SECRET ? keyOf(env.WEBHOOK_SECRET, purpose) : null;
}

/** The key named `kid` among the current and the previous secret's; null for any other. */
export async function verifyingKey(
  env: Secrets,
  purpose: KeyPurpose,
  kid: string,
): Promise<SigningKey | null> {
  for (const secret of [env.WEBHOOK_SECRET, env.WEBHOOK_SECRET_PREVIOUS]) {
    if (!secret) continue;
    const key = await keyOf(secret, purpose);
    if (key.kid === kid) return key;
  }
  return null;
}

/** Lowercase hex HMAC-SHA256 of `text` under `key`. */
export async function signWith(key: SigningKey, text: string): Promise<string> {
  return toHex(await crypto.subtle.sign("HMAC", key.key, encoder.encode(text)));
}

/** Constant-time check of a `signWith` signature. */
export function verifyWith(key: SigningKey, text: string, sig: string): Promise<boolean> {
  return verifyHex(key.key, text, sig);
}

/** `<kid>.<base64url JSON>.<hex sig>`: the shape of client tokens and live tickets. */
const SIGNED = /^([0-9a-f]{8})\.([A-Za-z0-9_-]+)\.([0-9a-f]{64})$/;

/** A signed, self-describing value: `payload` (JSON) under `purpose`'s current key. */
export async function mintSigned(key: SigningKey, payload: unknown): Promise<string> {
  const body = encodeBase64Url(JSON.stringify(payload));
  const head = `${key.kid}.${body}`;
  return `${head}.${await signWith(key, head)}`;
}

/**
 * The payload of a `mintSigned` value, or null when it is malformed, longer than `maxChars`, or
 * signed by no key this Worker verifies with. The caller checks the payload's shape and expiry.
 */
export async function readSigned(
  env: Secrets,
  purpose: KeyPurpose,
  text: string,
  maxChars: number,
): Promise<unknown> {
  if (text.length > maxChars) return null;
  const match = SIGNED.exec(text);
  if (!match) return null;
  const [, kid = "", body = "", sig = ""] = match;
  const key = await verifyingKey(env, purpose, kid);
  if (!key || !(await verifyWith(key, `${kid}.${body}`, sig))) return null;
  try {
    return JSON.parse(decodeBase64Url(body));
  } catch {
    return null;
  }
}
