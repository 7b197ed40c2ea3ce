// `npm run failover`: RUNPOD_ENDPOINTS failover on the local stack. Two endpoints of the emulator
// (10 always-ready workers each, 2 s runs), every type routed primary first, secondary next. 120
// exports are posted over 12 s; 3 s after the first POST the primary goes into an outage (503 on
// /run, /status, /cancel) for 30 s. Figures: time from the outage to the first run accepted by the
// secondary, drain time, runs per job, jobs in error, retries spent, and time from the outage's end
// to the first run the primary accepts again (it comes back through its breaker's probes, on new
// exports posted after it). Writes bench/failover.json. About two minutes.
import path from "node:path";
import { Fleet, say } from "./fleet-stack.ts";
import { readJson, root, sleep, writeResults } from "./support.ts";

const PRIMARY = "failover-primary";
const SECONDARY = "failover-secondary";
const JOBS = 120;
const POST_OVER_MS = 12_000;
const OUTAGE_AT_MS = 3_000;
const OUTAGE_MS = 30_000;
const ENDPOINT_CONFIG = { maxWorkers: 10, runMs: 2_000, queueMs: 0, progressSteps: [50] };

interface Request {
  method: string;
  path: string;
  receivedAt: string;
  responseStatus: number | null;
}

const fleet = new Fleet();
try {
  const s = await fleet.start(
    "failover",
    {
      RUNPOD_ENDPOINT_ID: PRIMARY,
      RUNPOD_ENDPOINTS: JSON.stringify({ "*": [PRIMARY, SECONDARY] }),
      RUNPOD_MAX_IN_FLIGHT: "12",
      BREAKER_COOLDOWN_S: "5",
      BREAKER_THRESHOLD: "3",
    },
    {},
  );
  const configure = (endpoint: string, config: Record<string, unknown>) =>
    fetch(`${s.emulatorUrl}/__emulator/endpoints/${endpoint}/config`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(config),
    });
  await configure(PRIMARY, ENDPOINT_CONFIG);
  await configure(SECONDARY, ENDPOINT_CONFIG);
  const auth = { authorization: `Bearer ${s.settings.API_TOKEN}` };
  const post = async (n: number) => {
    for (let attempt = 0; attempt < 10; attempt++) {
      const res = await fetch(`${s.producerUrl}/exports`, {
        method: "POST",
        headers: { ...auth, "content-type": "application/json" },
        body: JSON.stringify({
          project_id: 1 + (n % 10),
          type: "overlay",
          input_video_key: "uploads/demo/sample.mp4",
          params: { highlight_regions: [{ start_time: 1, end_time: 2 }], n },
        }),
      }).catch(() => null);
      if (res?.status === 202) return ((await res.json()) as { job: { id: string } }).job.id;
      await sleep(300);
    }
    throw new Error("POST /exports kept failing");
  };
  const t0 = Date.now();
  const outageAt = t0 + OUTAGE_AT_MS;
  const outage = sleep(OUTAGE_AT_MS).then(() =>
    configure(PRIMARY, { ...ENDPOINT_CONFIG, outageUntilMs: Date.now() + OUTAGE_MS }),
  );
  const ids: string[] = [];
  for (let n = 0; n < JOBS; n++) {
    const due = t0 + (n * POST_OVER_MS) / JOBS;
    if (due > Date.now()) await sleep(due - Date.now());
    ids.push(await post(n));
  }
  await outage;
  say(`posted ${JOBS}; draining`);
  await fleet.drain(JOBS, t0, 300_000);
  const drainMs = Date.now() - t0;
  // After the outage: new exports bring the primary back through its probes.
  const outageEnd = outageAt + OUTAGE_MS;
  if (Date.now() < outageEnd) await sleep(outageEnd - Date.now());
  const later: string[] = [];
  for (let n = 0; n < 20; n++) {
    later.push(await post(JOBS + n));
    await sleep(500);
  }
  await fleet.drain(JOBS + later.length, t0, 300_000);
  const requests = async (endpoint: string) =>
    (
      await readJson<{ requests: Request[] }>(
        `${s.emulatorUrl}/__emulator/requests?endpoint=${endpoint}`,
      )
    ).requests.filter((r) => r.method === "POST" && r.path.endsWith("/run"));
  const [primary, secondary] = [await requests(PRIMARY), await requests(SECONDARY)];
  const at = (r: Request) => Date.parse(r.receivedAt);
  const firstOn = (list: Request[], after: number) =>
    list
      .filter((r) => r.responseStatus === 200 && at(r) >= after)
      .map(at)
      .sort((a, b) => a - b)[0];
  const firstSecondary = firstOn(secondary, outageAt);
  const backOnPrimary = firstOn(primary, outageEnd);
  const jobs = await Promise.all(
    [...ids, ...later].map(
      async (id) =>
        (
          await readJson<{ job: { status: string; retry_count: number } }>(
            `${s.producerUrl}/exports/${id}`,
            { headers: auth },
          )
        ).job,
    ),
  );
  const accepted = [...primary, ...secondary].filter((r) => r.responseStatus === 200).length;
  const results = {
    jobs: jobs.length,
    outage_to_first_secondary_run_s:
      firstSecondary === undefined ? null : (firstSecondary - outageAt) / 1000,
    drain_s: drainMs / 1000,
    runs_per_job: accepted / jobs.length,
    runs_on_secondary: secondary.filter((r) => r.responseStatus === 200).length,
    jobs_in_error: jobs.filter((job) => job.status === "error").length,
    retries_spent: jobs.reduce((n, job) => n + job.retry_count, 0),
    outage_end_to_primary_again_s:
      backOnPrimary === undefined ? null : (backOnPrimary - outageEnd) / 1000,
    setup: { jobs: JOBS, post_over_ms: POST_OVER_MS, outage_ms: OUTAGE_MS, ...ENDPOINT_CONFIG },
  };
  console.table(results);
  writeResults(path.join(root, "bench/failover.json"), results);
  if (results.jobs_in_error > 0 || results.retries_spent > 0) process.exitCode = 1;
} finally {
  await fleet.close();
}
