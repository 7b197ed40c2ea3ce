// What a chaos run is made of: its ports, the Workers' settings, the emulator's standing faults.

export interface ChaosPorts {
  producer: number;
  consumer: number;
  emulator: number;
  r2Writer: number;
  inspectors: [number, number];
  r2WriterInspector: number;
}

/** `npm run chaos`. */
export const CLI_PORTS: ChaosPorts = {
  producer: 35787,
  consumer: 35788,
  emulator: 35790,
  r2Writer: 35791,
  inspectors: [35229, 35230],
  r2WriterInspector: 35231,
};

/** test/node/chaos.test.ts: apart from the CLI's, so both can run at once. */
export const TEST_PORTS: ChaosPorts = {
  producer: 32787,
  consumer: 32788,
  emulator: 32790,
  r2Writer: 32791,
  inspectors: [32229, 32230],
  r2WriterInspector: 32231,
};

export const ENDPOINT = "chaos-endpoint";

/** Timings scaled down so that 1,000 jobs take a few minutes on 2 CPUs. */
export const SETTINGS: Record<string, string> = {
  RUNPOD_ENDPOINT_ID: ENDPOINT,
  RETRY_BASE_DELAY_S: "1",
  RETRY_MAX_DELAY_S: "4",
  BREAKER_COOLDOWN_S: "2",
  CLAIM_TIMEOUT_S: "8",
  POLL_AFTER_S: "3",
  PENDING_GRACE_S: "5",
  RUNPOD_TIMEOUT_MS: "1500",
  // The shipped default: the cap follows the fleet. The emulator's endpoint has no worker limit,
  // so its /health shows as many workers as runs in progress: RUNPOD_MAX_WORKERS bounds it.
  RUNPOD_MAX_IN_FLIGHT: "auto",
  RUNPOD_MAX_WORKERS: "50",
  FLEET_POLL_S: "1",
};

/** The emulator's endpoint during the run: short runs and the standing faults. */
export const FAULTS = {
  queueMs: 50,
  runMs: 200,
  progressSteps: [25, 50, 75],
  webhookRetryDelayMs: 1000,
  // Runs stay readable for the final checks (and no run is lost to retention).
  retentionMs: 6 * 3_600_000,
  runErrorRate: 0.2,
  failRate: 0.05,
  // Drawn after failRate: 0.05 + 0.95 × 0.0527 ≈ 10 % of runs FAILED or TIMED_OUT.
  timeoutRate: 0.0527,
  dropWebhookRate: 0.1,
  runRateLimitPerS: 25,
};
/** How long a delayed `/run` waits: past RUNPOD_TIMEOUT_MS (1500). */
export const RUN_DELAY_MS = 2500;
