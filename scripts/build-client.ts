// The typed client (client/index.ts) bundled for browsers, where the operators' dashboard and the
// example frontend load it as a plain ES module (no build step of their own): one file,
// `producer/public/reel-exports-client.js`, served with the dashboard (the example's server serves
// the same file). `npm run client:build` writes it; test/node/client.test.ts fails when it differs
// from a fresh build of client/.
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { build } from "esbuild";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");

export const CLIENT_BUNDLE = path.join(root, "producer/public/reel-exports-client.js");

const BANNER =
  "// reel-exports' typed client (client/index.ts), bundled by scripts/build-client.ts for\n" +
  "// browsers. Do not edit: `npm run client:build` rebuilds it; a test fails when it drifts.";

/** The bundle's text, built now from client/index.ts. */
export async function buildClientBundle(): Promise<string> {
  const result = await build({
    entryPoints: [path.join(root, "client/index.ts")],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    write: false,
    legalComments: "none",
    banner: { js: BANNER },
    logLevel: "silent",
  });
  const [file] = result.outputFiles;
  if (!file) throw new Error("esbuild wrote nothing");
  return file.text;
}

/** The bundle as it is in the repository. */
export function committedClientBundle(): string {
  return readFileSync(CLIENT_BUNDLE, "utf8");
}

if (import.meta.url === `file://${process.argv[1]}`) {
  writeFileSync(CLIENT_BUNDLE, await buildClientBundle());
  console.log(`wrote ${path.relative(process.cwd(), CLIENT_BUNDLE)}`);
}
