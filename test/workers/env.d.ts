import type { D1Migration } from "cloudflare:test";
// A namespace import: inside `namespace Cloudflare`, ProducerEnv and ConsumerEnv would name the
// generated interfaces of worker-configuration.d.ts, not shared/env.ts's.
import type * as bindings from "../../shared/env.ts";

declare global {
  namespace Cloudflare {
    // The tests' bindings (vitest.config.ts) are both Workers' at once. worker-configuration.d.ts
    // makes Env extend every binding of wrangler.toml too, optional where an environment lacks it
    // and with a Durable Object namespace of no class; each such binding is restated to fit both.
    // The narrowed type comes first, so its get() is the one calls resolve to.
    interface Env extends bindings.ProducerEnv, bindings.ConsumerEnv {
      TEST_MIGRATIONS: D1Migration[];
      /** A Rate Limiting binding of 3 per 60 s (vitest.config.ts), for the quota tests. */
      TEST_STRICT_LIMITER: RateLimit;
      RUNPOD_BASE_URL: string;
      VIDEOS: bindings.CommonEnv["VIDEOS"];
      EXPORT_QUEUE: bindings.CommonEnv["EXPORT_QUEUE"];
      NOTIFY_QUEUE: bindings.CommonEnv["NOTIFY_QUEUE"];
      DISPATCHER: bindings.CommonEnv["DISPATCHER"] & DurableObjectNamespace;
      LIVE_HUB: bindings.CommonEnv["LIVE_HUB"] & DurableObjectNamespace;
      LIVE_CHANNEL: bindings.CommonEnv["LIVE_CHANNEL"] & DurableObjectNamespace;
    }
  }
}
