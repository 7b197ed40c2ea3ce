// Starts the whole pipeline on this machine: local D1 migrations, a sample input in local R2,
// the RunPod emulator (unless RUNPOD_BASE_URL points elsewhere) and both Workers under
// `wrangler dev`, sharing one `--persist-to` directory (and so D1, R2 and the queue).
// Used by `npm start` (scripts/start.ts) and by the end-to-end tests.

import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const wranglerJs = path.join(root, "node_modules/wrangler/bin/wrangler.js");

/** The contract's fixed local defaults; any of them (and every other setting) can be overridden. */
export const LOCAL_DEFAULTS: Record<string, string> = {
  API_TOKEN: "dev-api-token",
  ADMIN_TOKEN: "dev-admin-token",
  WEBHOOK_SECRET: "dev-webhook-secret",
  RUNPOD_API_KEY: "dev-runpod-key",
  RUNPOD_ENDPOINT_ID: "local-endpoint",
};

/** Every setting of the contract that `npm start` passes through from the environment. */
export const SETTING_NAMES = [
  "RUNPOD_API_KEY",
  "RUNPOD_ENDPOINT_ID",
  "RUNPOD_BASE_URL",
  "PUBLIC_URL",
  "WEBHOOK_SECRET",
  "API_TOKEN",
  "ADMIN_TOKEN",
  "CLAIM_TIMEOUT_S",
  "POLL_AFTER_S",
  "PENDING_GRACE_S",
  "RETRY_BASE_DELAY_S",
  "RETRY_MAX_DELAY_S",
  "SUBMIT_CONCURRENCY",
  "CORS_ORIGIN",
  "RUNPOD_TIMEOUT_MS",
  "RUNPOD_EXECUTION_TIMEOUT_MS",
  "RUNPOD_TTL_MS",
] as const;

export interface StackOptions {
  producerPort?: number;
  consumerPort?: number;
  emulatorPort?: number;
  inspectorPorts?: [number, number];
  persistTo?: string;
  /** Settings for both Workers; missing ones fall back to LOCAL_DEFAULTS and wrangler.toml. */
  settings?: Record<string, string | undefined>;
  /** Vars for the consumer only, after `settings` (may be empty, e.g. to mis-configure it). */
  consumerVars?: Record<string, string>;
  /** Extra environment for the emulator process (timings and faults, see emulator/README.md). */
  emulatorEnv?: Record<string, string>;
  /** Where child output goes; defaults to this process's stdout with a [name] prefix. */
  onOutput?: (name: string, line: string) => void;
}

export interface LocalStack {
  producerUrl: string;
  consumerUrl: string;
  runpodBaseUrl: string;
  emulatorUrl: string | null;
  settings: Record<string, string>;
  /** Kills the consumer Worker's process at once (SIGKILL), as a crash would. */
  crashConsumer(): Promise<void>;
  /** Starts the consumer Worker again after a crash and waits until it answers. */
  restartConsumer(): Promise<void>;
  stop(): Promise<void>;
}

/** The last lines each child printed, to explain an early exit. */
const recent = new WeakMap<ChildProcess, string[]>();

function run(name: string, args: string[], env: NodeJS.ProcessEnv, out: StackOptions["onOutput"]) {
  const child = spawn(process.execPath, args, {
    cwd: root,
    env,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const forward = (chunk: Buffer) => {
    for (const line of chunk.toString().split("\n")) {
      if (!line.trim()) continue;
      out?.(name, line);
      recent.set(child, [...(recent.get(child) ?? []).slice(-14), line]);
    }
  };
  child.stdout?.on("data", forward);
  child.stderr?.on("data", forward);
  return child;
}

function runToEnd(
  name: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  out: StackOptions["onOutput"],
) {
  return new Promise<void>((resolve, reject) => {
    const child = run(name, args, env, out);
    child.on("exit", (code) => {
      const lines = (recent.get(child) ?? []).join("\n");
      if (code === 0) resolve();
      else reject(new Error(`${name} exited with ${code}${lines ? `:\n${lines}` : ""}`));
    });
  });
}

async function waitUntilUp(url: string, what: string, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (child.exitCode !== null) {
      const lines = (recent.get(child) ?? []).join("\n");
      throw new Error(`${what} exited with ${child.exitCode}${lines ? `:\n${lines}` : ""}`);
    }
    try {
      await fetch(url, { signal: AbortSignal.timeout(1000) });
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  throw new Error(`${what} did not start at ${url}`);
}

function stopChild(child: ChildProcess, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) {
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      try {
        process.kill(-(child.pid as number), "SIGKILL");
      } catch {}
      resolve();
    }, 5000);
    child.on("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    try {
      process.kill(-(child.pid as number), signal);
    } catch {
      clearTimeout(timer);
      resolve();
    }
  });
}

/** A few bytes with an MP4 `ftyp` box: enough for the producer's existence check. */
function writeSample(dir: string): string {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, "sample.mp4");
  const ftyp = Buffer.from([
    0, 0, 0, 24, 0x66, 0x74, 0x79, 0x70, 0x69, 0x73, 0x6f, 0x6d, 0, 0, 2, 0, 0x69, 0x73, 0x6f, 0x6d,
    0x6d, 0x70, 0x34, 0x31,
  ]);
  writeFileSync(file, ftyp);
  return file;
}

export async function startLocalStack(options: StackOptions = {}): Promise<LocalStack> {
  const producerPort = options.producerPort ?? 8787;
  const consumerPort = options.consumerPort ?? 8788;
  const emulatorPort = options.emulatorPort ?? 8790;
  const [producerInspector, consumerInspector] = options.inspectorPorts ?? [9229, 9230];
  const persistTo = path.resolve(root, options.persistTo ?? ".wrangler/state");
  const out = options.onOutput ?? ((name, line) => console.log(`[${name}] ${line}`));

  const given = Object.fromEntries(
    Object.entries(options.settings ?? {}).filter(
      (entry): entry is [string, string] => entry[1] !== undefined && entry[1] !== "",
    ),
  );
  const useEmulator = !given.RUNPOD_BASE_URL;
  const settings: Record<string, string> = {
    ...LOCAL_DEFAULTS,
    PUBLIC_URL: `http://127.0.0.1:${producerPort}`,
    RUNPOD_BASE_URL: `http://127.0.0.1:${emulatorPort}/v2`,
    ...given,
  };
  const childEnv: NodeJS.ProcessEnv = {
    ...process.env,
    WRANGLER_SEND_METRICS: "false",
    CLOUDFLARE_CF_FETCH_ENABLED: "false",
    WRANGLER_LOG: process.env.WRANGLER_LOG ?? "warn",
    NO_COLOR: "1",
    // Both Workers find each other (and the queue's consumer) through wrangler's dev registry;
    // one registry per state directory keeps two stacks on one machine from crossing wires.
    WRANGLER_REGISTRY_PATH: path.join(persistTo, "..", "registry"),
  };
  const wrangler = (...args: string[]) => [wranglerJs, ...args];
  const persist = ["--persist-to", persistTo];

  await runToEnd(
    "migrate",
    wrangler(
      "d1",
      "migrations",
      "apply",
      "reel-ballers",
      "--env",
      "producer",
      "--local",
      ...persist,
    ),
    childEnv,
    out,
  );
  const sample = writeSample(path.join(persistTo, "..", "sample"));
  await runToEnd(
    "seed",
    wrangler(
      "r2",
      "object",
      "put",
      "reel-ballers-videos/uploads/demo/sample.mp4",
      "--file",
      sample,
      "--content-type",
      "video/mp4",
      "--env",
      "producer",
      "--local",
      ...persist,
    ),
    childEnv,
    out,
  );

  const children: ChildProcess[] = [];
  const stop = async () => {
    await Promise.all(children.map((child) => stopChild(child)));
  };
  try {
    let emulatorUrl: string | null = null;
    if (useEmulator) {
      const emulator = run(
        "emulator",
        [path.join(root, "emulator/main.ts")],
        {
          ...childEnv,
          RUNPOD_EMULATOR_PORT: String(emulatorPort),
          RUNPOD_EMULATOR_API_KEY: settings.RUNPOD_API_KEY,
          ...options.emulatorEnv,
        },
        out,
      );
      children.push(emulator);
      emulatorUrl = `http://127.0.0.1:${emulatorPort}`;
      await waitUntilUp(`${emulatorUrl}/health`, "the RunPod emulator", emulator);
    }

    const varFlags = (values: Record<string, string>) =>
      Object.entries(values).flatMap(([key, value]) => ["--var", `${key}:${value}`]);
    const vars = varFlags(settings);
    const dev = (envName: string, port: number, inspector: number, extra: string[] = []) =>
      wrangler(
        "dev",
        "--env",
        envName,
        "--local",
        "--ip",
        "127.0.0.1",
        "--port",
        String(port),
        "--inspector-port",
        String(inspector),
        "--show-interactive-dev-session=false",
        ...persist,
        ...vars,
        ...extra,
      );
    const producer = run(
      "producer",
      dev("producer", producerPort, producerInspector),
      childEnv,
      out,
    );
    children.push(producer);
    const consumerUrl = `http://127.0.0.1:${consumerPort}`;
    const startConsumer = async () => {
      const consumer = run(
        "consumer",
        dev("consumer", consumerPort, consumerInspector, [
          "--test-scheduled",
          ...varFlags(options.consumerVars ?? {}),
        ]),
        childEnv,
        out,
      );
      children.push(consumer);
      await waitUntilUp(`${consumerUrl}/__scheduled`, "the consumer", consumer);
      return consumer;
    };
    let consumer = await startConsumer();
    const producerUrl = `http://127.0.0.1:${producerPort}`;
    await waitUntilUp(`${producerUrl}/health`, "the producer", producer);
    return {
      producerUrl,
      consumerUrl,
      runpodBaseUrl: settings.RUNPOD_BASE_URL as string,
      emulatorUrl,
      settings,
      crashConsumer: () => stopChild(consumer, "SIGKILL"),
      restartConsumer: async () => {
        consumer = await startConsumer();
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
