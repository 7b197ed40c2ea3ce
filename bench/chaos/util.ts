// Small helpers of the chaos harness: time, seeded randomness, counters, bounded concurrency.

export { pause, prng, sleep, stripAnsi } from "../support.ts";

/** A stable number in [0, 1) for `text` (FNV-1a), to pick a share of jobs without state. */
export function unitHash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h / 4294967296;
}

export type Counts = Record<string, number>;

export const bump = (counts: Counts, key: string, by = 1) => {
  counts[key] = (counts[key] ?? 0) + by;
};

export const total = (counts: Counts) => Object.values(counts).reduce((a, b) => a + b, 0);

/** `a: 1, b: 2`, keys sorted; "none" when empty. */
export const showCounts = (counts: Counts) =>
  Object.keys(counts).length === 0
    ? "none"
    : Object.entries(counts)
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([key, n]) => `${key}: ${n}`)
        .join(", ");

export const secs = (ms: number | null) => (ms === null ? "—" : `${(ms / 1000).toFixed(1)} s`);

export const pct = (part: number, whole: number) =>
  whole === 0 ? "—" : `${((100 * part) / whole).toFixed(1)} %`;

/** Runs `fn` over `items`, at most `limit` at once; resolves when all are done. */
export async function forEachBounded<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      await fn(items[index] as T, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** D1's text timestamps ("2026-11-24 10:30:00.123", UTC) as epoch ms. */
export const sqlMs = (text: string) => Date.parse(`${text.replace(" ", "T")}Z`);

/** A failure's text without what differs per job (keys, UUIDs, ids), to count by kind. */
export const reasonOf = (error: string | null) =>
  (error ?? "(no error text)")
    .replace(/exports\/\d+\/[^\s"]+/g, "exports/…")
    .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(-u1)?/g, "…")
    .slice(0, 90);
