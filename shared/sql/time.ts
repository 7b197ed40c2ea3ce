// Timestamps are UTC text with milliseconds ("2026-11-24 10:30:00.123"): they sort as text,
// compare with the seed's datetime('now') values, and keep "newest first" exact within a second.
export const NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')";
/** `now` moved by a bound "+N seconds" parameter. */
export const NOW_PLUS = "strftime('%Y-%m-%d %H:%M:%f', 'now', ?)";
/** The bound parameter of NOW_PLUS. */
export const seconds = (n: number) => `${n >= 0 ? "+" : ""}${Math.round(n)} seconds`;
