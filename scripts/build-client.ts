// The typed client (client/index.ts) bundled for browsers, where the example frontend and the
// operators' dashboard load it as a plain ES module (no build step of their own): one file each,
// `examples/frontend/reel-exports-client.js` and `producer/public/reel-exports-client.js`.
// `npm run client:build` writes them; test/node/client.test.ts fails when they differ from a
// fresh build of client/.
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { build } from "esbuild";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");

export const CLIENT_BUNDLES = [
  path.join(root, "examples/frontend/reel-exports-client.js"),
  path.join(root, "producer/public/reel-exports-client.js"),
];

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

/** The bundles as they are in the repository. */
export function committedClientBundles(): string[] {
  return CLIENT_BUNDLES.map((file) => readFileSync(file, "utf8"));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const text = await buildClientBundle();
  for (const file of CLIENT_BUNDLES) {
    writeFileSync(file, text);
    console.log(`wrote ${path.relative(process.cwd(), file)}`);
  }
}
