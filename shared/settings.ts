import type { GateConfig } from "./dispatch-gate.ts";
import type { CommonEnv, ConsumerEnv, ProducerEnv } from "./env.ts";

/** Reads a numeric var, falling back to the contract's default when it is missing or empty. */
function numberVar(value: string | undefined, fallback: number, name: string): number {
  if (value === undefined || value.trim() === "") return fallback;
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed < 0) {
    throw new Error(`setting ${name} must be a non-negative number, got ${JSON.stringify(value)}`);
  }
  return parsed;
}

export interface RunpodSettings {
  baseUrl: string;
  apiKey: string;
  endpointId: string;
  timeoutMs: number;
}

export interface RetrySettings {
  baseDelayS: number;
  maxDelayS: number;
}

export function runpodSettings(env: CommonEnv): RunpodSettings {
  return {
    baseUrl: (env.RUNPOD_BASE_URL || "https://api.runpod.ai/v2").replace(/\/+$/, ""),
    apiKey: env.RUNPOD_API_KEY ?? "",
    endpointId: env.RUNPOD_ENDPOINT_ID ?? "",
    timeoutMs: numberVar(env.RUNPOD_TIMEOUT_MS, 10_000, "RUNPOD_TIMEOUT_MS"),
  };
}

export function retrySettings(env: CommonEnv): RetrySettings {
  return {
    baseDelayS: numberVar(env.RETRY_BASE_DELAY_S, 30, "RETRY_BASE_DELAY_S"),
    maxDelayS: numberVar(env.RETRY_MAX_DELAY_S, 900, "RETRY_MAX_DELAY_S"),
  };
}

export interface ConsumerSettings {
  runpod: RunpodSettings;
  retry: RetrySettings;
  publicUrl: string;
  webhookSecret: string;
  claimTimeoutS: number;
  pollAfterS: number;
  pendingGraceS: number;
  submitConcurrency: number;
  executionTimeoutMs: number;
  ttlMs: number;
  gate: GateConfig & { maxInFlight: number };
  pendingMaxAgeS: number;
  /** Retention (shared/archive.ts): 0 keeps every job in D1. */
  archiveAfterS: number;
}

/**
 * A Worker invocation holds at most 6 connections waiting for response headers; more wait for a
 * free one while their timeout runs (spurious timeouts on Cloudflare, not under wrangler dev).
 */
export const MAX_SUBMIT_CONCURRENCY = 6;

export function consumerSettings(env: ConsumerEnv): ConsumerSettings {
  return {
    runpod: runpodSettings(env),
    retry: retrySettings(env),
    publicUrl: (env.PUBLIC_URL ?? "").replace(/\/+$/, ""),
    webhookSecret: env.WEBHOOK_SECRET ?? "",
    claimTimeoutS: numberVar(env.CLAIM_TIMEOUT_S, 120, "CLAIM_TIMEOUT_S"),
    pollAfterS: numberVar(env.POLL_AFTER_S, 300, "POLL_AFTER_S"),
    pendingGraceS: numberVar(env.PENDING_GRACE_S, 900, "PENDING_GRACE_S"),
    submitConcurrency: Math.min(
      MAX_SUBMIT_CONCURRENCY,
      Math.max(1, Math.floor(numberVar(env.SUBMIT_CONCURRENCY, 6, "SUBMIT_CONCURRENCY"))),
    ),
    executionTimeoutMs: numberVar(
      env.RUNPOD_EXECUTION_TIMEOUT_MS,
      1_800_000,
      "RUNPOD_EXECUTION_TIMEOUT_MS",
    ),
    ttlMs: numberVar(env.RUNPOD_TTL_MS, 86_400_000, "RUNPOD_TTL_MS"),
    gate: {
      runsPer10s: Math.max(1, numberVar(env.RUNPOD_RUNS_PER_10S, 900, "RUNPOD_RUNS_PER_10S")),
      breakerThreshold: Math.max(1, numberVar(env.BREAKER_THRESHOLD, 5, "BREAKER_THRESHOLD")),
      breakerCooldownS: Math.max(1, numberVar(env.BREAKER_COOLDOWN_S, 30, "BREAKER_COOLDOWN_S")),
      maxInFlight: Math.max(1, numberVar(env.RUNPOD_MAX_IN_FLIGHT, 20, "RUNPOD_MAX_IN_FLIGHT")),
    },
    pendingMaxAgeS: numberVar(env.PENDING_MAX_AGE_S, 86_400, "PENDING_MAX_AGE_S"),
    archiveAfterS: numberVar(env.ARCHIVE_AFTER_S, 2_592_000, "ARCHIVE_AFTER_S"),
  };
}

/** The producer's copy of the consumer's poll interval: progress reports push the next poll. */
export function pollAfterSeconds(env: ProducerEnv): number {
  return numberVar(env.POLL_AFTER_S, 300, "POLL_AFTER_S");
}

/** Seconds a live-status ticket stays good for opening `GET /live` (fractions allowed). */
export function liveTicketTtlSeconds(env: ProducerEnv): number {
  return numberVar(env.LIVE_TICKET_TTL_S, 60, "LIVE_TICKET_TTL_S");
}
