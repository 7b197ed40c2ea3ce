// CLI: `npm run emulator` (or `node emulator/main.ts`). Settings come from the environment:
// RUNPOD_EMULATOR_PORT (8790), RUNPOD_EMULATOR_HOST (127.0.0.1), RUNPOD_EMULATOR_API_KEY,
// RUNPOD_EMULATOR_SEED, RUNPOD_EMULATOR_LOG=0 to silence events, and one variable per timing or
// fault of DEFAULT_CONFIG in upper snake case: runMs → RUNPOD_EMULATOR_RUN_MS,
// failRate → RUNPOD_EMULATOR_FAIL_RATE, runScript → RUNPOD_EMULATOR_RUN_SCRIPT=429,500,200,
// outage → RUNPOD_EMULATOR_OUTAGE=true, maxWorkers → RUNPOD_EMULATOR_MAX_WORKERS=2 …

import process from "node:process";
import {
  createRunpodEmulator,
  DEFAULT_CONFIG,
  type EmulatorOptions,
  parseEndpointConfig,
} from "./runpod-emulator.ts";

const PREFIX = "RUNPOD_EMULATOR_";
const envName = (key: string) => PREFIX + key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase();

const toValue = (text: string) => {
  if (text === "true" || text === "false") return text === "true";
  return /^-?[\d.]+$/.test(text) ? Number(text) : text;
};

function optionsFromEnv(env: NodeJS.ProcessEnv): Partial<EmulatorOptions> {
  const options: Partial<EmulatorOptions> = {};
  for (const [key, fallback] of Object.entries(DEFAULT_CONFIG)) {
    const name = envName(key);
    const raw = env[name]?.trim();
    if (!raw) continue;
    const value = Array.isArray(fallback)
      ? raw.split(",").flatMap((item) => (item.trim() ? [toValue(item.trim())] : []))
      : toValue(raw);
    try {
      Object.assign(options, parseEndpointConfig({ [key]: value }));
    } catch (error) {
      throw new Error(`${name}=${raw}: ${error instanceof Error ? error.message : error}`);
    }
  }
  const seed = Number(env[`${PREFIX}SEED`] ?? 42);
  if (!Number.isInteger(seed)) throw new Error(`${PREFIX}SEED must be an integer`);
  options.seed = seed;
  if (env[`${PREFIX}API_KEY`]) options.apiKey = env[`${PREFIX}API_KEY`];
  if (env[`${PREFIX}LOG`] !== "0") options.log = (line) => console.log(line);
  return options;
}

const port = Number(process.env[`${PREFIX}PORT`] ?? 8790);
if (!Number.isInteger(port) || port < 0) throw new Error(`${PREFIX}PORT must be a port number`);
const host = process.env[`${PREFIX}HOST`] ?? "127.0.0.1";
const emulator = createRunpodEmulator(optionsFromEnv(process.env));
const { url } = await emulator.listen(port, host);
console.log(`runpod emulator listening on ${url}/v2`);

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    void emulator.close().then(() => process.exit(0));
  });
}
