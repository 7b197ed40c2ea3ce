// `npm start` as a terminal runs it: its own process group, then ended the ways a user's session
// ends it. Nothing it started may be left, its ports must be free again, and a start that cannot
// come up must say why and exit quickly.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { connect } from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../..");
const work = mkdtempSync(path.join(os.tmpdir(), "reel-lifecycle-"));
const PORTS = { PRODUCER_PORT: 23787, CONSUMER_PORT: 23788, EMULATOR_PORT: 23790 };
const INSPECTOR_PORT = 23229;
// The local R2 writer (scripts/local-r2/) listens on EMULATOR_PORT + 1, its inspector INSPECTOR_PORT + 2.
const ALL_PORTS = [
  ...Object.values(PORTS),
  INSPECTOR_PORT,
  INSPECTOR_PORT + 1,
  PORTS.EMULATOR_PORT + 1,
  INSPECTOR_PORT + 2,
  PORTS.PRODUCER_PORT + 5, // the frontend example (examples/frontend/)
];

interface Started {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

const started: Started[] = [];

/** `node scripts/start.ts` as the leader of its own process group, as a shell's job is. */
function npmStart(stateDir: string, env: Record<string, string> = {}): Started {
  const child = spawn(process.execPath, [path.join(root, "scripts/start.ts")], {
    cwd: root,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    env: {
      ...process.env,
      ...Object.fromEntries(Object.entries(PORTS).map(([k, v]) => [k, String(v)])),
      INSPECTOR_PORT: String(INSPECTOR_PORT),
      STATE_DIR: stateDir,
      ...env,
    },
  });
  let text = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    text += chunk.toString();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    text += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const entry = { child, output: () => text, exited };
  started.push(entry);
  return entry;
}

async function until(what: string, check: () => boolean, ms = 90_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Every process descended from `pid`, from /proc (ppid links). */
function descendants(pid: number): number[] {
  const parentOf = new Map<number, number>();
  for (const entry of readdirSync("/proc")) {
    const child = Number(entry);
    if (!Number.isInteger(child)) continue;
    try {
      const stat = readFileSync(`/proc/${child}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (fields[0] !== "Z") parentOf.set(child, Number(fields[1]));
    } catch {}
  }
  const found: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const current = queue.shift() as number;
    for (const [child, parent] of parentOf) {
      if (parent === current) {
        found.push(child);
        queue.push(child);
      }
    }
  }
  return found;
}

function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: "127.0.0.1" });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

async function portsOpen(): Promise<number[]> {
  const open: number[] = [];
  for (const port of ALL_PORTS) if (await portOpen(port)) open.push(port);
  return open;
}

/** Starts a stack and waits until it says it is running; returns every process it started. */
async function runningStack(stateDir: string): Promise<{ stack: Started; processes: number[] }> {
  const stack = npmStart(stateDir);
  await until("npm start to come up", () => {
    if (stack.child.exitCode !== null) throw new Error(`npm start exited:\n${stack.output()}`);
    return stack.output().includes("reel-exports is running locally");
  });
  const processes = descendants(stack.child.pid as number);
  // the emulator, two wrangler dev with their workerd: never fewer than five
  expect(processes.length).toBeGreaterThanOrEqual(5);
  expect(await portsOpen()).toEqual(expect.arrayContaining(Object.values(PORTS)));
  return { stack, processes };
}

async function expectNothingLeft(processes: number[]): Promise<void> {
  await until(
    "every process of the stack to end",
    () => processes.every((pid) => !isAlive(pid)),
    15_000,
  );
  const deadline = Date.now() + 10_000;
  let still = await portsOpen();
  while (still.length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    still = await portsOpen();
  }
  expect(still).toEqual([]);
}

afterEach(() => {
  // A failed assertion must not leave a stack behind for the next test.
  for (const { child } of started.splice(0)) {
    if (child.exitCode === null && child.pid) {
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {}
    }
  }
});

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe("npm start's lifecycle", () => {
  it("closing the terminal (SIGHUP to its process group) stops everything it started", async () => {
    const { stack, processes } = await runningStack(path.join(work, "hup"));
    process.kill(-(stack.child.pid as number), "SIGHUP");
    await stack.exited;
    await expectNothingLeft(processes);
  }, 150_000);

  it("a SIGKILL of its process group, which no handler sees, still leaves nothing running", async () => {
    const { stack, processes } = await runningStack(path.join(work, "kill"));
    process.kill(-(stack.child.pid as number), "SIGKILL");
    await stack.exited;
    await expectNothingLeft(processes);
  }, 150_000);

  it("a second start fails fast and says what to do: busy ports, then a held state directory", async () => {
    const { stack: first, processes } = await runningStack(path.join(work, "first"));

    const t0 = Date.now();
    const second = npmStart(path.join(work, "second"));
    expect(await second.exited).not.toBe(0);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(second.output()).toContain(`${PORTS.PRODUCER_PORT} (producer)`);
    expect(second.output()).toContain("npm run stop");

    // Other ports, same state directory: refused before anything touches its SQLite files.
    const third = npmStart(path.join(work, "first"), {
      PRODUCER_PORT: "24787",
      CONSUMER_PORT: "24788",
      EMULATOR_PORT: "24790",
      INSPECTOR_PORT: "24229",
    });
    expect(await third.exited).not.toBe(0);
    expect(third.output()).toContain(`pid ${first.child.pid}`);
    expect(third.output()).toContain("npm run stop");

    // `npm run stop` stops the leftover stack by its state directory.
    const stop = spawn(process.execPath, [path.join(root, "scripts/stop.ts")], {
      cwd: root,
      env: { ...process.env, STATE_DIR: path.join(work, "first") },
      stdio: "ignore",
    });
    expect(await new Promise((resolve) => stop.on("exit", resolve))).toBe(0);
    await first.exited;
    await expectNothingLeft(processes);
  }, 150_000);
});
