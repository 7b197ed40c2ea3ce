// The Workers' binding types, derived from the ones `wrangler types` generates from wrangler.toml's
// [env.producer] and [env.consumer]: Cloudflare.ProducerEnv and Cloudflare.ConsumerEnv in
// worker-configuration.d.ts (`npm run types` regenerates it; `npm run types:check`, the first step
// of `npm test`, fails when it and wrangler.toml differ). Written here is only what wrangler.toml
// cannot say: the queue's message and the Durable Objects' classes, the secrets, and the settings
// that no environment declares.

import type { Dispatcher } from "./dispatcher.ts";
import type { LiveChannel, LiveHub } from "./live-hub.ts";

import type { NotifyMessage } from "./notify.ts";
import type { JobMessage } from "./schemas.ts";

export type { JobMessage };

/** The bindings whose generated type is looser than what they hold. */
interface Narrowed {
  EXPORT_QUEUE: Queue<JobMessage>;
  /** Outbound webhooks to try now (shared/notify.ts). */
  NOTIFY_QUEUE: Queue<NotifyMessage>;
  /** The dispatch gate, one object per RunPod endpoint (shared/dispatcher.ts). */
  DISPATCHER: DurableObjectNamespace<Dispatcher>;
  /** Live status: one hub per project and one for operators (shared/live-hub.ts); both publish. */
  LIVE_HUB: DurableObjectNamespace<LiveHub>;
  /** The socket of a live ticket naming several projects (shared/live-hub.ts). */
  LIVE_CHANNEL: DurableObjectNamespace<LiveChannel>;
}

/**
 * What a narrowed binding must fit: its generated type or, for a Durable Object namespace (which
 * wrangler types leaves without its class), a namespace of some class.
 */
type Fits<Generated, Narrow> = Generated extends DurableObjectNamespace
  ? Narrow extends DurableObjectNamespace<infer Class>
    ? DurableObjectNamespace<Class>
    : Generated
  : Generated;

/** Every key of `Narrow` names a binding of `Generated` and its type fits the generated one. */
type NarrowingOf<Generated, Narrow> = {
  [K in keyof Narrow]: K extends keyof Generated ? Fits<Generated[K], Narrow[K]> : never;
};

/**
 * A Worker's generated bindings with `Narrow`'s types in place of the generated ones; a binding
 * `Narrow` names that wrangler.toml renamed or removed fails the typecheck here. Vars (strings)
 * are optional: shared/settings.ts falls back to the default of a missing or empty one.
 */
type FromWrangler<Generated, Narrow extends NarrowingOf<Generated, Narrow>> = Omit<
  { [K in keyof Generated as Generated[K] extends string ? never : K]: Generated[K] },
  keyof Narrow
> &
  Narrow & { [K in keyof Generated as Generated[K] extends string ? K : never]?: Generated[K] };

type ProducerBindings = FromWrangler<Cloudflare.ProducerEnv, Narrowed>;
type ConsumerBindings = FromWrangler<Cloudflare.ConsumerEnv, Narrowed>;

/** Secrets: `wrangler secret put NAME --env …`, not in wrangler.toml; missing until they are put. */
interface RunpodSecrets {
  RUNPOD_API_KEY?: string;
  WEBHOOK_SECRET?: string;
  /** The secret before a rotation: still accepted when verifying (shared/keys.ts). */
  WEBHOOK_SECRET_PREVIOUS?: string;
}

export interface ProducerEnv extends ProducerBindings, RunpodSecrets {
  API_TOKEN?: string;
  ADMIN_TOKEN?: string;
  /** Not in wrangler.toml: the origin allowed by CORS, none when missing. */
  CORS_ORIGIN?: string;
  /** Progress reports push the next poll of a run this far ahead (the consumer's setting). */
  POLL_AFTER_S?: string;
}

export interface ConsumerEnv extends ConsumerBindings, RunpodSecrets {
  /** The Standard Webhooks secret of outbound webhooks (`whsec_…`), with NOTIFY_URL. */
  NOTIFY_SECRET?: string;
  /** Not in wrangler.toml: outbound webhooks' timeout and retry schedule (tests, benches). */
  NOTIFY_TIMEOUT_MS?: string;
  NOTIFY_RETRY_S?: string;
  /** Not in wrangler.toml: the endpoint's max workers, bounding an `auto` cap (none when missing). */
  RUNPOD_MAX_WORKERS?: string;
}

/** Settings both Workers read (shared/settings.ts's runpodSettings and retrySettings). */
export type CommonEnv = Pick<ProducerEnv, keyof ProducerEnv & keyof ConsumerEnv>;
