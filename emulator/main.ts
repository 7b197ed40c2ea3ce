// CLI: `npm run emulator` (or `node emulator/main.ts`). Settings come from the environment:
// RUNPOD_EMULATOR_PORT (8790), RUNPOD_EMULATOR_HOST (127.0.0.1), RUNPOD_EMULATOR_API_KEY,
// RUNPOD_EMULATOR_SEED, RUNPOD_EMULATOR_LOG=0 to silence events, and one variable per timing or
// fault of DEFAULT_CONFIG in upper snake case: runMs → RUNPOD_EMULATOR_RUN_MS,
// failRate → RUNPOD_EMULATOR_FAIL_RATE, runScript → RUNPOD_EMULATOR_RUN_SCRIPT=429,500,200,
// outage → RUNPOD_EMULATOR_OUTAGE=true, maxWorkers → RUNPOD_EMULATOR_MAX_WORKERS=2, the
// autoscaling fleet: RUNPOD_EMULATOR_WORKERS_MAX=3, RUNPOD_EMULATOR_SCALER_TYPE=REQUEST_COUNT …
// RUNPOD_EMULATOR_OUTPUT_URL (e.g. http://127.0.0.1:8791/objects, the local R2 writer of
// scripts/local-r2/) plays the GPU handler's storage side: before a run becomes COMPLETED, its
// input.input_video_key is read from `<url>/<key>` and written to `<url>/<output_video_key>`,
// the "render" of the input; if that fails, the run ends FAILED ("output upload failed: …").
// Unset, runs complete without writing anything, as in-process emulators do.

import process from "node:process";
import {
  createRunpodEmulator,
  DEFAULT_CONFIG,
  type EmulatorOptions,
  parseEndpointConfig,
} from "./runpod-emulator.ts";

const PREFIX = "RUNPOD_EMULATOR_";
const STORAGE_TIMEOUT_MS = 30_000;
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
  const outputUrl = env[`${PREFIX}OUTPUT_URL`]?.trim();
  if (outputUrl) options.onComplete = copyInputToOutput(outputUrl.replace(/\/+$/, ""), options.log);
  return options;
}

const errorText = (error: unknown) => (error instanceof Error ? error.message : String(error));

/** A request to `<base>/<key>` (each key segment percent-encoded); a network error says where. */
async function storage(base: string, key: string, init: RequestInit = {}): Promise<Response> {
  const target = `${base}/${key.split("/").map(encodeURIComponent).join("/")}`;
  try {
    return await fetch(target, { ...init, signal: AbortSignal.timeout(STORAGE_TIMEOUT_MS) });
  } catch (error) {
    const cause = error instanceof Error && error.cause instanceof Error ? error.cause : error;
    throw new Error(`${init.method ?? "GET"} ${target}: ${errorText(cause)}`);
  }
}

/**
 * What a GPU handler does with storage, against the local R2 writer: download the input, upload
 * the result to output_video_key as video/mp4. The result is the input itself (the sample's
 * "render"). A throw fails the run with `output upload failed: <message>`.
 */
function copyInputToOutput(
  base: string,
  log: ((line: string) => void) | undefined,
): NonNullable<EmulatorOptions["onComplete"]> {
  return async ({ id, input }) => {
    const from = input.input_video_key;
    const to = input.output_video_key;
    if (typeof to !== "string" || to === "") return; // nothing asked for, nothing to write
    if (typeof from !== "string" || from === "") throw new Error("input has no input_video_key");
    const read = await storage(base, from);
    if (!read.ok) {
      await read.body?.cancel();
      throw new Error(`cannot read input ${from}: ${read.status}`);
    }
    const bytes = await read.arrayBuffer();
    const written = await storage(base, to, {
      method: "PUT",
      // The run's id as the object's metadata, as docs/gpu-worker.md asks of a handler.
      headers: { "content-type": "video/mp4", "x-amz-meta-runpod-job-id": id },
      body: bytes,
    });
    const answer = await written.text();
    if (!written.ok) throw new Error(`cannot write ${to}: ${written.status} ${answer}`);
    log?.(`job ${id} output written: ${to} (${bytes.byteLength} bytes, a copy of ${from})`);
  };
}

const port = Number(process.env[`${PREFIX}PORT`] ?? 8790);
if (!Number.isInteger(port) || port < 0) throw new Error(`${PREFIX}PORT must be a port number`);
const host = process.env[`${PREFIX}HOST`] ?? "127.0.0.1";
const emulator = createRunpodEmulator(optionsFromEnv(process.env));
const { url } = await emulator.listen(port, host);
console.log(`runpod emulator listening on ${url}/v2`);
const outputUrl = process.env[`${PREFIX}OUTPUT_URL`]?.trim();
if (outputUrl) console.log(`completed runs copy their input to their output through ${outputUrl}`);

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    void emulator.close().then(() => process.exit(0));
  });
}
