// Where the browser tests get a real Chromium, in this order:
// 1. `CHROMIUM_PATH`, when set;
// 2. on linux-x64, `@sparticuz/chromium` (a devDependency that ships Chromium inside its npm
//    tarball: `npm install` brings it, no system packages, no download at install time);
// 3. an installed Chrome or Chromium.
import { existsSync } from "node:fs";

/** Flags for a headless run on a machine with no network but loopback. */
const QUIET_FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const INSTALLED = [
  "/usr/bin/chromium",
  "/usr/bin/chromium-browser",
  "/usr/bin/google-chrome",
  "/usr/bin/google-chrome-stable",
  "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
];

export interface ChromiumLaunch {
  executablePath: string;
  args: string[];
  source: "CHROMIUM_PATH" | "@sparticuz/chromium" | "installed";
}

export async function findChromium(): Promise<ChromiumLaunch> {
  const given = process.env.CHROMIUM_PATH;
  if (given) {
    if (!existsSync(given)) throw new Error(`CHROMIUM_PATH=${given} does not exist`);
    return { executablePath: given, args: QUIET_FLAGS, source: "CHROMIUM_PATH" };
  }
  if (process.platform === "linux" && process.arch === "x64") {
    const { default: chromium } = await import("@sparticuz/chromium");
    const executablePath = await chromium.executablePath();
    // Its own flags (single process, no zygote, …) suit a container; ours keep it offline.
    return {
      executablePath,
      args: [...new Set([...chromium.args, ...QUIET_FLAGS])],
      source: "@sparticuz/chromium",
    };
  }
  const installed = INSTALLED.find((candidate) => existsSync(candidate));
  if (installed) return { executablePath: installed, args: QUIET_FLAGS, source: "installed" };
  throw new Error(
    "no Chromium: set CHROMIUM_PATH to a Chrome or Chromium binary (on linux-x64, npm install brings one)",
  );
}
