// Starts the RunPod emulator in Node for the workerd tests; they reach it over real HTTP through
// RUNPOD_BASE_URL only. Each test file uses its own endpoint id, so fault settings never collide.
import type { TestProject } from "vitest/node";
import { createRunpodEmulator } from "../../emulator/runpod-emulator.ts";

declare module "vitest" {
  export interface ProvidedContext {
    runpodEmulatorUrl: string;
  }
}

export default async function setup(project: TestProject) {
  const emulator = createRunpodEmulator({
    apiKey: "test-runpod-key",
    queueMs: 20,
    runMs: 200,
    webhookRetryDelayMs: 50,
  });
  const { port } = await emulator.listen(0);
  project.provide("runpodEmulatorUrl", `http://127.0.0.1:${port}`);
  return async () => {
    await emulator.close();
  };
}
