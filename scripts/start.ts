// `npm start`: the whole pipeline on this machine. Ctrl-C stops everything it started.
import { SETTING_NAMES, startLocalStack } from "./local-stack.ts";

const settings = Object.fromEntries(SETTING_NAMES.map((name) => [name, process.env[name]]));
const stack = await startLocalStack({ settings });

console.log(`
reel-exports is running locally
  producer   ${stack.producerUrl}        (API_TOKEN=${stack.settings.API_TOKEN}, ADMIN_TOKEN=${stack.settings.ADMIN_TOKEN})
  consumer   ${stack.consumerUrl}        (reconciler every minute; GET /__scheduled runs it now)
  RunPod     ${stack.runpodBaseUrl}${stack.emulatorUrl ? "  (emulator)" : ""}
  sample     uploads/demo/sample.mp4 in R2 bucket reel-ballers-videos

Try:
  curl -s -X POST ${stack.producerUrl}/exports \\
    -H 'Authorization: Bearer ${stack.settings.API_TOKEN}' -H 'Content-Type: application/json' \\
    -d '{"project_id":42,"type":"overlay","input_video_key":"uploads/demo/sample.mp4","params":{"highlight_regions":[{"start_time":1,"end_time":3}]}}'
Ctrl-C stops everything.
`);

// wrangler dev does not fire cron triggers; stand in for the consumer's `* * * * *` schedule.
const cron = setInterval(() => {
  fetch(`${stack.consumerUrl}/__scheduled`).catch((error: unknown) => {
    console.error(`[cron] reconciler run failed: ${String(error)}`);
  });
}, 60_000);

let stopping = false;
const shutdown = async () => {
  if (stopping) return;
  stopping = true;
  clearInterval(cron);
  console.log("stopping…");
  await stack.stop();
  process.exit(0);
};
process.on("SIGINT", shutdown);
process.on("SIGTERM", shutdown);
