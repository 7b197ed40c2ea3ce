// Figure 5, D1 rows per job: the rows read and written by the statements of one job's life
// (measured by rowsPerJob in ../d1-figures.ts on the bench Worker's ROWS database) against the
// least the schema allows.
import type { LifeRows } from "../d1-figures.ts";
import { figure, results } from "./results.ts";

/** The rows of figure 5, then `d1_rows_detail`. */
export function reportD1Rows(lives: LifeRows[]): void {
  for (const life of lives) {
    const key = life.name.includes("failure") ? "d1_rows_fail_once" : "d1_rows_happy";
    figure(`${key}_written`, `5. D1 rows written, ${life.name}`, {
      value: life.rows_written,
      unit: "rows",
      target: `≤ 1.25 × ${life.min_written} (${(life.min_written * 1.25).toFixed(0)})`,
      pass: life.rows_written <= life.min_written * 1.25,
      note: `${(life.rows_written / life.min_written).toFixed(2)}× the schema's minimum; per step: ${life.steps
        .map((s) => `${s.step} ${s.rows_written} (min ${s.min_written})`)
        .join("; ")}`,
    });
    figure(`${key}_read`, `5. D1 rows read, ${life.name}`, {
      value: life.rows_read,
      unit: "rows",
      target: `(${life.min_read} looked at; info)`,
      pass: null,
      note:
        `${(life.rows_read / life.min_read).toFixed(2)}× the rows the statements must look at (the job's row, ` +
        "the job_counts rows the triggers move): D1 also counts json_each's elements, uniqueness probes of " +
        "ON CONFLICT / INSERT OR IGNORE and the triggers' lookups; not held to the target, since reads cost " +
        `$${((life.rows_read * 0.001) / 1).toFixed(3)} per million jobs; per step: ` +
        life.steps.map((s) => `${s.step} ${s.rows_read} (min ${s.min_read})`).join("; "),
    });
  }
  results.d1_rows_detail = lives;
}
