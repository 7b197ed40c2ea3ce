// The operators' dashboard in a real browser (Chromium driven by playwright-core; see
// support/chromium.ts for where the browser comes from)
// against the same local stack as `npm start`. The story: the consumer was deployed without its
// RunPod key, so a job's message ran out of deliveries and was dead-lettered; the fix is deployed
// (the stack restarts on the same state); the operator signs in, replays the dead letter and
// watches the job progress to complete.
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { main as dlq } from "../../scripts/dlq.ts";
import { type LocalStack, type StackOptions, startLocalStack } from "../../scripts/local-stack.ts";
import { type ChromiumLaunch, findChromium } from "./support/chromium.ts";

const logs: string[] = [];
let persistTo: string;
let stack: LocalStack | undefined;
let browser: Browser | undefined;
let chromiumLaunch: ChromiumLaunch;

function stackOptions(extra: Partial<StackOptions>): StackOptions {
  return {
    producerPort: 28787,
    consumerPort: 28788,
    emulatorPort: 28790,
    inspectorPorts: [29229, 29230],
    persistTo: path.join(persistTo, "state"),
    settings: { RUNPOD_ENDPOINT_ID: "browser-endpoint", PENDING_GRACE_S: "5" },
    emulatorEnv: {
      RUNPOD_EMULATOR_RUN_MS: "6000",
      RUNPOD_EMULATOR_PROGRESS_STEPS: "20,40,60,80",
    },
    onOutput: (name, line) => logs.push(`[${name}] ${line}`),
    ...extra,
  };
}

async function until<T>(what: string, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + 90_000;
  while (Date.now() < deadline) {
    const value = await check();
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  console.error(logs.slice(-60).join("\n"));
  throw new Error(`timed out waiting for ${what}`);
}

beforeAll(async () => {
  chromiumLaunch = await findChromium();
  persistTo = mkdtempSync(path.join(os.tmpdir(), "reel-browser-"));
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await stack?.stop();
  rmSync(persistTo, { recursive: true, force: true });
});

describe("dashboard", () => {
  let jobId = "";

  it("a job of a mis-configured consumer ends up as a dead letter", async () => {
    stack = await startLocalStack(stackOptions({ consumerVars: { RUNPOD_API_KEY: "" } }));
    const res = await fetch(`${stack.producerUrl}/exports`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${stack.settings.API_TOKEN}`,
        "content-type": "application/json",
      },
      body: JSON.stringify({
        project_id: 99,
        type: "annotate",
        input_video_key: "uploads/demo/sample.mp4",
        params: { annotations: [{ text: "goal!" }] },
      }),
    });
    expect(res.status).toBe(202);
    jobId = ((await res.json()) as { job: { id: string } }).job.id;
    const admin = { authorization: `Bearer ${stack.settings.ADMIN_TOKEN}` };
    const letterId = await until("the dead letter", async () => {
      const list = (await (
        await fetch(`${stack?.producerUrl}/dead-letters`, { headers: admin })
      ).json()) as { dead_letters: { id: string; job_id: string | null }[] };
      return list.dead_letters.find((d) => d.job_id === jobId)?.id;
    });

    // The operators' command line sees it too, against the real API.
    const cli = async (...argv: string[]) => {
      let out = "";
      let err = "";
      const code = await dlq(argv, {
        fetch,
        out: (text) => {
          out += text;
        },
        err: (text) => {
          err += text;
        },
        env: { REEL_EXPORTS_URL: stack?.producerUrl, ADMIN_TOKEN: stack?.settings.ADMIN_TOKEN },
      });
      return { code, out, err };
    };
    const listed = await cli("list");
    expect(listed.code).toBe(0);
    expect(listed.out).toContain(letterId);
    expect(listed.out).toContain(jobId);
    const shown = await cli("show", letterId);
    expect(shown.out).toContain("dead_lettered");
    expect(shown.out).toMatch(/status:\s+error/);
    expect(await cli("show", "no-such-letter")).toMatchObject({ code: 1 });
    expect((await cli("stats")).out).toMatch(/dead letters:\s+\d+ total, \d+ not replayed/);
    await stack.stop();
    stack = undefined;
  }, 150_000);

  it("signs in, replays the dead letter and shows the job progress to complete", async () => {
    await stack?.stop(); // the mis-configured deployment, if the first test stopped early
    stack = await startLocalStack(stackOptions({}));
    browser = await chromium.launch({
      executablePath: chromiumLaunch.executablePath,
      headless: true,
      args: chromiumLaunch.args,
    });
    const page: Page = await browser.newPage();
    await page.goto(`${stack.producerUrl}/`);

    // A wrong token is refused; the right one opens the dashboard.
    await page.getByLabel("Admin token").fill("not-the-token");
    await page.getByRole("button", { name: "Sign in" }).click();
    await expect.poll(() => page.locator("#status").textContent()).toContain("not accepted");
    await page.getByLabel("Admin token").fill(stack.settings.ADMIN_TOKEN as string);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Dead letters" }).waitFor();

    const job = page.locator(`#jobs tr[data-job-id="${jobId}"]`);
    await expect.poll(() => job.locator(".job-status").textContent()).toBe("error");

    const letter = page.locator("#dead-letters tbody tr").filter({ hasText: jobId.slice(0, 8) });
    await letter.getByRole("button", { name: /^Show/ }).click();
    await expect.poll(() => page.locator("#dl-detail-body").textContent()).toContain(jobId);
    await letter.getByRole("button", { name: /^Replay/ }).click();
    await expect.poll(() => page.locator("#status").textContent()).toContain("Replayed");
    await expect.poll(() => letter.locator(".replayed").textContent()).not.toBe("no");

    // Watch the job on the auto-refreshing table; the reconciler covers a re-enqueue that
    // wrangler dev's restarted Workers may drop.
    const seen: string[] = [];
    await until("the job to complete", async () => {
      await fetch(`${stack?.consumerUrl}/__scheduled`);
      const status = await job.locator(".job-status").textContent();
      const progress = await job.locator("progress").getAttribute("value");
      seen.push(`${status}:${progress}`);
      return status === "complete" ? true : undefined;
    });
    expect(seen.some((s) => /^processing:([1-9]\d?)$/.test(s))).toBe(true);
    expect(await job.locator("progress").getAttribute("value")).toBe("100");
    expect(await page.locator("#stats").textContent()).toContain("Complete");
  }, 150_000);
});
