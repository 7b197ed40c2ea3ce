// The dispatch gate's policy, as pure functions of its state and the time: the pace of
// `POST /run` across the whole fleet and the circuit breaker. shared/dispatcher.ts keeps one
// such state per RunPod endpoint in a Durable Object and is the only caller.
//
// Pace: a GCRA token bucket. Submissions are spaced 10 s / RUNPOD_RUNS_PER_10S apart, with a burst
// of half a second's worth (RunPod's own bucket then keeps spare tokens for network jitter); a 429 that still comes doubles the spacing (at most 8×, halving back
// every 10 s without one) and honours Retry-After.
// Breaker: BREAKER_THRESHOLD consecutive failed submissions (5xx, timeouts, network errors), or one
// 401/403, pause dispatch for BREAKER_COOLDOWN_S; then one probe goes through; its success resumes
// dispatch, its failure doubles the pause (at most 600 s).

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

export interface GateState {
  mode: GateMode;
  reason: string | null;
  /** When `mode` began (ms). */
  since: number;
  /** Paused: until when (ms). */
  pausedUntil: number;
  /** The pause to use next time the breaker opens from a failed probe (s). */
  pauseS: number;
  /** Consecutive failed submissions. */
  failures: number;
  /** GCRA's theoretical arrival time of the next submission (ms). */
  tat: number;
  /** No submission before this (ms): a 429's Retry-After. */
  blockedUntil: number;
  /** Spacing multiplier after 429s (1 = the configured pace). */
  slowdown: number;
  slowedAt: number;
  /** Probing: the outstanding probe's deadline; another probe may go after it (ms). */
  probeUntil: number;
}

export function initialGate(now: number): GateState {
  return {
    mode: "running",
    reason: null,
    since: now,
    pausedUntil: 0,
    pauseS: 0,
    failures: 0,
    tat: 0,
    blockedUntil: 0,
    slowdown: 1,
    slowedAt: 0,
    probeUntil: 0,
  };
}

export interface Grant {
  /** One entry per permit: how long to wait before submitting (ms). */
  delaysMs: number[];
  /** The permit is the breaker's probe: report its outcome. */
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
  /** The request itself was refused (a 4xx about the job): says nothing about RunPod's health. */
  | { kind: "rejected" };

/** How long a granted probe may stay unreported before another one is let through. */
const PROBE_TIMEOUT_MS = 60_000;
const MAX_PAUSE_S = 600;
const MAX_SLOWDOWN = 8;
const SLOWDOWN_HALF_LIFE_MS = 10_000;

function pause(state: GateState, now: number, pauseS: number, reason: string): GateState {
  return {
    ...state,
    mode: "paused",
    reason,
    since: now,
    pausedUntil: now + pauseS * 1000,
    pauseS,
    failures: 0,
  };
}

function resume(state: GateState, now: number): GateState {
  return { ...state, mode: "running", reason: null, since: now, failures: 0, pauseS: 0 };
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
    state = { ...state, mode: "probing", since: now, probeUntil: 0 };
  }
  const interval = (10_000 / Math.max(0.001, config.runsPer10s)) * state.slowdown;
  const burst = Math.max(1, Math.floor(config.runsPer10s / 20));
  const tolerance = (burst - 1) * interval;
  const probing = state.mode === "probing";
  if (probing && now < state.probeUntil) {
    return none(Math.min((state.probeUntil - now) / 1000, config.breakerCooldownS));
  }
  const limit = probing ? Math.min(1, wanted) : wanted;
  const delaysMs: number[] = [];
  let tat = state.tat;
  while (delaysMs.length < limit) {
    const at = Math.max(now, state.blockedUntil, tat - tolerance);
    if (at - now > maxWaitMs) break;
    delaysMs.push(Math.round(at - now));
    tat = Math.max(tat, at) + interval;
  }
  state = { ...state, tat, probeUntil: probing ? now + PROBE_TIMEOUT_MS : state.probeUntil };
  const nextAt = Math.max(now, state.blockedUntil, tat - tolerance);
  return {
    state,
    grant: {
      delaysMs,
      probe: probing && delaysMs.length > 0,
      retryInS: Math.max(1, Math.ceil(probing ? config.breakerCooldownS : (nextAt - now) / 1000)),
      mode: state.mode,
      reason: state.reason,
    },
  };
}

/**
 * Applies a batch's submission outcomes, in the order they happened. While probing, the only
 * submission let through is the probe, so an outcome reported then is the probe's (whichever
 * consumer made it: the dispatcher may have sent the probe job to any of them).
 */
export function report(
  current: GateState,
  config: GateConfig,
  now: number,
  outcomes: readonly SubmitOutcome[],
): GateState {
  let state = current;
  for (const outcome of outcomes) {
    if (state.mode === "paused") break; // what is left of the batch says nothing new
    const probing = state.mode === "probing";
    const reopen = (reason: string) =>
      pause(
        state,
        now,
        probing
          ? Math.min(MAX_PAUSE_S, Math.max(config.breakerCooldownS, state.pauseS * 2))
          : Math.min(MAX_PAUSE_S, config.breakerCooldownS),
        reason,
      );
    switch (outcome.kind) {
      case "ok":
        state = probing ? resume(state, now) : { ...state, failures: 0 };
        break;
      case "rejected":
        if (probing) state = resume(state, now);
        break;
      case "rate_limited": {
        const retryAfterMs = (outcome.retryAfterS ?? 1) * 1000;
        state = {
          ...(probing ? resume(state, now) : state),
          slowdown: Math.min(MAX_SLOWDOWN, state.slowdown * 2),
          slowedAt: now,
          blockedUntil: Math.max(state.blockedUntil, now + retryAfterMs),
        };
        break;
      }
      case "auth_failed":
        state = reopen(`RunPod refused the API key: ${outcome.error}`);
        break;
      case "failed": {
        const failures = state.failures + 1;
        if (probing) state = reopen(`the probe failed: ${outcome.error}`);
        else if (failures >= config.breakerThreshold) {
          state = reopen(`${failures} consecutive failed submissions; last: ${outcome.error}`);
        } else state = { ...state, failures };
        break;
      }
    }
  }
  return state;
}
