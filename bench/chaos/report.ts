// The chaos run's table and its violations, as text.
import type { Report } from "./checks.ts";

/** Two columns, the label padded; long values wrap under themselves. */
export function formatReport(report: Report): string {
  const width = Math.max(...report.rows.map(([label]) => label.length));
  const lines: string[] = [];
  const wrap = 110;
  for (const [label, value] of report.rows) {
    const words = value.split(" ");
    const parts: string[] = [];
    let current = "";
    for (const word of words) {
      if (current && current.length + word.length + 1 > wrap) {
        parts.push(current);
        current = word;
      } else current = current ? `${current} ${word}` : word;
    }
    parts.push(current);
    parts.forEach((part, i) => {
      lines.push(`${(i === 0 ? label : "").padEnd(width)}  ${part}`);
    });
  }
  lines.push("");
  if (report.violations.length === 0) {
    lines.push("violations: none");
  } else {
    lines.push(`violations: ${report.violations.length}`);
    for (const v of report.violations) {
      lines.push(`- ${v.check}: ${v.detail}`);
      for (const line of v.evidence) lines.push(`    ${line}`);
    }
  }
  return lines.join("\n");
}
