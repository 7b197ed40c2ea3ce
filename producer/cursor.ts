// Opaque keyset cursors: base64url of the last row's sort key. A cursor that does not decode to
// the expected shape is a 400, never a silent first page.
import { z } from "zod";
import { decodeBase64Url, encodeBase64Url } from "../shared/base64url.ts";

const sortKey = z.object({ created_at: z.string().min(1), id: z.string().min(1) });
export type SortKey = z.infer<typeof sortKey>;

export function encodeCursor(key: SortKey): string {
  return encodeBase64Url(JSON.stringify([key.created_at, key.id]));
}

export function decodeCursor(cursor: string): SortKey | null {
  try {
    const [created_at, id] = JSON.parse(decodeBase64Url(cursor)) as unknown[];
    const parsed = sortKey.safeParse({ created_at, id });
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

/** The cursor of a query string (`after` null: the first page), or null for a bad cursor. */
export function readCursor(raw: string | undefined): { after: SortKey | null } | null {
  if (raw === undefined) return { after: null };
  const after = decodeCursor(raw);
  return after ? { after } : null;
}

/** Cuts `limit + 1` fetched rows to a page and the cursor of the next one (null on the last). */
export function toPage<T>(
  rows: readonly T[],
  limit: number,
  key: (row: T) => SortKey,
): { items: T[]; next_cursor: string | null } {
  const items = rows.slice(0, limit);
  const last = items.at(-1);
  return {
    items,
    next_cursor: rows.length > limit && last !== undefined ? encodeCursor(key(last)) : null,
  };
}
