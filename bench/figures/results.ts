// The figures' rows: each figure module records its rows here (`figure()`, and raw material as
// keys of `results`), in the order of the README's figures; the entry point prints the table and
// writes `results` to bench/results.json.
import { round } from "../support.ts";

export interface Figure {
  value: number | string | null;
  unit: string;
  target: string;
  pass: boolean | null;
  note: string;
}
export const results: Record<string, Figure | unknown> = {};
const table: [string, string, string, string][] = [];

export function figure(key: string, label: string, f: Figure): void {
  results[key] = f;
  const value =
    typeof f.value === "number" ? `${round(f.value, f.value < 10 ? 2 : 1)} ${f.unit}` : f.value;
  table.push([
    label,
    String(value ?? "—"),
    f.target,
    f.pass === null ? "info" : f.pass ? "PASS" : "FAIL",
  ]);
}

/** Prints the figures recorded so far: figure, value, target, PASS / FAIL / info. */
export function printTable(): void {
  const header: [string, string, string, string] = ["figure", "value", "target", "result"];
  const widths = [0, 1, 2, 3].map((i) =>
    Math.min(i === 0 ? 64 : 44, Math.max(...[header, ...table].map((row) => row[i]?.length ?? 0))),
  );
  const line = (row: string[]) =>
    row
      .map((cell, i) => cell.padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd();
  console.log(`\n${line(header)}\n${widths.map((w) => "-".repeat(w)).join("  ")}`);
  for (const row of table) console.log(line(row));
}
