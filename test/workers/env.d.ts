import type { D1Migration } from "cloudflare:test";
import type { ConsumerEnv, ProducerEnv } from "../../shared/env.ts";

declare global {
  namespace Cloudflare {
    interface Env extends ProducerEnv, ConsumerEnv {
      TEST_MIGRATIONS: D1Migration[];
      RUNPOD_BASE_URL: string;
    }
  }
}
