// The dispatch gate's policy, as pure functions of its state and the time: the pace of
// `POST /run` across the whole fleet and the circuit breaker. shared/dispatcher.ts keeps one
// such state per RunPod endpoint in a Durable Object and is the only caller.
//
// Pace: a GCRA token bucket. Submissions are spaced 10 s / RUNPOD_RUNS_PER_10S apart, with a burst
// of half a second's worth (RunPod's own bucket then keeps spare tokens for network jitter); a 429 that still comes doubles the spacing (at most 8×, halving back
// every 10 s without one) and honours Retry-After.
//
// Breaker: it judges rates, not single calls (resilience4j's count-based CircuitBreaker, adapted).
// - Each submission is marked for it (`markOf`): "x" failed (5xx, timeout, network error); "o"
//   RunPod answered (a run id, a 4xx about the job, a 429: RunPod is up, whatever it made of the
//   request; a 429 is the pace's business); "!" RunPod refused the API key (401/403).
// - Running, the endpoint is down (`trips`) when, among its last BREAKER_WINDOW submissions, at
//   least BREAKER_THRESHOLD failed and they are at least BREAKER_FAILURE_RATE of them; or at once
//   on a "!". A window not yet full (after a start or a resume) is judged over the submissions it
//   holds, BREAKER_THRESHOLD being the fewest failures that can trip it (resilience4j's
//   minimumNumberOfCalls, counted in failures): 5 failed of the first 8 is down, 4 of 4 is not.
// - Down, dispatch pauses ("paused") for the next pause (below), then lets BREAKER_PROBES
//   submissions through ("probing"); once all of them are reported, the same rate over them
//   decides, with no minimum count: below it, running again with an empty window; at or above it
//   (or on a "!"), paused again for twice the pause (at most 600 s). Probes still unreported
//   PROBE_TIMEOUT_MS after the last probe permit went are taken for lost (a consumer crashed):
//   their permits go again.
// - The next pause: BREAKER_COOLDOWN_S at first; a failed round of probes doubles it (at most
//   600 s); a resume keeps it; then each whole window of submissions judged while running
//   (BREAKER_WINDOW of them since the resume or the previous halving, none of them tripping the
//   breaker) halves it, never below BREAKER_COOLDOWN_S. A trip from running pauses for it as it
//   stands, not doubled. Counted in submissions, not time: only submissions say RunPod is up, so
//   an idle endpoint keeps its pause.
// - Down (`isDown`: paused or probing) is the state the endpoints' failover reads. While down no
//   job is admitted, so none is claimed and no retry is spent.
// Outcomes come by batch, after their submissions, and what the state cannot place is ignored:
// outcomes reported while paused (the rest of the batch that tripped it, or submissions made
// before the pause), and, while probing, outcomes beyond the probe permits outstanding
// (submissions made before the pause). While probing, an outcome is taken for a probe's,
// whichever consumer made it (the dispatcher may have sent a probe job to any of them): a late
// report of a pre-pause submission can stand in for a probe when one is outstanding.

export interface GateConfig {
  runsPer10s: number;
  /** Fewest failed submissions in the window that can mark the endpoint down. */
  breakerThreshold: number;
  /** The first pause (s). */
  breakerCooldownS: number;
  /** The last this many submissions are judged. */
  breakerWindow: number;
  /** Down at or above this share of failures in the window (0..1). */
  breakerFailureRate: number;
  /** Submissions let through after a pause; their failure rate decides. */
  breakerProbes: number;
}

export type GateMode = "running" | "paused" | "probing";

/** How the breaker counts a submission: "x" failed, "o" RunPod answered, "!" refused the key. */
export type Mark = "x" | "o" | "!";

export interface GateState {
  mode: GateMode;
  reason: string | null;
  /** When `mode` began (ms). */
  since: number;
  /** Paused: until when (ms). */
  pausedUntil: number;
  /** The current or last pause, which the next trip uses (s; 0: BREAKER_COOLDOWN_S). */
  pauseS: number;
  /** Running: the marks of the last submissions, oldest first, at most breakerWindow of them. */
  window: string;
  /** Running, `pauseS` above the cooldown: submissions judged since the resume or its halving. */
  calm: number;
  /** Probing: probe permits granted (a lost probe's permit is taken back). */
  probes: number;
  /** Probing: the marks of the probes reported, in order. */
  probed: string;
  /** Probing: when the last probe permit went + PROBE_TIMEOUT_MS (ms). */
  probeUntil: number;
  /** GCRA's theoretical arrival time of the next submission (ms). */
  tat: number;
  /** No submission before this (ms): a 429's Retry-After. */
  blockedUntil: number;
  /** Spacing multiplier after 429s (1 = the configured pace). */
  slowdown: number;
  slowedAt: number;
}

export function initialGate(now: number): GateState {
  return {
    mode: "running",
    reason: null,
    since: now,
    pausedUntil: 0,
    pauseS: 0,
    window: "",
    calm: 0,
    probes: 0,
    probed: "",
    probeUntil: 0,
    tat: 0,
    blockedUntil: 0,
    slowdown: 1,
    slowedAt: 0,
  };
}

/**
 * A state as stored, possibly by an older version of this module (the consecutive-failures
 * breaker): missing fields take their initial values.
 */
export function restoreGate(stored: Partial<GateState> | undefined, now: number): GateState {
  return { ...initialGate(now), ...stored };
}

export interface Grant {
  /** One entry per permit: how long to wait before submitting (ms). */
  delaysMs: number[];
  /** The permits are the breaker's probes: report their outcomes. */
  probe: boolean;
  /** For the jobs without a permit: when to come back (s, at least 1). */
  retryInS: number;
  mode: GateMode;
  reason: string | null;
}

export type SubmitOutcome =
  | { kind: "ok" }
  /** 5xx, timeout, network error: counts toward the breaker. */
  | { kind: "failed"; error: string }
  | { kind: "rate_limited"; retryAfterS: number | null }
  | { kind: "auth_failed"; error: string }
  /** The request itself was refused (a 4xx about the job): RunPod answered, so it is up. */
  | { kind: "rejected" };

/** How long probe permits may stay unreported before they are taken for lost. */
const PROBE_TIMEOUT_MS = 60_000;
const MAX_PAUSE_S = 600;
const MAX_SLOWDOWN = 8;
const SLOWDOWN_HALF_LIFE_MS = 10_000;

export function markOf(outcome: SubmitOutcome): Mark {
  switch (outcome.kind) {
    case "failed":
      return "x";
    case "auth_failed":
      return "!";
    case "ok":
    case "rejected":
    case "rate_limited":
      return "o";
  }
}

function failuresIn(marks: string): number {
  let failures = 0;
  for (const mark of marks) if (mark === "x") failures++;
  return failures;
}

/** At least `fewest` failures (and one), and at least `rate` of the marks. */
function failing(marks: string, fewest: number, rate: number): boolean {
  const failures = failuresIn(marks);
  return failures >= Math.max(1, fewest) && failures / marks.length >= rate;
}

/**
 * Whether these submissions (their marks, oldest first) say the endpoint is down: among the last
 * `breakerWindow` of them, at least `breakerThreshold` failed and they are at least
 * `breakerFailureRate` of them (over the marks there are, when fewer than the window), or a
 * refused key among them. The gate judges its window with it, and a consumer batch its own
 * submissions (it stops sending the rest).
 */
export function trips(marks: string, config: GateConfig): boolean {
  const last = marks.slice(-Math.max(1, config.breakerWindow));
  return last.includes("!") || failing(last, config.breakerThreshold, config.breakerFailureRate);
}

/** Paused or probing: not judged up. The endpoints' failover reads this. */
export function isDown(state: GateState): boolean {
  return state.mode !== "running";
}

/** The pause (s) the next trip uses: BREAKER_COOLDOWN_S at first, at most 600 s. */
function nextPauseS(state: GateState, config: GateConfig): number {
  const cooldown = Math.min(MAX_PAUSE_S, config.breakerCooldownS);
  return Math.min(MAX_PAUSE_S, Math.max(cooldown, state.pauseS));
}

function pause(state: GateState, now: number, pauseS: number, reason: string): GateState {
  return {
    ...state,
    mode: "paused",
    reason,
    since: now,
    pausedUntil: now + pauseS * 1000,
    pauseS,
    window: "",
    calm: 0,
    probes: 0,
    probed: "",
    probeUntil: 0,
  };
}

function resume(state: GateState, now: number): GateState {
  return {
    ...state,
    mode: "running",
    reason: null,
    since: now,
    window: "",
    calm: 0,
    probes: 0,
    probed: "",
    probeUntil: 0,
  };
}

/** Grants up to `wanted` permits, each due within `maxWaitMs`. */
export function acquire(
  current: GateState,
  config: GateConfig,
  now: number,
  wanted: number,
  maxWaitMs: number,
): { state: GateState; grant: Grant } {
  let state = current;
  if (state.slowdown > 1 && now - state.slowedAt >= SLOWDOWN_HALF_LIFE_MS) {
    state = { ...state, slowdown: Math.max(1, state.slowdown / 2), slowedAt: now };
  }
  const none = (retryInS: number): { state: GateState; grant: Grant } => ({
    state,
    grant: {
      delaysMs: [],
      probe: false,
      retryInS: Math.max(1, Math.ceil(retryInS)),
      mode: state.mode,
      reason: state.reason,
    },
  });
  if (state.mode === "paused") {
    if (now < state.pausedUntil) return none((state.pausedUntil - now) / 1000);
    state = { ...state, mode: "probing", since: now, probes: 0, probed: "", probeUntil: 0 };
  }
  const interval = (10_000 / Math.max(0.001, config.runsPer10s)) * state.slowdown;
  const burst = Math.max(1, Math.floor(config.runsPer10s / 20));
  const tolerance = (burst - 1) * interval;
  const probing = state.mode === "probing";
  const probes = Math.max(1, config.breakerProbes);
  if (probing && state.probes >= probes) {
    if (now < state.probeUntil) {
      return none(Math.min((state.probeUntil - now) / 1000, config.breakerCooldownS));
    }
    // Probes still unreported by now are lost (their consumer crashed): their permits go again.
    state = { ...state, probes: state.probed.length };
  }
  const limit = probing ? Math.min(wanted, probes - state.probes) : wanted;
  const delaysMs: number[] = [];
  let tat = state.tat;
  while (delaysMs.length < limit) {
    const at = Math.max(now, state.blockedUntil, tat - tolerance);
    if (at - now > maxWaitMs) break;
    delaysMs.push(Math.round(at - now));
    tat = Math.max(tat, at) + interval;
  }
  const probe = probing && delaysMs.length > 0;
  state = {
    ...state,
    tat,
    probes: state.probes + (probing ? delaysMs.length : 0),
    probeUntil: probe ? now + PROBE_TIMEOUT_MS : state.probeUntil,
  };
  const nextAt = Math.max(now, state.blockedUntil, tat - tolerance);
  return {
    state,
    grant: {
      delaysMs,
      probe,
      retryInS: Math.max(1, Math.ceil(probing ? config.breakerCooldownS : (nextAt - now) / 1000)),
      mode: state.mode,
      reason: state.reason,
    },
  };
}

/** Applies a batch's submission outcomes, in the order they happened (see the header). */
export function report(
  current: GateState,
  config: GateConfig,
  now: number,
  outcomes: readonly SubmitOutcome[],
): GateState {
  let state = current;
  let lastError: string | null = null;
  for (const outcome of outcomes) {
    if (state.mode === "paused") break; // what is left of the batch says nothing new
    if (outcome.kind === "rate_limited") {
      const retryAfterMs = (outcome.retryAfterS ?? 1) * 1000;
      state = {
        ...state,
        slowdown: Math.min(MAX_SLOWDOWN, state.slowdown * 2),
        slowedAt: now,
        blockedUntil: Math.max(state.blockedUntil, now + retryAfterMs),
      };
    }
    if (outcome.kind === "failed") lastError = outcome.error;
    const mark = markOf(outcome);
    const last = lastError === null ? "" : `; last: ${lastError}`;
    const keyRefused =
      outcome.kind === "auth_failed" && `RunPod refused the API key: ${outcome.error}`;
    if (state.mode === "probing") {
      // Beyond the probes outstanding: a submission made before the pause.
      if (state.probed.length >= state.probes) continue;
      const probed = state.probed + mark;
      const again = Math.min(MAX_PAUSE_S, 2 * nextPauseS(state, config));
      if (keyRefused) state = pause(state, now, again, keyRefused);
      else if (probed.length < Math.max(1, config.breakerProbes)) state = { ...state, probed };
      else if (failing(probed, 1, config.breakerFailureRate)) {
        const reason = `${failuresIn(probed)} of ${probed.length} probes failed${last}`;
        state = pause(state, now, again, reason);
      } else state = resume(state, now);
      continue;
    }
    const window = (state.window + mark).slice(-Math.max(1, config.breakerWindow));
    if (keyRefused) state = pause(state, now, nextPauseS(state, config), keyRefused);
    else if (trips(window, config)) {
      const reason = `${failuresIn(window)} of the last ${window.length} submissions failed${last}`;
      state = pause(state, now, nextPauseS(state, config), reason);
    } else {
      let { pauseS, calm } = state;
      // A whole window of submissions judged without going down halves the next pause.
      if (pauseS > config.breakerCooldownS && ++calm >= config.breakerWindow) {
        pauseS = Math.max(config.breakerCooldownS, pauseS / 2);
        calm = 0;
      }
      state = { ...state, window, pauseS, calm };
    }
  }
  return state;
}
