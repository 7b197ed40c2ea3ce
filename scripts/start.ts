// `npm start`: the whole pipeline on this machine. Ctrl-C stops everything it started; so do
// SIGTERM, closing the terminal (SIGHUP) and an uncaught error. Every child runs under
// scripts/guard.ts, so even a SIGKILL of this process leaves nothing running.
import { SETTING_NAMES, StackStartError, startLocalStack } from "./local-stack.ts";

/** Ports and state directory: the contract's defaults, movable for a second stack or a test. */
function port(name: string, fallback: number): number {
  const value = process.env[name];
  if (value === undefined || value === "") return fallback;
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed <= 0 || parsed > 65535) {
    console.error(`${name}=${value} is not a port`);
    process.exit(2);
  }
  return parsed;
}
const inspector = port("INSPECTOR_PORT", 9229);
// The frontend example: PRODUCER_PORT + 5 (8792) by default, EXAMPLE_FRONTEND_PORT=off skips it.
const exampleFrontendPort =
  process.env.EXAMPLE_FRONTEND_PORT === "off"
    ? null
    : process.env.EXAMPLE_FRONTEND_PORT
      ? port("EXAMPLE_FRONTEND_PORT", 0)
      : undefined;

let stopStack: (() => Promise<void>) | undefined;
let stopping = false;
const shutdown = async (code: number) => {
  if (stopping) return;
  stopping = true;
  clearInterval(cron);
  try {
    console.log("stopping…");
  } catch {} // the terminal may be gone (SIGHUP)
  await stopStack?.();
  process.exit(code);
};
process.on("SIGINT", () => shutdown(0));
process.on("SIGTERM", () => shutdown(0));
process.on("SIGHUP", () => shutdown(0));
process.on("uncaughtException", (error) => {
  console.error(error);
  void shutdown(1);
});
// Output to a closed terminal must not stop the shutdown half-way.
process.stdout.on("error", () => {});
process.stderr.on("error", () => {});

let cron: NodeJS.Timeout | undefined;
const settings: Record<string, string | undefined> = Object.fromEntries(
  SETTING_NAMES.map((name) => [name, process.env[name]]),
);
const emulatorPort = port("EMULATOR_PORT", 8790);
// With the emulator, outbound webhooks go to its receiver unless NOTIFY_URL says otherwise:
// GET <emulator>/__receiver/local/requests shows what the frontend's backend would receive.
if (!settings.RUNPOD_BASE_URL && !settings.NOTIFY_URL) {
  settings.NOTIFY_URL = `http://127.0.0.1:${emulatorPort}/__receiver/local`;
}
let stack: Awaited<ReturnType<typeof startLocalStack>>;
try {
  stack = await startLocalStack({
    settings,
    producerPort: port("PRODUCER_PORT", 8787),
    consumerPort: port("CONSUMER_PORT", 8788),
    emulatorPort,
    inspectorPorts: [inspector, inspector + 1],
    exampleFrontendPort,
    persistTo: process.env.STATE_DIR || undefined,
  });
} catch (error) {
  console.error(error instanceof StackStartError ? error.message : error);
  process.exit(1);
}
stopStack = stack.stop;

const exampleLine = stack.exampleFrontendUrl
  ? `\n  frontend example ${stack.exampleFrontendUrl}  (Export → live progress → download: examples/frontend/)`
  : "";
console.log(`
reel-exports is running locally
  producer   ${stack.producerUrl}        (API_TOKEN=${stack.settings.API_TOKEN}, ADMIN_TOKEN=${stack.settings.ADMIN_TOKEN})
  consumer   ${stack.consumerUrl}        (reconciler every minute; GET /__scheduled runs it now)
  RunPod     ${stack.runpodBaseUrl}${stack.emulatorUrl ? "  (emulator)" : ""}
  webhooks   ${stack.settings.NOTIFY_URL || "off (NOTIFY_URL)"}${stack.emulatorUrl && stack.settings.NOTIFY_URL?.startsWith(stack.emulatorUrl) ? "  (GET …/requests: what was delivered)" : ""}
  state      ${stack.persistTo}
  sample     uploads/demo/sample.mp4 in R2 bucket reel-ballers-videos${exampleLine}

Try:
  curl -s -X POST ${stack.producerUrl}/exports \\
    -H 'Authorization: Bearer ${stack.settings.API_TOKEN}' -H 'Content-Type: application/json' \\
    -d '{"project_id":42,"type":"overlay","input_video_key":"uploads/demo/sample.mp4","params":{"highlight_regions":[{"start_time":1,"end_time":3}]}}'
Ctrl-C stops everything.
`);

// wrangler dev does not fire cron triggers; stand in for the consumer's `* * * * *` schedule.
cron = setInterval(() => {
  fetch(`${stack.consumerUrl}/__scheduled`).catch((error: unknown) => {
    console.error(`[cron] reconciler run failed: ${String(error)}`);
  });
}, 60_000);
