// The dispatcher's cap on runs in flight, as pure functions of what it knows of the endpoint's
// fleet (RUNPOD_MAX_IN_FLIGHT=auto; a number is a fixed cap and none of this applies).
// shared/dispatcher.ts keeps one such state per RunPod endpoint and is the only caller.
//
// What it knows: RunPod's `GET /health` (workers ready, running, initializing, throttled,
// unhealthy; runs in queue and in progress), asked at most every FLEET_POLL_S while jobs wait or
// run; each finished run's delayTime and executionTime (learned per type); how long a refill takes
// (a run's end to the next /run, measured on the refill path); and what submissions meet (429s,
// failures).
//
// The cap, with W workers ready or running, I initializing, L the learned run length and R the
// refill latency:
//   - no GPU waits for work: H = ceil(R × W / L) runs of headroom (Little's law: the runs that
//     finish while a freed worker's next run is on its way), at least 1;
//   - the fleet can grow: while jobs wait in the backlog and the fleet is below its maximum
//     (RUNPOD_MAX_WORKERS, else 100), runs queue at RunPod for its autoscaler to see: as many as
//     the workers it may still add (max known), or as many as the fleet has (max unknown: the
//     fleet may double each time it responds, TCP's slow start), never more than the backlog;
//   - fairness holds: once the fleet stops growing (its maximum, throttled workers, or no new
//     worker for STALL_MS while runs waited for one), only the headroom waits at RunPod, so a job
//     admitted now starts within about one run;
//   - the scaler: with QUEUE_DELAY the cap is W + I + growth + H; with REQUEST_COUNT (s runs per
//     worker) RunPod keeps ceil(runs / s) workers, so keeping W + I + growth workers takes s times
//     as many runs in flight;
//   - it backs off: a 429, a high failure rate, throttled or unhealthy workers, or runs waiting
//     longer and longer at RunPod put a ceiling on the cap at once (multiplicatively); every
//     clean poll lifts it step by step (additively), and it goes once the model's cap is below it.

import type { SubmitOutcome } from "./dispatch-gate.ts";
import type { CapacityConfig } from "./settings.ts";

/** RunPod's `GET /health`, as the dispatcher keeps it. */
export interface Fleet {
  ready: number;
  running: number;
  initializing: number;
  throttled: number;
  unhealthy: number;
  inQueue: number;
  inProgress: number;
  /** When it was read (ms). */
  at: number;
}

/** What a finished run says about the fleet (its webhook's or status's figures). */
export interface RunFigures {
  type: string;
  /** ms queued at RunPod. */
  delayMs: number | null;
  /** ms on the GPU. */
  executionMs: number | null;
}

export interface CapacityState {
  fleet: Fleet | null;
  /** Run length by type (ms), a moving average of executionTime. */
  runMs: Record<string, number>;
  /** Run length of any type (ms), a moving average. */
  anyRunMs: number | null;
  /** Time queued at RunPod (ms), a moving average of delayTime. */
  delayMs: number | null;
  /** delayMs at the last poll, to see it rise. */
  delayAtPoll: number | null;
  /** The refill latency (ms): from a freed slot's admission to its /run answered. */
  refillMs: number;
  /** The back-off's ceiling on the cap; null: none. */
  ceiling: number | null;
  /** How much a clean poll lifts the ceiling: an eighth of the cap before the first cut. */
  ceilingStep: number;
  /** The last submissions' outcomes, for the failure rate ("f" failed, "o" answered). */
  outcomes: string;
  /** Since when (ms) runs have been queued at RunPod while asked for and no worker came; 0: not. */
  queuedSince: number;
  /** When the ceiling was last lowered (ms): one back-off per BACKOFF_SPACING_MS. */
  backedOffAt: number;
  backoffReason: string | null;
  /** Workers (ready + running + initializing) at the last poll, and when that number last grew. */
  workers: number;
  grewAt: number;
  /** Runs were queued for the autoscaler since (ms; 0: not now). */
  askingSince: number;
  /** When runs were last queued for the autoscaler (ms): their long waits are no alarm. */
  askedUntil: number;
  /** Growth stalled: nothing queued for the autoscaler until then (ms). */
  stalledUntil: number;
}

export interface Cap {
  cap: number;
  reason: string;
  /** Runs queued at RunPod for its autoscaler (0 once the fleet stopped growing). */
  growth: number;
}

/** Without RUNPOD_MAX_WORKERS, the cap stops growing at this many runs in flight. */
export const UNKNOWN_MAX_RUNS = 100;
/** Before the first answer of /health: a cap that admits a little while it comes. */
export const FLEET_UNKNOWN_CAP = 2;
/** The refill latency before any is measured, through the queue (a batch's timeout, about). */
export const DEFAULT_REFILL_MS = 1_000;
/** The same through the consumer's refill entrypoint (a claim and a /run, about). */
export const FAST_REFILL_MS = 300;
/** A run length before any is learned (ms). */
export const DEFAULT_RUN_MS = 30_000;
/** Runs queued for the autoscaler and no new worker for this long: growth stalled. */
export const STALL_MS = 15_000;
/** A stalled growth is tried again after this long. */
export const STALL_RETRY_MS = 300_000;
/** At most one multiplicative back-off per this long (one per "round trip"). */
export const BACKOFF_SPACING_MS = 2_000;
/** A worker that is queued behind a cold start: how long a claim may wait at worst for it. */
export const COLD_START_ALLOWANCE_MS = 120_000;
const AVERAGE_WEIGHT = 0.2;

export function initialCapacity(refillMs = DEFAULT_REFILL_MS): CapacityState {
  return {
    fleet: null,
    runMs: {},
    anyRunMs: null,
    delayMs: null,
    delayAtPoll: null,
    refillMs,
    ceiling: null,
    ceilingStep: 1,
    outcomes: "",
    queuedSince: 0,
    backedOffAt: 0,
    backoffReason: null,
    workers: 0,
    grewAt: 0,
    askingSince: 0,
    askedUntil: 0,
    stalledUntil: 0,
  };
}

const average = (previous: number | null | undefined, sample: number) =>
  previous === null || previous === undefined
    ? sample
    : previous + AVERAGE_WEIGHT * (sample - previous);

/** Lowers the ceiling at once: `factor` of the cap now (at least 1). */
function backOff(
  state: CapacityState,
  now: number,
  current: number,
  factor: number,
  reason: string,
): CapacityState {
  if (now - state.backedOffAt < BACKOFF_SPACING_MS) return state;
  const from = Math.min(state.ceiling ?? current, current);
  return {
    ...state,
    ceiling: Math.max(1, Math.floor(from * factor)),
    ceilingStep: state.ceiling === null ? Math.max(1, Math.ceil(current / 8)) : state.ceilingStep,
    backedOffAt: now,
    backoffReason: reason,
  };
}

/** Finished runs: their figures teach the run length (per type) and RunPod's queue delay. */
export function observeRuns(state: CapacityState, runs: readonly RunFigures[]): CapacityState {
  let next = state;
  for (const run of runs) {
    if (run.executionMs !== null && run.executionMs > 0) {
      next = {
        ...next,
        runMs: { ...next.runMs, [run.type]: average(next.runMs[run.type], run.executionMs) },
        anyRunMs: average(next.anyRunMs, run.executionMs),
      };
    }
    if (run.delayMs !== null && run.delayMs >= 0) {
      next = { ...next, delayMs: average(next.delayMs, run.delayMs) };
    }
  }
  return next;
}

/** A refill's measured latency (ms). */
export function observeRefill(state: CapacityState, ms: number): CapacityState {
  return { ...state, refillMs: average(state.refillMs, Math.max(0, ms)) };
}

/** Outcomes judged for the failure rate, and the fewest that can back off. */
export const OUTCOME_WINDOW = 20;
const OUTCOMES_TO_JUDGE = 10;

/**
 * What a batch's submissions met: a 429 backs off at once; failures (5xx, timeouts) only when
 * they are half or more of the last OUTCOME_WINDOW submissions (at least 10 of them), after which
 * the window starts again. Degraded is not down: a failure here and there is the seed's CASE's
 * business, and a cap cut for each unlucky batch would shrink it to nothing.
 */
export function observeOutcomes(
  state: CapacityState,
  outcomes: readonly SubmitOutcome[],
  now: number,
  current: number,
): CapacityState {
  if (outcomes.some((outcome) => outcome.kind === "rate_limited")) {
    return backOff(state, now, current, 0.75, "RunPod answered 429");
  }
  const marks = outcomes
    .filter((outcome) => outcome.kind === "ok" || outcome.kind === "failed")
    .map((outcome) => (outcome.kind === "failed" ? "f" : "o"))
    .join("");
  const window = ((state.outcomes ?? "") + marks).slice(-OUTCOME_WINDOW);
  const failed = [...window].filter((mark) => mark === "f").length;
  if (window.length >= OUTCOMES_TO_JUDGE && failed * 2 >= window.length) {
    const cut = backOff(
      state,
      now,
      current,
      0.75,
      `${failed} of the last ${window.length} submissions failed`,
    );
    return { ...cut, outcomes: cut === state ? window : "" };
  }
  return { ...state, outcomes: window };
}

/** A fresh answer of /health. `current`: the cap before it. */
export function observeFleet(state: CapacityState, fleet: Fleet, current: number): CapacityState {
  const now = fleet.at;
  const workers = fleet.ready + fleet.running + fleet.initializing;
  let next: CapacityState = {
    ...state,
    fleet,
    workers,
    grewAt: workers > state.workers ? now : state.grewAt,
    delayAtPoll: state.delayMs,
  };
  // Runs waiting at RunPod for a worker while we ask the autoscaler for more: since when.
  const waitingForWorkers = next.askingSince > 0 && fleet.inQueue > 0 && workers <= state.workers;
  next = {
    ...next,
    queuedSince: waitingForWorkers ? state.queuedSince || now : 0,
  };
  if (waitingForWorkers && now - next.queuedSince >= STALL_MS) {
    // Runs waited for the autoscaler and no worker came: it will not grow now (account limits,
    // no GPUs of the type, a lower max than we know). Keep the queue short; ask again later.
    // (Runs not submitted — a paused gate, the pace — are no sign: only runs queued at RunPod.)
    next = { ...next, askingSince: 0, queuedSince: 0, stalledUntil: now + STALL_RETRY_MS };
  }
  // Runs queued for the autoscaler waited on purpose (cold starts): their delays say nothing
  // until the runs submitted since have ended.
  const settled = now - state.askedUntil > Math.max(STALL_MS, 3 * runLengthMs(state));
  const rising =
    state.delayAtPoll !== null &&
    state.delayMs !== null &&
    state.delayMs > state.delayAtPoll * 1.25 &&
    state.delayMs > 2 * Math.max(next.refillMs, 1_000) &&
    fleet.initializing === 0 &&
    next.askingSince === 0 &&
    settled;
  if (fleet.throttled > 0 || fleet.unhealthy > 0) {
    return backOff(
      next,
      now,
      current,
      0.5,
      `${fleet.throttled} throttled, ${fleet.unhealthy} unhealthy workers`,
    );
  }
  if (rising) {
    return backOff(
      next,
      now,
      current,
      0.5,
      `runs wait longer at RunPod (${Math.round(state.delayMs ?? 0)} ms)`,
    );
  }
  if (next.ceiling !== null && next.ceiling > current) {
    // The model's cap is below the ceiling: the back-off is over.
    next = { ...next, ceiling: null, backoffReason: null };
  }
  if (next.ceiling !== null) {
    // A clean poll: the ceiling grows back one step (an eighth of the cap before the first cut).
    next = { ...next, ceiling: next.ceiling + Math.max(1, next.ceilingStep ?? 1) };
  }
  return next;
}

/** The run length to plan with (ms): of `type` when learned, else of any type, else a default. */
export function runLengthMs(state: CapacityState, type?: string): number {
  return (type === undefined ? undefined : state.runMs[type]) ?? state.anyRunMs ?? DEFAULT_RUN_MS;
}

/**
 * The cap now, for `backlog` jobs waiting in the dispatcher. Also says whether runs are queued for
 * the autoscaler, so the caller can note when that began (`asking`).
 */
export function capOf(
  state: CapacityState,
  config: CapacityConfig,
  backlog: number,
  now: number,
): Cap {
  if (config.maxInFlight !== "auto") {
    return { cap: config.maxInFlight, reason: "RUNPOD_MAX_IN_FLIGHT", growth: 0 };
  }
  const perWorker = config.scaler.kind === "request_count" ? config.scaler.runsPerWorker : 1;
  const maxWorkers = config.maxWorkers ?? Math.ceil(UNKNOWN_MAX_RUNS / perWorker);
  const fleet = state.fleet;
  if (fleet === null) {
    return { cap: FLEET_UNKNOWN_CAP, reason: "fleet not known yet (first /health)", growth: 0 };
  }
  const working = fleet.ready + fleet.running;
  const total = working + fleet.initializing;
  const headroom = Math.max(1, Math.ceil((state.refillMs * working) / runLengthMs(state)));
  const stalled = now < state.stalledUntil;
  let growth = 0;
  let why: string;
  if (backlog === 0) why = "no backlog";
  else if (total >= maxWorkers) {
    why =
      config.maxWorkers === null
        ? `${UNKNOWN_MAX_RUNS} runs, the most without RUNPOD_MAX_WORKERS`
        : `the fleet is at its maximum (${maxWorkers} workers)`;
  } else if (fleet.throttled > 0) why = `${fleet.throttled} workers throttled`;
  else if (stalled) why = "the autoscaler added no worker lately";
  else {
    const room = maxWorkers - total;
    growth = Math.min(backlog, room, config.maxWorkers === null ? Math.max(2, total) : room);
    why = `growing: ${total} workers of ${config.maxWorkers ?? "?"}, ${growth} runs queued for the autoscaler`;
  }
  const keep = total + growth;
  let cap = keep * perWorker + headroom;
  let reason =
    growth > 0
      ? why
      : `steady: ${working} workers${fleet.initializing ? ` + ${fleet.initializing} starting` : ""} + ${headroom} headroom (${why})`;
  const limit = maxWorkers * perWorker + headroom;
  if (cap > limit) {
    cap = limit;
    reason = `${reason}; at the limit (${config.maxWorkers === null ? `${UNKNOWN_MAX_RUNS} runs: set RUNPOD_MAX_WORKERS` : "RUNPOD_MAX_WORKERS"})`;
  }
  if (state.ceiling !== null && state.ceiling < cap) {
    cap = state.ceiling;
    reason = `backing off: ${state.backoffReason ?? "RunPod is struggling"}`;
  }
  return { cap: Math.max(1, cap), reason, growth };
}

/** Notes when runs began to be queued for the autoscaler (growth > 0), or that they no longer are. */
export function noteAsking(state: CapacityState, growth: number, now: number): CapacityState {
  if (growth > 0 && state.askingSince === 0) return { ...state, askingSince: now, grewAt: now };
  if (growth === 0 && state.askingSince !== 0) {
    return { ...state, askingSince: 0, askedUntil: now };
  }
  return state;
}

/**
 * How long a run submitted now may wait at RunPod before it starts (ms): what the claim deadline
 * of a submission whose /run answer was lost stretches by. From the learned delay, the runs
 * queued ahead and the workers taking them, plus a cold start while no worker is up.
 */
export function expectedQueueMs(state: CapacityState): number {
  const fleet = state.fleet;
  if (fleet === null || fleet.inQueue === 0) return Math.round(state.delayMs ?? 0);
  const takers = fleet.ready + fleet.running + fleet.initializing;
  const behind = (fleet.inQueue * runLengthMs(state)) / Math.max(1, takers);
  const coldStart = fleet.ready + fleet.running === 0 ? COLD_START_ALLOWANCE_MS : 0;
  return Math.round(Math.max(2 * (state.delayMs ?? 0), behind) + coldStart);
}
