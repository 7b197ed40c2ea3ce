import path from "node:path";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

const root = path.dirname(new URL(import.meta.url).pathname);

/** Test settings: short retry delays stay "growing", secrets are fixed test values. */
export const TEST_VARS = {
  RUNPOD_API_KEY: "test-runpod-key",
  RUNPOD_ENDPOINT_ID: "test-endpoint",
  RUNPOD_TIMEOUT_MS: "2000",
  RUNPOD_EXECUTION_TIMEOUT_MS: "1800000",
  RUNPOD_TTL_MS: "86400000",
  PUBLIC_URL: "https://exports.test",
  WEBHOOK_SECRET: "test-webhook-secret",
  API_TOKEN: "test-api-token",
  ADMIN_TOKEN: "test-admin-token",
  CLAIM_TIMEOUT_S: "120",
  POLL_AFTER_S: "300",
  PENDING_GRACE_S: "900",
  RETRY_BASE_DELAY_S: "30",
  RETRY_MAX_DELAY_S: "900",
  SUBMIT_CONCURRENCY: "4",
  RUNPOD_RUNS_PER_10S: "900",
  BREAKER_THRESHOLD: "5",
  BREAKER_COOLDOWN_S: "30",
  PENDING_MAX_AGE_S: "86400",
  LIVE_TICKET_TTL_S: "60",
  LIVE_SESSION_MAX_S: "3600",
  RUNPOD_MAX_IN_FLIGHT: "20",
  ARCHIVE_AFTER_S: "2592000",
};

// A tiny Worker that consumes `export-jobs` in tests and writes every message it receives into
// `test_sent_messages`, so tests can assert what the producer really sent through the real queue.
const queueSpy = `
export default {
  async queue(batch, env) {
    if (batch.messages.length === 0) return; // D1 refuses an empty batch ("No SQL statements")
    await env.DB.prepare("CREATE TABLE IF NOT EXISTS test_sent_messages (message_id TEXT PRIMARY KEY, body TEXT NOT NULL, received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f','now')))").run();
    await env.DB.batch(batch.messages.map((m) =>
      env.DB.prepare("INSERT OR IGNORE INTO test_sent_messages (message_id, body) VALUES (?, ?)").bind(m.id, JSON.stringify(m.body))));
    batch.ackAll();
  },
};`;

/**
 * The live-session tests' own project: the Durable Objects read LIVE_SESSION_MAX_S from the
 * bindings (their env), which a test cannot change, so these files get a short one.
 */
const LIVE_SESSION_TESTS = ["test/workers/live-session.test.ts"];

/**
 * A project of tests inside workerd with the real bindings: TEST_VARS, with `vars` over them
 * (for every binding: the Workers' handlers and the Durable Objects alike).
 */
function workersProject(
  name: string,
  files: { include: string[]; exclude?: string[] },
  vars: Record<string, string> = {},
) {
  return {
    extends: false,
    resolve: {
      // See shared/shims/module.ts: runpod-sdk's createRequire, as wrangler.toml's [alias].
      alias: { module: path.join(root, "shared/shims/module.ts") },
    },
    plugins: [
      cloudflareTest(async ({ inject }) => ({
        main: path.join(root, "test/workers/main.ts"),
        miniflare: {
          compatibilityDate: "2026-11-01",
          compatibilityFlags: ["nodejs_compat"],
          d1Databases: { DB: "reel-ballers-test" },
          r2Buckets: { VIDEOS: "reel-ballers-videos-test" },
          queueProducers: {
            EXPORT_QUEUE: { queueName: "export-jobs" },
            NOTIFY_QUEUE: { queueName: "export-notifications" },
          },
          // The Rate Limiting binding, simulated by Miniflare: generous for the suite, and a
          // strict one that the quota tests hand the producer in its place.
          ratelimits: {
            CREATE_LIMITER: { namespace_id: "1001", simple: { limit: 100_000, period: 60 } },
            TEST_STRICT_LIMITER: { namespace_id: "1002", simple: { limit: 3, period: 60 } },
          },
          durableObjects: {
            DISPATCHER: { className: "Dispatcher", useSQLite: true },
            LIVE_HUB: { className: "LiveHub", useSQLite: true },
            LIVE_CHANNEL: { className: "LiveChannel", useSQLite: true },
          },
          bindings: {
            ...TEST_VARS,
            ...vars,
            RUNPOD_BASE_URL: `${inject<string>("runpodEmulatorUrl")}/v2`,
            TEST_MIGRATIONS: await readD1Migrations(path.join(root, "migrations")),
          },
          workers: [
            {
              name: "queue-spy",
              modules: true,
              script: queueSpy,
              compatibilityDate: "2026-11-01",
              d1Databases: { DB: "reel-ballers-test" },
              queueConsumers: { "export-jobs": { maxBatchTimeout: 0.05 } },
            },
          ],
        },
      })),
    ],
    test: {
      name,
      testTimeout: 30_000,
      ...files,
      globalSetup: ["test/workers/global-setup.ts"],
      setupFiles: ["test/workers/apply-migrations.ts"],
    },
  };
}

export default defineConfig({
  test: {
    // Worker logs are printed for failing tests only.
    silent: "passed-only",
    projects: [
      workersProject("workers", {
        include: ["test/workers/**/*.test.ts"],
        exclude: LIVE_SESSION_TESTS,
      }),
      // Sockets closed 2 s after they open.
      workersProject(
        "workers-live-session",
        { include: LIVE_SESSION_TESTS },
        {
          LIVE_SESSION_MAX_S: "2",
        },
      ),
      {
        extends: false,
        test: {
          name: "node",
          environment: "node",
          // The end-to-end and browser files each run a whole local stack; one at a time.
          fileParallelism: false,
          include: ["test/node/**/*.test.ts"],
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
