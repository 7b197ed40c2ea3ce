// Workers have no CommonJS `require`. runpod-sdk only uses `createRequire(import.meta.url)` to read
// its own package.json for the User-Agent header, so this shim answers exactly that and nothing
// else. wrangler.toml's [alias] and the test config map the bare "module" import here.
const RUNPOD_SDK_VERSION = "1.1.2";

export function createRequire(_from: string | URL): (id: string) => unknown {
  return (id: string) => {
    if (id.endsWith("package.json")) return { version: RUNPOD_SDK_VERSION };
    throw new Error(`require(${JSON.stringify(id)}) is not available in Workers`);
  };
}

export default { createRequire };
