// Starts the whole pipeline on this machine: local D1 migrations, a sample input in local R2,
// the RunPod emulator (unless RUNPOD_BASE_URL points elsewhere) and both Workers under
// `wrangler dev`, sharing one `--persist-to` directory (and so D1, R2 and the queue).
// With the emulator comes the local R2 writer (scripts/local-r2/, a local-only Worker on the same
// state): the emulator, playing the GPU handler, copies each completed job's input to its
// output_video_key through it, so a COMPLETED run has its output in R2 as a real one would.
// Last comes the frontend example (examples/frontend/): a page and its stand-in backend, which
// holds API_TOKEN and proxies to the producer, showing create → live progress → download.
// Used by `npm start` (scripts/start.ts) and by the end-to-end tests.

import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import path from "node:path";
import { endpointRoutesVar, laneWeightsVar, notifySettings } from "../shared/settings.ts";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const wranglerJs = path.join(root, "node_modules/wrangler/bin/wrangler.js");
const guardTs = path.join(root, "scripts/guard.ts");
/** The local R2 writer's own config: local only, never part of the product's `wrangler deploy`. */
const r2WriterConfig = path.join(root, "scripts/local-r2/wrangler.toml");
/** The frontend example's backend (Node built-ins only), which also serves its page. */
const exampleFrontendTs = path.join(root, "examples/frontend/server.ts");

/** The contract's fixed local defaults; any of them (and every other setting) can be overridden. */
export const LOCAL_DEFAULTS: Record<string, string> = {
  API_TOKEN: "dev-api-token",
  ADMIN_TOKEN: "dev-admin-token",
  WEBHOOK_SECRET: "dev-webhook-secret",
  RUNPOD_API_KEY: "dev-runpod-key",
  RUNPOD_ENDPOINT_ID: "local-endpoint",
  // Outbound webhooks' key (Standard Webhooks: whsec_ and base64), used once NOTIFY_URL is set.
  NOTIFY_SECRET: "whsec_ZGV2LW5vdGlmeS1zZWNyZXQtZm9yLWxvY2FsLXVzZQ==",
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
  "RUNPOD_RUNS_PER_10S",
  "BREAKER_THRESHOLD",
  "BREAKER_COOLDOWN_S",
  "PENDING_MAX_AGE_S",
  "LIVE_TICKET_TTL_S",
  "LIVE_SESSION_MAX_S",
  "RUNPOD_MAX_IN_FLIGHT",
  "RUNPOD_MAX_WORKERS",
  "FLEET_POLL_S",
  "RUNPOD_SCALER",
  "BREAKER_WINDOW",
  "BREAKER_FAILURE_RATE",
  "BREAKER_PROBES",
  "ARCHIVE_AFTER_S",
  "PRIORITY_WEIGHTS",
  "RUNPOD_ENDPOINTS",
  "GPU_PRICE_PER_S",
  "WEBHOOK_SECRET_PREVIOUS",
  "CLIENT_TOKEN_MAX_TTL_S",
  "DOWNLOAD_URL_TTL_S",
  "MAX_ACTIVE_PER_USER",
  "INPUT_KEY_PREFIX",
  "NOTIFY_URL",
  "NOTIFY_SECRET",
  "NOTIFY_TIMEOUT_MS",
  "NOTIFY_RETRY_S",
] as const;

export interface StackOptions {
  producerPort?: number;
  consumerPort?: number;
  emulatorPort?: number;
  /** The local R2 writer (only with the emulator); defaults to emulatorPort + 1 (8791). */
  r2WriterPort?: number;
  inspectorPorts?: [number, number];
  /** The local R2 writer's inspector; defaults to the consumer's inspector port + 1 (9231). */
  r2WriterInspectorPort?: number;
  /** The frontend example (examples/frontend/); defaults to producerPort + 5 (8792); null: none. */
  exampleFrontendPort?: number | null;
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
  /** The local R2 writer (`GET|PUT /objects/<key>`), null when RUNPOD_BASE_URL is given. */
  r2WriterUrl: string | null;
  /** The frontend example's page (examples/frontend/), null when not started. */
  exampleFrontendUrl: string | null;
  /** The sample input's file, stored at `uploads/demo/sample.mp4` in R2. */
  sampleFile: string;
  settings: Record<string, string>;
  /** The state directory (D1, R2, queues) this stack holds. */
  persistTo: string;
  /** Kills the consumer Worker's process at once (SIGKILL), as a crash would. */
  crashConsumer(): Promise<void>;
  /** Starts the consumer Worker again after a crash and waits until it answers. */
  restartConsumer(): Promise<void>;
  /** Kills the producer Worker's process and starts it again (its live sockets close). */
  restartProducer(): Promise<void>;
  stop(): Promise<void>;
}

/** The last lines each child printed, to explain an early exit. */
const recent = new WeakMap<ChildProcess, string[]>();

/**
 * Starts a child under scripts/guard.ts: the guard leads a process group of its own and stops the
 * child's whole group when its stdin (a pipe from this process) closes, so nothing outlives the
 * stack, however the stack ends (a SIGKILL of `npm start`'s group included).
 */
function run(name: string, args: string[], env: NodeJS.ProcessEnv, out: StackOptions["onOutput"]) {
  const child = spawn(process.execPath, [guardTs, process.execPath, ...args], {
    cwd: root,
    env,
    detached: true,
    stdio: ["pipe", "pipe", "pipe"],
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
  child.stdin?.on("error", () => {});
  return child;
}

function runToEnd(name: string, child: ChildProcess) {
  return new Promise<void>((resolve, reject) => {
    child.on("exit", (code) => {
      const lines = (recent.get(child) ?? []).join("\n");
      if (code === 0) resolve();
      else reject(new StackStartError(`${name} exited with ${code}${lines ? `:\n${lines}` : ""}`));
    });
  });
}

async function waitUntilUp(url: string, what: string, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (child.exitCode !== null) {
      const lines = (recent.get(child) ?? []).join("\n");
      throw new StackStartError(
        `${what} exited with ${child.exitCode} while starting${lines ? `:\n${lines}` : ""}`,
      );
    }
    try {
      await fetch(url, { signal: AbortSignal.timeout(1000) });
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  throw new StackStartError(`${what} did not start at ${url}`);
}

/** Stops a guarded child: closing its stdin makes the guard stop the child's whole group. */
function stopChild(child: ChildProcess, signal?: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) {
    return Promise.resolve();
  }
  const pid = child.pid;
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      try {
        process.kill(-pid, "SIGKILL");
      } catch {}
      resolve();
    }, 8000);
    child.on("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    if (signal) {
      // A crash: the whole group at once, with no chance to clean up.
      try {
        process.kill(-pid, signal);
      } catch {}
    } else {
      child.stdin?.end();
    }
  });
}

/** A start that cannot come up: the message says why and what to do. */
/** `wrangler dev`'s flags for a local Worker on 127.0.0.1:`port`, its inspector on `inspector`. */
export function devServerFlags(port: number, inspector: number): string[] {
  return [
    "--local",
    "--ip",
    "127.0.0.1",
    "--port",
    String(port),
    "--inspector-port",
    String(inspector),
    "--show-interactive-dev-session=false",
  ];
}

export class StackStartError extends Error {}

/** Resolves with whether something listens on 127.0.0.1:port (or the port cannot be bound). */
function portInUse(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(true));
    server.listen({ port, host: "127.0.0.1", exclusive: true }, () => {
      server.close(() => resolve(false));
    });
  });
}

export async function checkPortsFree(ports: Record<string, number>): Promise<void> {
  const busy: string[] = [];
  for (const [what, port] of Object.entries(ports)) {
    if (await portInUse(port)) busy.push(`${port} (${what})`);
  }
  if (busy.length > 0) {
    throw new StackStartError(
      `cannot start: port${busy.length > 1 ? "s" : ""} ${busy.join(", ")} already in use.\n` +
        "If a reel-exports stack of this checkout is still running, `npm run stop` stops it; " +
        "otherwise stop whatever holds the port, or choose other ports " +
        "(PRODUCER_PORT, CONSUMER_PORT, EMULATOR_PORT, INSPECTOR_PORT; " +
        "the local R2 writer uses EMULATOR_PORT + 1 and INSPECTOR_PORT + 2; " +
        "the frontend example PRODUCER_PORT + 5 or EXAMPLE_FRONTEND_PORT, off to skip it).",
    );
  }
}

/** What a running stack writes into its state directory: who holds it, and how to stop it. */
export interface StackLock {
  pid: number;
  /** Process groups of the stack's guarded children (each guard leads its own). */
  groups: number[];
  started_at: string;
  ports: Record<string, number>;
}

export function lockPath(persistTo: string): string {
  return path.join(persistTo, "stack.json");
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

export function readLock(persistTo: string): StackLock | null {
  try {
    return JSON.parse(readFileSync(lockPath(persistTo), "utf8")) as StackLock;
  } catch {
    return null;
  }
}

/** Takes the state directory for this process, or says who holds it. */
function takeLock(persistTo: string, ports: Record<string, number>): StackLock {
  mkdirSync(persistTo, { recursive: true });
  const held = readLock(persistTo);
  if (held && held.pid !== process.pid && alive(held.pid)) {
    throw new StackStartError(
      `cannot start: another stack (pid ${held.pid}, started ${held.started_at}) uses ${persistTo}.\n` +
        "Two stacks on one state directory would lock each other's SQLite files. " +
        "Stop it with `npm run stop`, or give this one its own STATE_DIR.",
    );
  }
  const lock: StackLock = {
    pid: process.pid,
    groups: [],
    started_at: new Date().toISOString(),
    ports,
  };
  writeFileSync(lockPath(persistTo), JSON.stringify(lock));
  return lock;
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
  const r2WriterPort = options.r2WriterPort ?? emulatorPort + 1;
  const r2WriterInspector = options.r2WriterInspectorPort ?? consumerInspector + 1;
  const examplePort =
    options.exampleFrontendPort === undefined ? producerPort + 5 : options.exampleFrontendPort;
  const persistTo = path.resolve(root, options.persistTo ?? ".wrangler/state");
  const out = options.onOutput ?? ((name, line) => console.log(`[${name}] ${line}`));
  const registryPath = path.join(persistTo, "..", "registry");

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
    // The frontend example's page calls the API from its own origin (a client token).
    ...(examplePort !== null ? { CORS_ORIGIN: `http://127.0.0.1:${examplePort}` } : {}),
    ...given,
  };
  // Settings whose mistake would only show in the Workers' logs are refused here, naming them.
  endpointRoutesVar(settings.RUNPOD_ENDPOINTS, settings.RUNPOD_ENDPOINT_ID ?? "");
  laneWeightsVar(settings.PRIORITY_WEIGHTS);
  notifySettings(settings);
  const childEnv: NodeJS.ProcessEnv = {
    ...process.env,
    WRANGLER_SEND_METRICS: "false",
    CLOUDFLARE_CF_FETCH_ENABLED: "false",
    WRANGLER_LOG: process.env.WRANGLER_LOG ?? "warn",
    NO_COLOR: "1",
    // Both Workers find each other (and the queue's consumer) through wrangler's dev registry;
    // one registry per state directory keeps two stacks on one machine from crossing wires.
    WRANGLER_REGISTRY_PATH: registryPath,
  };
  const wrangler = (...args: string[]) => [wranglerJs, ...args];
  const persist = ["--persist-to", persistTo];

  const ports: Record<string, number> = {
    producer: producerPort,
    consumer: consumerPort,
    "producer inspector": producerInspector,
    "consumer inspector": consumerInspector,
    ...(useEmulator
      ? {
          "RunPod emulator": emulatorPort,
          "local R2 writer": r2WriterPort,
          "local R2 writer inspector": r2WriterInspector,
        }
      : {}),
    ...(examplePort !== null ? { "frontend example": examplePort } : {}),
  };
  await checkPortsFree(ports);
  const lock = takeLock(persistTo, ports);

  const children: ChildProcess[] = [];
  const guarded = (child: ChildProcess) => {
    children.push(child);
    if (child.pid !== undefined) lock.groups.push(child.pid);
    writeFileSync(lockPath(persistTo), JSON.stringify(lock));
    return child;
  };
  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= Promise.all(children.map((child) => stopChild(child))).then(() => {
      if (readLock(persistTo)?.pid === process.pid) rmSync(lockPath(persistTo), { force: true });
    });
    return stopped;
  };
  const once = (name: string, args: string[]) =>
    runToEnd(name, guarded(run(name, args, childEnv, out)));
  try {
    await once(
      "migrate",
      wrangler("d1", "migrations", "apply", "reel-ballers", "--local", ...persist),
    );
    const sample = writeSample(path.join(persistTo, "..", "sample"));
    await once(
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
    );

    let emulatorUrl: string | null = null;
    let r2WriterUrl: string | null = null;
    if (useEmulator) {
      // The emulator needs the R2 writer only when a run completes; it is started right after.
      r2WriterUrl = `http://127.0.0.1:${r2WriterPort}`;
      const emulator = guarded(
        run(
          "emulator",
          [path.join(root, "emulator/main.ts")],
          {
            ...childEnv,
            RUNPOD_EMULATOR_PORT: String(emulatorPort),
            RUNPOD_EMULATOR_API_KEY: settings.RUNPOD_API_KEY,
            // onComplete copies input_video_key to output_video_key through the R2 writer.
            RUNPOD_EMULATOR_OUTPUT_URL: `${r2WriterUrl}/objects`,
            ...options.emulatorEnv,
          },
          out,
        ),
      );
      emulatorUrl = `http://127.0.0.1:${emulatorPort}`;
      await waitUntilUp(`${emulatorUrl}/health`, "the RunPod emulator", emulator);

      // The GPU handler's access to R2, played locally: a Worker of its own (own config, never
      // deployed) on the same state directory, hence the same local bucket as the producer and
      // the consumer. Up before those Workers, which share its SQLite files (see below); only with
      // the emulator, since a real RunPod writes to R2 by itself.
      const r2Writer = guarded(
        run(
          "r2-writer",
          wrangler(
            "dev",
            "--config",
            r2WriterConfig,
            ...devServerFlags(r2WriterPort, r2WriterInspector),
            ...persist,
          ),
          childEnv,
          out,
        ),
      );
      await waitUntilUp(`${r2WriterUrl}/health`, "the local R2 writer", r2Writer);
    }

    const varFlags = (values: Record<string, string>) =>
      Object.entries(values).flatMap(([key, value]) => ["--var", `${key}:${value}`]);
    const vars = varFlags(settings);
    const dev = (envName: string, port: number, inspector: number, extra: string[] = []) =>
      wrangler(
        "dev",
        "--env",
        envName,
        ...devServerFlags(port, inspector),
        ...persist,
        ...vars,
        ...extra,
      );
    const consumerUrl = `http://127.0.0.1:${consumerPort}`;
    const startConsumer = async () => {
      const consumer = guarded(
        run(
          "consumer",
          dev("consumer", consumerPort, consumerInspector, [
            "--test-scheduled",
            ...varFlags(options.consumerVars ?? {}),
          ]),
          childEnv,
          out,
        ),
      );
      await waitUntilUp(`${consumerUrl}/__scheduled`, "the consumer", consumer);
      return consumer;
    };
    // One Worker after the other: two workerd processes opening the same fresh SQLite files at
    // once can meet SQLITE_BUSY and fail to start.
    let consumer = await startConsumer();
    const producerUrl = `http://127.0.0.1:${producerPort}`;
    const startProducer = async () => {
      const producer = guarded(
        run("producer", dev("producer", producerPort, producerInspector), childEnv, out),
      );
      await waitUntilUp(`${producerUrl}/health`, "the producer", producer);
      return producer;
    };
    let producer = await startProducer();

    // The frontend example: a page and the stand-in for the frontend's own backend, which holds
    // API_TOKEN and proxies to the producer; its page opens the live WebSocket to the producer.
    let exampleFrontendUrl: string | null = null;
    if (examplePort !== null) {
      const example = guarded(
        run(
          "example",
          [exampleFrontendTs],
          {
            ...childEnv,
            EXAMPLE_FRONTEND_PORT: String(examplePort),
            EXAMPLE_FRONTEND_HOST: "127.0.0.1",
            REEL_EXPORTS_URL: producerUrl,
            API_TOKEN: settings.API_TOKEN,
          },
          out,
        ),
      );
      exampleFrontendUrl = `http://127.0.0.1:${examplePort}`;
      await waitUntilUp(`${exampleFrontendUrl}/health`, "the frontend example", example);
    }
    return {
      producerUrl,
      consumerUrl,
      runpodBaseUrl: settings.RUNPOD_BASE_URL as string,
      emulatorUrl,
      r2WriterUrl,
      exampleFrontendUrl,
      sampleFile: sample,
      settings,
      persistTo,
      crashConsumer: () => stopChild(consumer, "SIGKILL"),
      restartProducer: async () => {
        // As a deploy does: the producer's process goes (its sockets with it) and comes back.
        await stopChild(producer, "SIGKILL");
        rmSync(path.join(registryPath, "reel-exports-producer"), { force: true });
        producer = await startProducer();
      },
      restartConsumer: async () => {
        // The dev registry holds one file per Worker name (JSON: debug port, instanceId), kept
        // fresh by its owner's 10 s heartbeat. A SIGKILLed consumer leaves its file behind, and
        // miniflare will not register a new instance over another's entry until it is 90 s stale
        // (WORKER_STALE_MS): until then the producer's DO and queue bindings still point at the
        // dead one. The stack owns this registry and killed that consumer: remove its entry.
        rmSync(path.join(registryPath, "reel-exports-consumer"), { force: true });
        consumer = await startConsumer();
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
