// Hand-kept binding types; they match wrangler.toml's [env.producer] and [env.consumer].
// Every var arrives as a string (or is missing); shared/settings.ts turns them into numbers.

import type { Dispatcher } from "./dispatcher.ts";
import type { LiveChannel, LiveHub } from "./live-hub.ts";

import type { JobMessage } from "./schemas.ts";

export type { JobMessage };

/** Settings both Workers read. */
export interface CommonEnv {
  DB: D1Database;
  EXPORT_QUEUE: Queue<JobMessage>;
  VIDEOS: R2Bucket;
  /** The dispatch gate, one object per RunPod endpoint (shared/dispatcher.ts). */
  DISPATCHER: DurableObjectNamespace<Dispatcher>;
  /** Live status: one hub per project and one for operators (shared/live-hub.ts); both publish. */
  LIVE_HUB: DurableObjectNamespace<LiveHub>;
  /** The socket of a live ticket naming several projects (shared/live-hub.ts). */
  LIVE_CHANNEL: DurableObjectNamespace<LiveChannel>;
  RUNPOD_API_KEY?: string;
  RUNPOD_ENDPOINT_ID?: string;
  RUNPOD_BASE_URL?: string;
  RUNPOD_TIMEOUT_MS?: string;
  WEBHOOK_SECRET?: string;
  RETRY_BASE_DELAY_S?: string;
  RETRY_MAX_DELAY_S?: string;
}

export interface ProducerEnv extends CommonEnv {
  API_TOKEN?: string;
  ADMIN_TOKEN?: string;
  CORS_ORIGIN?: string;
  /** Progress reports push the next poll of a run this far ahead (the consumer's setting). */
  POLL_AFTER_S?: string;
  /** How long a live-status ticket (POST /live-tickets) can be used to open GET /live. */
  LIVE_TICKET_TTL_S?: string;
}

export interface ConsumerEnv extends CommonEnv {
  PUBLIC_URL?: string;
  CLAIM_TIMEOUT_S?: string;
  POLL_AFTER_S?: string;
  PENDING_GRACE_S?: string;
  SUBMIT_CONCURRENCY?: string;
  RUNPOD_EXECUTION_TIMEOUT_MS?: string;
  RUNPOD_TTL_MS?: string;
  RUNPOD_RUNS_PER_10S?: string;
  BREAKER_THRESHOLD?: string;
  BREAKER_COOLDOWN_S?: string;
  PENDING_MAX_AGE_S?: string;
  RUNPOD_MAX_IN_FLIGHT?: string;
  /** A job finished this long ago is archived to R2 and deleted from D1; 0 keeps everything. */
  ARCHIVE_AFTER_S?: string;
}
