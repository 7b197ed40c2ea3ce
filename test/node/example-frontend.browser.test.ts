// The frontend example (examples/frontend/) in a real browser (Chromium driven by playwright-core;
// see support/chromium.ts), served by the same local stack as `npm start`. The story: a user clicks
// Export; the page gets a client token scoped to the user's project from its own backend (which
// alone holds API_TOKEN), then calls the producer's API itself: the create, a live ticket, the
// WebSocket, whose messages alone move the progress bar (the emulator reports 20, 40, 60, 80 over
// a four-second run) until complete; then the timeline and a signed download URL, and Download
// saves the sample's bytes straight from the producer. The page never polls, and the backend
// relays no call and no byte.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SessionAnswer } from "../../examples/frontend/server.ts";
import { type LocalStack, startLocalStack } from "../../scripts/local-stack.ts";
import { type ChromiumLaunch, findChromium } from "./support/chromium.ts";

const PRODUCER_PORT = 26787;
const EXAMPLE_PORT = 26792;
const logs: string[] = [];
let persistTo: string;
let stack: LocalStack | undefined;
let browser: Browser | undefined;
let chromiumLaunch: ChromiumLaunch;

interface Job {
  id: string;
  project_id: number;
  user_id: number | null;
  status: string;
  progress: number;
  version: number;
}

async function until<T>(what: string, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const value = await check();
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  console.error(logs.slice(-60).join("\n"));
  throw new Error(`timed out waiting for ${what}`);
}

beforeAll(async () => {
  chromiumLaunch = await findChromium();
  persistTo = mkdtempSync(path.join(os.tmpdir(), "reel-example-"));
  stack = await startLocalStack({
    producerPort: PRODUCER_PORT,
    consumerPort: 26788,
    emulatorPort: 26790,
    inspectorPorts: [27229, 27230],
    exampleFrontendPort: EXAMPLE_PORT,
    persistTo: path.join(persistTo, "state"),
    settings: { RUNPOD_ENDPOINT_ID: "example-endpoint" },
    // A run of four seconds that reports progress four times: the bar has time to move.
    emulatorEnv: {
      RUNPOD_EMULATOR_RUN_MS: "4000",
      RUNPOD_EMULATOR_PROGRESS_STEPS: "20,40,60,80",
    },
    onOutput: (name, line) => logs.push(`[${name}] ${line}`),
  }).catch((error: unknown) => {
    console.error(logs.slice(-40).join("\n"));
    throw error;
  });
  browser = await chromium.launch({
    executablePath: chromiumLaunch.executablePath,
    headless: true,
    args: chromiumLaunch.args,
  });
}, 150_000);

afterAll(async () => {
  await browser?.close();
  await stack?.stop();
  rmSync(persistTo, { recursive: true, force: true });
});

describe("the frontend example", () => {
  it("exports: live progress over the producer's WebSocket, no polling, then the download", async () => {
    if (!stack?.exampleFrontendUrl || !browser) throw new Error("the stack did not start");
    const exampleUrl = stack.exampleFrontendUrl;
    expect(exampleUrl).toBe(`http://127.0.0.1:${EXAMPLE_PORT}`);
    const page: Page = await browser.newPage({ viewport: { width: 900, height: 900 } });

    // Every HTTP request the page makes, and every WebSocket with the frames it received.
    const requests: { method: string; url: URL }[] = [];
    page.on("request", (request) => {
      requests.push({ method: request.method(), url: new URL(request.url()) });
    });
    const sockets: { url: string; frames: string[] }[] = [];
    page.on("websocket", (ws) => {
      const socket = { url: ws.url(), frames: [] as string[] };
      sockets.push(socket);
      ws.on("framereceived", (frame) => {
        if (typeof frame.payload === "string") socket.frames.push(frame.payload);
      });
    });
    const sessionAnswer = page.waitForResponse((res) => res.url().endsWith("/api/session"));
    const ticketAnswer = page.waitForResponse((res) => res.url().endsWith("/live-tickets"));

    await page.goto(`${exampleUrl}/`);
    await page.getByRole("heading", { name: "Export a video" }).waitFor();

    // Export, then watch the bar: the test samples the DOM, the page only listens.
    const created = page.waitForResponse(
      (res) => res.url().endsWith("/exports") && res.request().method() === "POST",
    );
    await page.getByRole("button", { name: "Export" }).click();
    // While it waits for its run, the page says when it should start (the create answer's
    // queue estimate, as the producer answered the page).
    const { job: answered } = (await (await created).json()) as { job: Job & { queue: unknown } };
    expect(answered).toMatchObject({
      status: "pending",
      queue: { position: expect.any(Number), eta_s: expect.any(Number), lane: "standard" },
    });
    // (Once the job runs, the line is hidden; its text stays: read it whichever came first.)
    await expect
      .poll(() => page.locator("#eta").textContent())
      .toMatch(/^starts in (<1|~\d+) min$/);
    const seen: { status: string; progress: string }[] = [];
    await until("the job to complete", async () => {
      const [status, progress] = await Promise.all([
        page.locator("#status").textContent(),
        page.locator("#progress").evaluate((el) => String((el as { value: number }).value)),
      ]);
      const last = seen.at(-1);
      if (last?.status !== status || last?.progress !== progress) {
        seen.push({ status: status ?? "", progress });
      }
      return status === "complete" ? true : undefined;
    });
    const progressSeen = seen.map((s) => Number(s.progress));
    // Intermediate values, never backwards, ending at 100 with "complete".
    expect(progressSeen.some((p) => p === 40 || p === 60)).toBe(true);
    expect(progressSeen).toEqual([...progressSeen].sort((a, b) => a - b));
    expect(seen.at(-1)).toEqual({ status: "complete", progress: "100" });
    expect(await page.locator("#percent").textContent()).toBe("100%");
    expect(seen.some((s) => s.status === "processing")).toBe(true);

    const jobId = (await page.locator("#job-id").textContent()) ?? "";
    expect(jobId).toMatch(/^[0-9a-f-]{36}$/);

    // The timeline is shown, and the Download link is a signed URL of the producer's.
    await page.locator("#timeline-box").waitFor({ state: "visible" });
    const timeline = await page.locator("#timeline li").allTextContents();
    expect(timeline.some((line) => line.includes("created"))).toBe(true);
    expect(timeline.some((line) => line.includes("completed"))).toBe(true);
    const download = page.getByRole("link", { name: "Download" });
    await download.waitFor({ state: "visible" });
    const href = new URL((await download.getAttribute("href")) ?? "");
    expect(`${href.origin}${href.pathname}`).toBe(`${stack.producerUrl}/exports/${jobId}/output`);
    expect([...href.searchParams.keys()].sort()).toEqual(["expires", "kid", "sig"]);
    await page.screenshot({
      path: path.join(os.tmpdir(), "reel-exports-example-frontend.png"),
      fullPage: true,
    });

    // The backend's one answer: a client token for the demo project, and where the API is.
    const session = (await (await sessionAnswer).json()) as SessionAnswer;
    expect(session).toMatchObject({ api_url: stack.producerUrl, project_id: 42 });
    // One WebSocket, straight to the producer with the page's ticket, carrying `job` frames.
    const { ticket } = (await (await ticketAnswer).json()) as { ticket: string };
    const liveUrl = `ws://127.0.0.1:${PRODUCER_PORT}/live?ticket=${encodeURIComponent(ticket)}`;
    expect(sockets.map((s) => s.url)).toEqual([liveUrl]);
    const messages = (sockets[0]?.frames ?? [])
      .filter((text) => text !== "pong")
      .map((text) => JSON.parse(text) as { type: string; job?: Job; jobs?: Job[] });
    expect(messages[0]?.type).toBe("snapshot");
    const ours = messages.flatMap((m) => (m.type === "job" && m.job?.id === jobId ? [m.job] : []));
    expect(ours.length).toBeGreaterThanOrEqual(3);
    expect(ours.map((job) => job.progress)).toEqual(expect.arrayContaining([40, 60, 100]));
    expect(ours.at(-1)).toMatchObject({ status: "complete", progress: 100 });

    // No polling: besides the page itself (the document, app.js, style.css), exactly the session
    // from the backend, then the create, the ticket, the timeline and the download URL from the
    // producer (CORS preflights aside).
    const api = () =>
      requests
        .filter(({ method }) => method !== "OPTIONS")
        .filter(({ url }) => url.origin !== exampleUrl || url.pathname.startsWith("/api/"))
        .map(({ method, url }) => `${method} ${url.origin}${url.pathname}`);
    const producer = stack.producerUrl;
    const expected = [
      `POST ${exampleUrl}/api/session`,
      `POST ${producer}/exports`,
      `POST ${producer}/live-tickets`,
      `POST ${producer}/exports/${jobId}/download-url`,
      `GET ${producer}/exports/${jobId}/events`,
    ];
    expect(api().sort()).toEqual([...expected].sort());

    // Download: the browser saves the export, whose bytes are the sample's (the emulator's
    // "render" copies its input), straight from the producer's signed URL.
    const [saved] = await Promise.all([page.waitForEvent("download"), download.click()]);
    const file = await saved.path();
    expect(readFileSync(file)).toEqual(readFileSync(stack.sampleFile));
    expect(saved.suggestedFilename()).toBe(`${jobId}.mp4`);
    expect(saved.url()).toBe(href.href);
    // (Chromium hands a download's request to its download manager: Playwright may not report it
    // as a page request.) Nothing else was asked for.
    expect(
      api()
        .filter((line) => line !== `GET ${producer}${href.pathname}`)
        .sort(),
    ).toEqual([...expected].sort());

    // The token chose the project and the user; the page could not.
    const res = await fetch(`${stack.producerUrl}/exports/${jobId}`, {
      headers: { authorization: `Bearer ${stack.settings.API_TOKEN}` },
    });
    const { job } = (await res.json()) as { job: Job & { input_video_key: string } };
    expect(job).toMatchObject({
      project_id: 42,
      user_id: 7,
      input_video_key: "uploads/demo/sample.mp4",
      status: "complete",
    });

    // The signed URL serves Range (a player seeking) without a bearer; the backend relays
    // nothing (no such route).
    const part = await fetch(href, { headers: { range: "bytes=4-7" } });
    expect(part.status).toBe(206);
    expect(part.headers.get("content-range")).toBe(
      `bytes 4-7/${readFileSync(stack.sampleFile).length}`,
    );
    expect(Buffer.from(await part.arrayBuffer())).toEqual(
      readFileSync(stack.sampleFile).subarray(4, 8),
    );
    expect((await fetch(`${exampleUrl}/api/exports/${jobId}/output`)).status).toBe(404);
    // The page's token opens its project only: another project's create is 403.
    const other = await fetch(`${producer}/exports`, {
      method: "POST",
      headers: { authorization: `Bearer ${session.token}`, "content-type": "application/json" },
      body: JSON.stringify({
        project_id: 43,
        type: "overlay",
        input_video_key: session.input_video_key,
        params: { highlight_regions: [{ start_time: 1, end_time: 3 }] },
      }),
    });
    expect(other.status).toBe(403);
  }, 120_000);
});
