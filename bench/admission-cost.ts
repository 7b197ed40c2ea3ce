// The dispatcher's cost per admission at 100 and at 100,000 waiting (figure 5 of `npm run fleet`):
// the fair queue (shared/fair-queue.ts) in a bench-only Durable Object (bench/worker/fair-queue.ts)
// under `wrangler dev`, one object per backlog size, seeded over HTTP in chunks, then rounds of
// 1,000 admissions timed from here, the two sizes interleaved.
import { mkdirSync } from "node:fs";
import path from "node:path";
import { devServerFlags } from "../scripts/local-stack.ts";
import {
  guarded,
  jsonInit,
  median,
  readJson,
  root,
  round,
  waitForPorts,
  waitUntilUp,
  wranglerEnv,
  wranglerJs,
} from "./support.ts";
import type { CycleResult, Step } from "./worker/fair-queue.ts";

const CONFIG = path.join(root, "bench/worker/fair-queue.toml");
export const COST_PORTS = { worker: 31520, inspector: 31521 } as const;
/** Runs at RunPod: slots held while the cycles run (each cycle frees the oldest). */
const IN_FLIGHT = 32;
const SEED_CHUNK = 10_000;
const CYCLES = 1_000;
const ROUNDS = 7;

export interface SizeResult {
  waiting: number;
  keys: number;
  /** Rows per admission (offer + free + admit of one job), from the first timed round. */
  rows_read: number;
  rows_written: number;
  rows_by_step: Record<Step, { read: number; written: number }>;
  /** Whether every timed round read and wrote the same rows. */
  rows_steady: boolean;
  /** ms per admission, each round (request time minus an empty request's, ÷ CYCLES). */
  ms_per_admission_rounds: number[];
  ms_per_admission: number;
  seed_s: number;
  counts_after: CycleResult["counts"];
}

export interface AdmissionCost {
  sizes: SizeResult[];
  empty_request_ms: number;
  cycles_per_round: number;
  rounds: number;
}

export async function measureAdmissionCost(
  stateDir: string,
  say: (line: string) => void,
  onLine: (name: string, line: string) => void,
): Promise<AdmissionCost> {
  mkdirSync(stateDir, { recursive: true });
  await waitForPorts(Object.values(COST_PORTS), say);
  const proc = guarded(
    "fair-queue-worker",
    [
      wranglerJs,
      "dev",
      "--config",
      CONFIG,
      ...devServerFlags(COST_PORTS.worker, COST_PORTS.inspector),
      "--persist-to",
      stateDir,
    ],
    wranglerEnv(path.join(stateDir, "..", "registry")),
    onLine,
  );
  try {
    const url = `http://127.0.0.1:${COST_PORTS.worker}`;
    await waitUntilUp(`${url}/health`, "the fair-queue bench Worker", proc);
    const call = <T>(route: string, body: Record<string, unknown>) =>
      readJson<T>(`${url}${route}`, jsonInit("POST", body));

    const sizes = [
      { name: "small", waiting: 100, keys: 10 },
      { name: "large", waiting: 100_000, keys: 1_000 },
    ];
    const seedS: Record<string, number> = {};
    for (const size of sizes) {
      const t = performance.now();
      const total = size.waiting + IN_FLIGHT;
      for (let from = 0; from < total; from += SEED_CHUNK) {
        await call("/seed", {
          name: size.name,
          from,
          n: Math.min(SEED_CHUNK, total - from),
          keys: size.keys,
        });
      }
      await call("/fill", { name: size.name, n: IN_FLIGHT });
      seedS[size.name] = (performance.now() - t) / 1000;
      say(`  admission cost: ${size.waiting} waiting seeded in ${seedS[size.name]?.toFixed(1)} s`);
    }

    let next = 0;
    const cycles = async (name: string, n: number, keys: number) => {
      const t = performance.now();
      const result = await call<CycleResult>("/cycles", { name, from: next, n, keys });
      next += n;
      return { ms: performance.now() - t, result };
    };
    // Warm-up: the objects' caches and the Worker's code paths.
    for (const size of sizes) await cycles(size.name, 200, size.keys);
    const empty: number[] = [];
    const timed = new Map<string, { ms: number; result: CycleResult }[]>(
      sizes.map((s) => [s.name, []]),
    );
    for (let round = 0; round < ROUNDS; round++) {
      // Interleaved, the first size alternating: both sizes see the same machine.
      const order = round % 2 === 0 ? sizes : [...sizes].reverse();
      for (const size of order) {
        empty.push((await cycles(size.name, 0, size.keys)).ms);
        timed.get(size.name)?.push(await cycles(size.name, CYCLES, size.keys));
      }
    }
    const emptyMs = median(empty);
    const out: SizeResult[] = sizes.map((size) => {
      const rounds = timed.get(size.name) ?? [];
      const first = rounds[0]?.result as CycleResult;
      const per = (step: Step) => ({
        read: first.rows[step].rowsRead / CYCLES,
        written: first.rows[step].rowsWritten / CYCLES,
      });
      const steps: Step[] = ["offer", "free", "admit"];
      const sum = (k: "rowsRead" | "rowsWritten", r: CycleResult) =>
        steps.reduce((acc, s) => acc + r.rows[s][k], 0);
      const msRounds = rounds.map((r) => Math.max(0, r.ms - emptyMs) / CYCLES);
      return {
        waiting: size.waiting,
        keys: size.keys,
        rows_read: sum("rowsRead", first) / CYCLES,
        rows_written: sum("rowsWritten", first) / CYCLES,
        rows_by_step: { offer: per("offer"), free: per("free"), admit: per("admit") },
        rows_steady: rounds.every(
          (r) =>
            sum("rowsRead", r.result) === sum("rowsRead", first) &&
            sum("rowsWritten", r.result) === sum("rowsWritten", first),
        ),
        ms_per_admission_rounds: msRounds.map((v) => round(v, 4)),
        ms_per_admission: round(median(msRounds), 4),
        seed_s: round(seedS[size.name] ?? Number.NaN, 1),
        counts_after: rounds.at(-1)?.result.counts ?? first.counts,
      };
    });
    return {
      sizes: out,
      empty_request_ms: round(emptyMs, 2),
      cycles_per_round: CYCLES,
      rounds: ROUNDS,
    };
  } finally {
    await proc.stop();
  }
}
