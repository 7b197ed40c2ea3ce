// The operators' dashboard in a real browser (Chromium driven by playwright-core; see
// support/chromium.ts for where the browser comes from)
// against the same local stack as `npm start`. The story: RunPod fails every run for a while, so
// two jobs use up their four attempts and end in `error` (a third is cancelled by its owner); no
// message is dead-lettered, since a job's failures are retried by the job state machine. The
// operators' CLI finds nothing it should retry by mistake. RunPod recovers (the stack restarts on
// the same state with a healthy emulator); the operator signs in, sees dispatch running, retries
// one job from its row and the other through the "Retry failed jobs" form, and watches both
// progress to complete; the cancelled job stays as it is. Meanwhile live sessions end every 4 s
// (LIVE_SESSION_MAX_S): the dashboard reconnects at once each time, as after no failure.
// Outbound webhooks: while RunPod fails, NOTIFY_URL points where nobody listens, so the three
// jobs' export.failed notifications give up (two quick tries each). After the restart NOTIFY_URL
// is the emulator's webhook receiver: the Webhooks panel lists the failed ones, and a Redeliver
// from a row delivers it (the row leaves the failed list), until none is left.
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { main as dlq } from "../../scripts/dlq.ts";
import { type LocalStack, type StackOptions, startLocalStack } from "../../scripts/local-stack.ts";
import { type ChromiumLaunch, findChromium } from "./support/chromium.ts";

const logs: string[] = [];
const DEAD_NOTIFY_URL = "http://127.0.0.1:9/hook";
const EMULATOR_PORT = 28790;
/** The emulator's webhook receiver that the restarted stack notifies (answers 200). */
const RECEIVER = `http://127.0.0.1:${EMULATOR_PORT}/__receiver/browser`;
let persistTo: string;
let stack: LocalStack | undefined;
let browser: Browser | undefined;
let chromiumLaunch: ChromiumLaunch;
/** The signed-in dashboard of the second test, used on by the third. */
let dashboard: Page | undefined;

function stackOptions(extra: Partial<StackOptions>): StackOptions {
  return {
    producerPort: 28787,
    consumerPort: 28788,
    emulatorPort: EMULATOR_PORT,
    inspectorPorts: [29229, 29230],
    persistTo: path.join(persistTo, "state"),
    settings: {
      RUNPOD_ENDPOINT_ID: "browser-endpoint",
      // Nobody listens there: a webhook fails at once, and gives up after one retry at once.
      NOTIFY_URL: DEAD_NOTIFY_URL,
      NOTIFY_RETRY_S: "0",
      NOTIFY_TIMEOUT_MS: "500",
      PENDING_GRACE_S: "5",
      // A failed run is tried again after about a second, so four attempts take seconds.
      RETRY_BASE_DELAY_S: "1",
      RETRY_MAX_DELAY_S: "1",
    },
    emulatorEnv: {
      RUNPOD_EMULATOR_RUN_MS: "6000",
      RUNPOD_EMULATOR_PROGRESS_STEPS: "20,40,60,80",
    },
    onOutput: (name, line) => logs.push(`[${name}] ${line}`),
    ...extra,
  };
}

interface JobView {
  id: string;
  status: string;
  error: string | null;
  retry_count: number;
  attempt: number;
}

/** The operators' CLI against the running stack, its output collected. */
async function cli(...argv: string[]) {
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
}

async function getJob(id: string): Promise<JobView> {
  const res = await fetch(`${stack?.producerUrl}/exports/${id}`, {
    headers: { authorization: `Bearer ${stack?.settings.API_TOKEN}` },
  });
  expect(res.status).toBe(200);
  return ((await res.json()) as { job: JobView }).job;
}

interface NotificationView {
  id: string;
  job_id: string;
  type: string;
  status: string;
  attempts: number;
  last_status: number | null;
  last_error: string | null;
}

/** GET /admin/notifications (all of one status, newest first; a few, so one page). */
async function notifications(status?: string): Promise<NotificationView[]> {
  const query = new URLSearchParams({ limit: "100" });
  if (status) query.set("status", status);
  const res = await fetch(`${stack?.producerUrl}/admin/notifications?${query}`, {
    headers: { authorization: `Bearer ${stack?.settings.ADMIN_TOKEN}` },
  });
  expect(res.status).toBe(200);
  const body = (await res.json()) as { notifications: NotificationView[]; next_cursor: unknown };
  expect(body.next_cursor).toBeNull();
  return body.notifications;
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
  /** Retried from its row in the dashboard. */
  let rowJob = "";
  /** Retried through the "Retry failed jobs" form. */
  let bulkJob = "";
  /** Cancelled by its owner: never retried. */
  let cancelledJob = "";
  /** The failed export.failed notification of each of the three jobs, by job id. */
  const failedNotifications = new Map<string, string>();

  it("jobs whose runs keep failing end in error after four attempts, with no dead letter", async () => {
    stack = await startLocalStack(
      stackOptions({
        emulatorEnv: { RUNPOD_EMULATOR_FAIL_RATE: "1", RUNPOD_EMULATOR_RUN_MS: "300" },
      }),
    );
    const create = async (text: string) => {
      const res = await fetch(`${stack?.producerUrl}/exports`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${stack?.settings.API_TOKEN}`,
          "content-type": "application/json",
        },
        body: JSON.stringify({
          project_id: 99,
          type: "annotate",
          input_video_key: "uploads/demo/sample.mp4",
          params: { annotations: [{ text }] },
        }),
      });
      expect(res.status).toBe(202);
      return ((await res.json()) as { job: { id: string } }).job.id;
    };
    rowJob = await create("goal!");
    bulkJob = await create("save!");
    cancelledJob = await create("offside");
    const cancel = await fetch(`${stack.producerUrl}/exports/${cancelledJob}/cancel`, {
      method: "POST",
      headers: { authorization: `Bearer ${stack.settings.API_TOKEN}` },
    });
    expect(cancel.ok).toBe(true);

    for (const id of [rowJob, bulkJob]) {
      const failed = await until(`job ${id} to use up its attempts`, async () => {
        await fetch(`${stack?.consumerUrl}/__scheduled`);
        const job = await getJob(id);
        return job.status === "error" ? job : undefined;
      });
      expect(failed).toMatchObject({ retry_count: 4, error: "RunPod FAILED: emulated failure" });
      expect(failed.attempt).toBeGreaterThanOrEqual(4);
    }
    expect(await getJob(cancelledJob)).toMatchObject({ status: "error", error: "cancelled" });

    // Each ending's webhook went nowhere: tried twice, then failed.
    const failed = await until("the three jobs' notifications to fail", async () => {
      await fetch(`${stack?.consumerUrl}/__scheduled`);
      const list = (await notifications("failed")).filter((n) =>
        [rowJob, bulkJob, cancelledJob].includes(n.job_id),
      );
      return list.length === 3 ? list : undefined;
    });
    for (const notification of failed) {
      expect(notification).toMatchObject({ type: "export.failed", status: "failed", attempts: 2 });
      expect(notification.last_error).toBeTruthy();
      failedNotifications.set(notification.job_id, notification.id);
    }

    // The operators' command line, against the real API: failed runs dead-letter nothing, and a
    // retry that matches no failed job (or names an unknown one) changes nothing.
    expect(await cli("list")).toEqual({ code: 0, out: "0 dead letters\n", err: "" });
    const stats = await cli("stats");
    expect(stats.code).toBe(0);
    expect(stats.out).toMatch(/jobs:\s+.*3 error/);
    expect(stats.out).toMatch(/dispatch:\s+running since \S+, \d+ runs? in the last 10 s/);
    const none = "retried 0 jobs (only error jobs that were not cancelled are retried)\n";
    expect(await cli("retry", "--error-prefix", "RunPod TIMED_OUT")).toEqual({
      code: 0,
      out: none,
      err: "",
    });
    expect(await cli("retry", cancelledJob, crypto.randomUUID())).toEqual({
      code: 0,
      out: none,
      err: "",
    });
    expect(await cli("retry", "--json", "--created-after", "2999-01-01")).toMatchObject({
      code: 0,
      out: `${JSON.stringify({ retried: 0, job_ids: [] }, null, 2)}\n`,
    });
    expect(await cli("retry", "not-a-job-id")).toMatchObject({
      code: 1,
      err: expect.stringMatching(/^error: invalid_request: .* \(HTTP 400\)\n$/),
    });
    for (const id of [rowJob, bulkJob]) {
      expect(await getJob(id)).toMatchObject({ status: "error", retry_count: 4 });
    }
    await stack.stop();
    stack = undefined;
  }, 150_000);

  it("signs in, sees dispatch running, retries the failed jobs and shows them complete", async () => {
    expect(rowJob && bulkJob).toBeTruthy(); // the first test made them
    await stack?.stop(); // the failing deployment, if the first test stopped early
    const options = stackOptions({});
    stack = await startLocalStack({
      ...options,
      settings: { ...options.settings, LIVE_SESSION_MAX_S: "4", NOTIFY_URL: RECEIVER },
    });
    browser = await chromium.launch({
      executablePath: chromiumLaunch.executablePath,
      headless: true,
      args: chromiumLaunch.args,
    });
    const page: Page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    dashboard = page;
    // The page's live log, in order: each socket's close code and each state the badge shows.
    await page.addInitScript(`
      const log = (window.liveLog = []);
      const Native = window.WebSocket;
      window.WebSocket = class extends Native {
        constructor(...args) {
          super(...args);
          this.addEventListener("close", (event) => log.push("close:" + event.code));
        }
      };
      document.addEventListener("DOMContentLoaded", () => {
        new MutationObserver(() => log.push("state:" + document.body.dataset.live)).observe(
          document.body,
          { attributes: true, attributeFilter: ["data-live"] },
        );
      });
    `);
    const liveLog = async () => (await page.evaluate("window.liveLog")) as string[];
    await page.goto(`${stack.producerUrl}/`);

    // A wrong token is refused; the right one opens the dashboard.
    await page.getByLabel("Admin token").fill("not-the-token");
    await page.getByRole("button", { name: "Sign in" }).click();
    await expect.poll(() => page.locator("#status").textContent()).toContain("not accepted");
    await expect(page.locator("#app").isHidden()).resolves.toBe(true);
    await page.getByLabel("Admin token").fill(stack.settings.ADMIN_TOKEN as string);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Retry failed jobs" }).waitFor();

    // The dispatch gate is shown as a badge; the failures dead-lettered nothing.
    const badge = page.locator("#stats #dispatch-state");
    await expect.poll(() => badge.textContent()).toBe("running");
    expect(await badge.getAttribute("class")).toContain("dispatch-running");
    expect(await page.locator("#stats").textContent()).toMatch(/Runs in the last 10 s\d+/);
    expect(await page.locator("#stats").textContent()).toMatch(/In flight \/ cap\d+ \/ \d+/);
    // The cap follows the fleet (the default), whose figures RunPod's /health gave.
    expect(await page.locator("#stats").textContent()).toMatch(/Capauto: /);
    await expect
      .poll(() => page.locator("#stats").textContent())
      .toMatch(/Fleet \(RunPod \/health\)\d+ ready, \d+ running/);
    expect(await page.locator("#stats").textContent()).toMatch(
      /Waiting for a slot\d+ \(\d+ users or projects\)/,
    );
    expect(await page.locator("#dead-letters tbody tr").count()).toBe(0);

    const row = (id: string) => page.locator(`#jobs tr[data-job-id="${id}"]`);
    const retryOf = (id: string) =>
      row(id).getByRole("button", { name: `Retry job ${id.slice(0, 8)}` });
    for (const id of [rowJob, bulkJob]) {
      await expect.poll(() => row(id).locator(".job-status").textContent()).toBe("error");
      expect(await row(id).locator(".error").textContent()).toBe("RunPod FAILED: emulated failure");
      expect(await retryOf(id).count()).toBe(1);
    }
    // A cancelled job has no Retry.
    expect(await row(cancelledJob).locator(".error").textContent()).toBe("cancelled");
    expect(await row(cancelledJob).getByRole("button").count()).toBe(0);

    await page.screenshot({
      path: path.join(os.tmpdir(), "reel-exports-dashboard-failed.png"),
      fullPage: true,
    });

    // The bulk form refuses an empty filter without calling the API.
    await page.getByRole("button", { name: "Retry failed jobs" }).click();
    await expect
      .poll(() => page.locator("#status").textContent())
      .toContain("give an error prefix, a created-after time, or both");

    // One job from its row.
    await retryOf(rowJob).click();
    await expect
      .poll(() => page.locator("#status").textContent())
      .toContain(`Retried ${rowJob.slice(0, 8)}`);
    await expect.poll(() => row(rowJob).locator(".job-status").textContent()).not.toBe("error");

    // The other through the form (after the operator confirms); the one retried above is no
    // longer `error`, the cancelled one is never retried.
    await page.getByLabel("Error starts with").fill("RunPod FAILED");
    await page.getByLabel("At most").fill("10");
    let asked = "";
    page.once("dialog", (dialog) => {
      asked = dialog.message();
      void dialog.accept();
    });
    await page.getByRole("button", { name: "Retry failed jobs" }).click();
    await expect
      .poll(() => page.locator("#status").textContent())
      .toBe(`Retried 1 job: ${bulkJob.slice(0, 8)}.`);
    expect(asked).toBe('Retry up to 10 failed jobs whose error starts with "RunPod FAILED"?');

    // Watch both on the auto-refreshing table; the reconciler covers a re-enqueue that
    // wrangler dev's restarted Workers may drop.
    const seen: string[] = [];
    await until("both jobs to complete", async () => {
      await fetch(`${stack?.consumerUrl}/__scheduled`);
      const states: string[] = [];
      for (const id of [rowJob, bulkJob]) {
        const status = await row(id).locator(".job-status").textContent();
        const progress = await row(id).locator("progress").getAttribute("value");
        seen.push(`${status}:${progress}`);
        states.push(status ?? "");
      }
      return states.every((status) => status === "complete") ? true : undefined;
    });
    expect(seen.some((s) => /^processing:([1-9]\d?)$/.test(s))).toBe(true);
    for (const id of [rowJob, bulkJob]) {
      expect(await row(id).locator("progress").getAttribute("value")).toBe("100");
      expect(await row(id).locator(".error").textContent()).toBe("");
      expect(await retryOf(id).count()).toBe(0);
      expect(await getJob(id)).toMatchObject({ status: "complete", retry_count: 0 });
    }
    expect(await getJob(cancelledJob)).toMatchObject({ status: "error", error: "cancelled" });
    expect(await page.locator("#stats").textContent()).toContain("Complete");

    // Sessions ended (4001) and the dashboard reconnected at once each time: no polling, no
    // "reconnecting" (a failure), live again.
    const ended = "close:4001";
    const log = await until("a live session to end and the next to be live", async () => {
      const entries = await liveLog();
      return entries.includes(ended) && entries.at(-1) === "state:live" ? entries : undefined;
    });
    log.forEach((entry, i) => {
      if (entry !== ended) return;
      expect(log.slice(i, i + 3)).toEqual([ended, "state:connecting", "state:live"]);
    });
    await page.screenshot({
      path: path.join(os.tmpdir(), "reel-exports-dashboard.png"),
      fullPage: true,
    });
  }, 150_000);

  it("lists the failed webhooks and redelivers them from their rows", async () => {
    const page = dashboard;
    expect(page && failedNotifications.size === 3).toBeTruthy(); // the first two tests made them
    if (!page || !stack) return;
    const whRow = (id: string) => page.locator(`#notifications tr[data-notification-id="${id}"]`);
    const redeliverOf = (jobId: string) =>
      whRow(failedNotifications.get(jobId) as string).getByRole("button", {
        name: `Redeliver notification of job ${jobId.slice(0, 8)}`,
      });

    // The panel lists the failed deliveries (its default filter), with the receiver's last failure.
    await page.getByRole("heading", { name: "Webhooks" }).waitFor();
    expect(await page.locator("#wh-status").inputValue()).toBe("failed");
    for (const [jobId, id] of failedNotifications) {
      await expect.poll(() => whRow(id).count()).toBe(1);
      expect(await whRow(id).getAttribute("data-status")).toBe("failed");
      expect(await whRow(id).locator("td").nth(2).textContent()).toBe("export.failed");
      expect(await whRow(id).locator("td").nth(4).textContent()).toBe("2");
      expect(await whRow(id).locator(".error").textContent()).not.toBe("");
      expect(await redeliverOf(jobId).count()).toBe(1);
    }
    expect(await page.locator("#wh-empty").isHidden()).toBe(true);

    // The job opens its timeline.
    await whRow(failedNotifications.get(cancelledJob) as string)
      .locator("a.job-link")
      .click();
    await expect
      .poll(() => page.locator("#job-detail-title").textContent())
      .toBe(`Timeline of job ${cancelledJob.slice(0, 8)}`);
    expect(await page.locator("#job-detail").isVisible()).toBe(true);

    // Redeliver one: it leaves the failed list, and the receiver (up now) gets it.
    const cancelledId = failedNotifications.get(cancelledJob) as string;
    await redeliverOf(cancelledJob).click();
    await expect
      .poll(() => page.locator("#status").textContent())
      .toContain(`Redelivering export.failed of job ${cancelledJob.slice(0, 8)}`);
    await expect.poll(() => whRow(cancelledId).count()).toBe(0);
    const after = await until("the redelivered notification to be delivered", async () => {
      const found = (await notifications()).find((n) => n.id === cancelledId);
      expect(["pending", "delivered"]).toContain(found?.status);
      return found?.status === "delivered" ? found : undefined;
    });
    expect(after).toMatchObject({ attempts: 1, last_status: 200, last_error: null });
    const received = await fetch(`${stack.emulatorUrl}/__receiver/browser/requests`);
    const { requests } = (await received.json()) as {
      requests: { headers: Record<string, string>; body: string }[];
    };
    const sent = requests.filter((r) => r.headers["webhook-id"] === cancelledId);
    expect(sent.length).toBeGreaterThanOrEqual(1);
    expect(JSON.parse(sent[0]?.body ?? "{}")).toMatchObject({
      type: "export.failed",
      data: { job: { id: cancelledJob, error: "cancelled" } },
    });

    // The filter shows it among the delivered ones, then all of them.
    const filter = page.locator("#wh-status");
    await filter.selectOption("delivered");
    await expect.poll(() => whRow(cancelledId).getAttribute("data-status")).toBe("delivered");
    await filter.selectOption("");
    await expect.poll(() => whRow(cancelledId).getAttribute("data-status")).toBe("delivered");
    await expect
      .poll(() => whRow(failedNotifications.get(rowJob) as string).getAttribute("data-status"))
      .toBe("failed");
    await filter.selectOption("failed");
    await expect.poll(() => whRow(cancelledId).count()).toBe(0);

    // The other two: the failed list is empty, and says so.
    for (const jobId of [rowJob, bulkJob]) {
      await redeliverOf(jobId).click();
      await expect.poll(() => whRow(failedNotifications.get(jobId) as string).count()).toBe(0);
    }
    await expect.poll(() => page.locator("#wh-empty").isVisible()).toBe(true);
    expect(await page.locator("#wh-empty").textContent()).toBe("No failed deliveries");
    expect(await page.locator("#notifications tbody tr").count()).toBe(0);
    await page.screenshot({
      path: path.join(os.tmpdir(), "reel-exports-dashboard-webhooks.png"),
      fullPage: true,
    });
  }, 120_000);
});
