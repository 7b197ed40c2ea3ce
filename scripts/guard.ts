// The stack's watchdog: `node scripts/guard.ts <program> [args…]` runs one child of `npm start`
// (a `wrangler dev`, the emulator, a migration) so that it can never outlive the stack.
//
// The stack starts this guard as the leader of a process group of its own (detached), with its
// stdin a pipe from the stack. The guard runs the program inside that group and stops the whole
// group (the program and whatever it started, such as workerd) when:
// - its stdin ends: the stack closed it to stop, or the stack is gone however it ended (SIGKILL
//   included: the kernel closes the pipe, no handler needed);
// - it receives SIGTERM, SIGINT or SIGHUP (`npm run stop` signals the group);
// - the program exits on its own (its leftovers go with it).
// Stopping is SIGTERM to the group, then SIGKILL after GRACE_MS.
import { spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

const GRACE_MS = 3000;
const [program, ...args] = process.argv.slice(2);
if (!program) {
  console.error("usage: node scripts/guard.ts <program> [args…]");
  process.exit(2);
}

// Writing to a stack that is gone must not end the guard before it has cleaned up.
process.stdout.on("error", () => {});
process.stderr.on("error", () => {});

const child = spawn(program, args, { stdio: ["ignore", "inherit", "inherit"] });

let stopping = false;
function signalGroup(signal: NodeJS.Signals): void {
  try {
    process.kill(-process.pid, signal);
  } catch {}
}
function stopGroup(): void {
  if (stopping) return;
  stopping = true;
  signalGroup("SIGTERM"); // reaches this guard too: its handler below keeps it alive
  // A program that ignores SIGTERM: the whole group, this guard included, is killed.
  setTimeout(() => signalGroup("SIGKILL"), GRACE_MS + 500);
}

for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) process.on(signal, stopGroup);
process.stdin.on("end", stopGroup);
process.stdin.on("close", stopGroup);
process.stdin.on("error", stopGroup);
process.stdin.resume();

child.on("error", (error) => {
  console.error(`guard: cannot start ${program}: ${error.message}`);
  process.exit(127);
});
/** The other processes of this guard's group (Linux's /proc; elsewhere, none are known). */
function othersInGroup(): number[] {
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return [];
  }
  const others: number[] = [];
  for (const entry of entries) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      // /proc/PID/stat: "pid (comm) state ppid pgrp …"; comm may hold spaces, so cut at ")".
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[2]) === process.pid && fields[0] !== "Z") others.push(pid);
    } catch {}
  }
  return others;
}

child.on("exit", (code, signal) => {
  const status = code ?? (signal ? 128 : 1);
  if (!stopping) {
    // The program ended by itself: what it left behind in the group goes with it.
    stopping = true;
    signalGroup("SIGTERM");
  }
  const deadline = Date.now() + GRACE_MS;
  const finish = () => {
    const others = othersInGroup();
    if (others.length > 0 && Date.now() < deadline) {
      setTimeout(finish, 50);
      return;
    }
    for (const pid of others) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {}
    }
    process.exit(status);
  };
  finish();
});
