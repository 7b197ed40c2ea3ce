// `npm run chaos`: the pipeline under every fault at once (bench/chaos/harness.ts says which), on
// its own local stack (ports 35787/35788/35790/35791, inspectors 35229–35231, a temporary state
// directory, no frontend example). CHAOS_N jobs (default 10,000), CHAOS_SEED (42),
// CHAOS_POST_RATE (POST /exports a second, 20), CHAOS_DRAIN_S (how long the jobs may take to end
// after the last fault), CHAOS_OUTPUT_FILE (a file that receives every line the stack prints),
// CHAOS_MAX_IN_FLIGHT (RUNPOD_MAX_IN_FLIGHT: `auto`, the default, or a fixed cap).
// Prints a table; exits 1 on any violation, with its evidence.
import { CLI_PORTS } from "./chaos/config.ts";
import { runChaos } from "./chaos/harness.ts";
import { formatReport } from "./chaos/report.ts";

const intFrom = (name: string, fallback: number) => {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number`);
  return value;
};

const n = Math.floor(intFrom("CHAOS_N", 10_000));
const started = Date.now();
const stamp = () => `[chaos ${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s]`;
process.on("SIGINT", () => {
  // The stack's children end with this process (scripts/guard.ts: their stdin pipes close).
  console.error("\ninterrupted");
  process.exit(130);
});

try {
  const report = await runChaos({
    n,
    ports: CLI_PORTS,
    seed: Math.floor(intFrom("CHAOS_SEED", 42)),
    postRatePerS: intFrom("CHAOS_POST_RATE", 20),
    ...(process.env.CHAOS_DRAIN_S ? { drainTimeoutMs: intFrom("CHAOS_DRAIN_S", 240) * 1000 } : {}),
    log: (line) => console.log(`${stamp()} ${line}`),
    ...(process.env.CHAOS_OUTPUT_FILE ? { outputFile: process.env.CHAOS_OUTPUT_FILE } : {}),
    ...(process.env.CHAOS_MAX_IN_FLIGHT
      ? { settings: { RUNPOD_MAX_IN_FLIGHT: process.env.CHAOS_MAX_IN_FLIGHT } }
      : {}),
  });
  console.log(`\n${formatReport(report)}`);
  console.log(`\nwall time ${((Date.now() - started) / 1000).toFixed(1)} s`);
  if (report.violations.length > 0) process.exitCode = 1;
} catch (error) {
  console.error(
    `chaos failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`,
  );
  process.exitCode = 2;
}
// The stack is stopped; a straggling timer of the harness must not keep the process alive.
process.exit();
