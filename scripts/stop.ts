// `npm run stop`: stops a stack of this checkout that is still running (one started by
// `npm start`, the tests or the bench), found through the `stack.json` it keeps in its state
// directory. `STATE_DIR` picks another state directory than `.wrangler/state`.
import { rmSync } from "node:fs";
import path from "node:path";
import { lockPath, readLock } from "./local-stack.ts";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const persistTo = path.resolve(root, process.env.STATE_DIR || ".wrangler/state");
const lock = readLock(persistTo);
if (!lock) {
  console.log(`no stack holds ${persistTo} (no ${path.relative(root, lockPath(persistTo))})`);
  process.exit(0);
}

const signal = (pid: number, name: NodeJS.Signals | 0) => {
  try {
    process.kill(pid, name);
    return true;
  } catch {
    return false;
  }
};
// The stack itself shuts down cleanly on SIGTERM; its guarded children's groups are stopped too,
// in case the stack is gone and left them (stacks before the guards did).
signal(lock.pid, "SIGTERM");
for (const group of lock.groups) signal(-group, "SIGTERM");
const deadline = Date.now() + 8000;
const running = () => [lock.pid, ...lock.groups].filter((pid) => signal(pid, 0));
while (running().length > 0 && Date.now() < deadline) {
  await new Promise((resolve) => setTimeout(resolve, 100));
}
for (const group of lock.groups) signal(-group, "SIGKILL");
signal(lock.pid, "SIGKILL");
rmSync(lockPath(persistTo), { force: true });
console.log(`stopped the stack of pid ${lock.pid} (ports ${Object.values(lock.ports).join(", ")})`);
