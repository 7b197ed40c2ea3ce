// What the bench's figures share: time, quantiles, HTTP with counted retries, free ports, the
// machine, and child processes that cannot outlive the bench (each runs under scripts/guard.ts,
// which ends its whole process group when its stdin pipe from this process closes, however the
// bench ends).
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import os from "node:os";
import path from "node:path";

export const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
export const wranglerJs = path.join(root, "node_modules/wrangler/bin/wrangler.js");
const guardTs = path.join(root, "scripts/guard.ts");

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Sleeps ms, or less if the signal aborts first. */
export function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}

/** mulberry32: a small seeded PRNG, so a run's choices repeat with its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Nearest-rank quantile of values (sorted here). NaN for none. */
export function quantile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)] ?? Number.NaN;
}

export const median = (values: readonly number[]) => quantile(values, 0.5);

/** The counts that changed from `before` to `after`, by key (zeros left out). */
export function delta(before: Record<string, number>, after: Record<string, number>) {
  const out: Record<string, number> = {};
  for (const key of new Set([...Object.keys(before), ...Object.keys(after)])) {
    const n = (after[key] ?? 0) - (before[key] ?? 0);
    if (n !== 0) out[key] = n;
  }
  return out;
}

export const round = (value: number, digits = 2) =>
  Number.isFinite(value) ? Number(value.toFixed(digits)) : value;

export interface Machine {
  nproc: number;
  cpu_model: string;
  memory_gb: number;
  load_avg_1m_at_start: number;
  platform: string;
  node: string;
}

export function machine(): Machine {
  let model = os.cpus()[0]?.model ?? "unknown";
  try {
    const line = readFileSync("/proc/cpuinfo", "utf8")
      .split("\n")
      .find((l) => l.startsWith("model name"));
    if (line) model = line.split(":").slice(1).join(":").trim();
  } catch {}
  return {
    nproc: os.availableParallelism(),
    cpu_model: model,
    memory_gb: round(os.totalmem() / 2 ** 30, 1),
    load_avg_1m_at_start: round(os.loadavg()[0] ?? 0, 2),
    platform: `${os.platform()} ${os.arch()}`,
    node: process.version,
  };
}

const portFree = (port: number) =>
  new Promise<boolean>((resolve) => {
    const server = createServer().once("error", () => resolve(false));
    server.listen({ port, host: "127.0.0.1", exclusive: true }, () =>
      server.close(() => resolve(true)),
    );
  });

/** Waits (up to 90 s) until every port is free: ours are in the ephemeral range (TIME_WAIT). */
export async function waitForPorts(ports: readonly number[], note: (s: string) => void) {
  for (let i = 0; ; i++) {
    const free = await Promise.all(ports.map(portFree));
    if (free.every(Boolean)) return;
    const busy = ports.filter((_, j) => !free[j]);
    if (i === 0) note(`waiting for ports ${busy.join(", ")}`);
    if (i >= 90) throw new Error(`ports ${busy.join(", ")} are not free after 90 s`);
    await sleep(1000);
  }
}

/** A GET (or another idempotent call) whose 5xx and network errors are tried again and counted. */
export async function readJson<T>(
  url: string,
  init: RequestInit = {},
  retries: { n: number } = { n: 0 },
): Promise<T> {
  for (let i = 0; ; i++) {
    let failure = "";
    let status = 0;
    try {
      const res = await fetch(url, { ...init, signal: AbortSignal.timeout(120_000) });
      status = res.status;
      if (res.ok) return (await res.json()) as T;
      failure = `${res.status} ${(await res.text()).slice(0, 500)}`;
    } catch (error) {
      failure = error instanceof Error ? error.message : String(error);
    }
    if ((status >= 400 && status < 500) || i >= 20) {
      throw new Error(`${init.method ?? "GET"} ${url}: ${failure}`);
    }
    retries.n++;
    await sleep(200);
  }
}

export const jsonInit = (method: string, body: unknown, headers: Record<string, string> = {}) => ({
  method,
  headers: { "content-type": "application/json", ...headers },
  body: JSON.stringify(body),
});

/** A child under scripts/guard.ts: `stop()` closes its stdin, which ends its whole group. */
export interface Guarded {
  child: ChildProcess;
  stop(): Promise<void>;
  exited(): boolean;
  /** The last lines it printed. */
  tail(): string[];
}

export function guarded(
  name: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  onLine: (name: string, line: string) => void,
): Guarded {
  const child = spawn(process.execPath, [guardTs, process.execPath, ...args], {
    cwd: root,
    env,
    detached: true,
    stdio: ["pipe", "pipe", "pipe"],
  });
  const recent: string[] = [];
  let partial = "";
  const forward = (chunk: Buffer) => {
    const lines = (partial + chunk.toString()).split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) {
      if (!line.trim()) continue;
      onLine(name, line);
      recent.push(line);
      if (recent.length > 30) recent.shift();
    }
  };
  child.stdout?.on("data", forward);
  child.stderr?.on("data", forward);
  child.stdin?.on("error", () => {});
  let stopping: Promise<void> | undefined;
  const exited = () => child.exitCode !== null || child.signalCode !== null;
  return {
    child,
    exited,
    tail: () => [...recent],
    stop() {
      stopping ??= new Promise<void>((resolve) => {
        if (exited() || child.pid === undefined) return resolve();
        const pid = child.pid;
        const timer = setTimeout(() => {
          try {
            process.kill(-pid, "SIGKILL");
          } catch {}
          resolve();
        }, 8000);
        child.once("exit", () => {
          clearTimeout(timer);
          resolve();
        });
        child.stdin?.end();
      });
      return stopping;
    },
  };
}

/** Runs a guarded command to its end; rejects with its last lines on a non-zero exit. */
export function runToEnd(
  name: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  onLine: (name: string, line: string) => void,
): Promise<void> {
  const proc = guarded(name, args, env, onLine);
  return new Promise((resolve, reject) => {
    proc.child.once("exit", (code) => {
      if (code === 0) resolve();
      else reject(new Error(`${name} exited with ${code}:\n${proc.tail().join("\n")}`));
    });
  });
}

/** Waits until `url` answers anything over HTTP, or the process exits, or 120 s pass. */
export async function waitUntilUp(url: string, what: string, proc: Guarded): Promise<void> {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    if (proc.exited()) {
      throw new Error(`${what} exited while starting:\n${proc.tail().join("\n")}`);
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      return;
    } catch {
      await sleep(200);
    }
  }
  throw new Error(`${what} did not start at ${url}`);
}

/** The environment every `wrangler` child of the bench gets. */
export function wranglerEnv(registryPath: string): NodeJS.ProcessEnv {
  return {
    ...process.env,
    WRANGLER_SEND_METRICS: "false",
    CLOUDFLARE_CF_FETCH_ENABLED: "false",
    WRANGLER_LOG: process.env.WRANGLER_LOG ?? "info",
    NO_COLOR: "1",
    WRANGLER_REGISTRY_PATH: registryPath,
  };
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: ANSI colour codes start with ESC
const ANSI = /\u001b\[[0-9;]*m/g;
/** Writes a results file as JSON in Biome's own format, so `biome check .` stays clean after a run. */
export function writeResults(file: string, value: unknown): void {
  writeFileSync(file, `${JSON.stringify(value, null, 2)}\n`);
  spawnSync(path.join(root, "node_modules/.bin/biome"), ["format", "--write", file], {
    stdio: "ignore",
  });
}

export const stripAnsi = (text: string) => text.replace(ANSI, "");

/** `2026-12-01 20:11:11.804` (D1's UTC text) → ms since the epoch. */
export const sqlMs = (text: string) => Date.parse(`${text.replace(" ", "T")}Z`);
