// No secret in the logs: a whole job lifecycle through the real handlers and bindings (create,
// an Idempotency-Key repeat, the consumer's batches against the RunPod emulator, RunPod's progress
// and webhook calls on the URLs the consumer signed, forged ones, cancel, failed submissions —
// RunPod's 500 and a refused API key —, dead letters, the reconciler, live tickets, operators'
// routes) with console.log/info/warn/error/debug wrapped for the test's duration (a spy on our own
// logging; every binding is the real one). Every line must be shared/log.ts's JSON with a
// `message`, and none may contain a configured secret, a minted ticket or a `sig=` value.
import { createScheduledController } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import consumer from "../../consumer/index.ts";
import type { Job } from "../../shared/sql/jobs/row.ts";
import {
  ADMIN_TOKEN,
  configureEndpoint,
  deliver,
  emulatorRequests,
  freshProjectId,
  overlayRequest,
  postJson,
  producerFetch,
  putInput,
  putOutput,
  readJob,
  runCalls,
  uniqueEndpoint,
  waitFor,
} from "./helpers.ts";

const METHODS = ["log", "info", "warn", "error", "debug"] as const;
type Method = (typeof METHODS)[number];

/** Every console line of the test, as the runtime would print it. */
const lines: { method: Method; text: string }[] = [];
const originals = new Map<Method, (...args: unknown[]) => void>();

function show(arg: unknown): string {
  if (typeof arg === "string") return arg;
  if (arg instanceof Error) return `${arg.name}: ${arg.message}\n${arg.stack ?? ""}`;
  try {
    return JSON.stringify(arg) ?? String(arg);
  } catch {
    return String(arg);
  }
}

beforeEach(() => {
  lines.length = 0;
  for (const method of METHODS) {
    const original = console[method].bind(console);
    originals.set(method, original);
    console[method] = (...args: unknown[]) => {
      lines.push({ method, text: args.map(show).join(" ") });
      original(...args);
    };
  }
});

afterEach(() => {
  for (const [method, original] of originals) console[method] = original;
});

let counter = 0;
function message(body: unknown, attempts = 1) {
  counter += 1;
  return { id: `logs-${counter}-${crypto.randomUUID()}`, timestamp: new Date(), attempts, body };
}

async function createJob(projectId: number, idempotencyKey?: string): Promise<Job> {
  const key = `uploads/${projectId}/logs.mp4`;
  await putInput(key);
  const res = await postJson("/exports", overlayRequest(projectId, key), {
    headers: idempotencyKey ? { "idempotency-key": idempotencyKey } : {},
  });
  expect([200, 202]).toContain(res.status);
  return ((await res.json()) as { job: Job }).job;
}

/** The signed webhook and progress paths the consumer gave RunPod for `jobId`'s last run. */
async function signedPaths(endpoint: string, jobId: string) {
  const call = runCalls(await emulatorRequests(endpoint))
    .filter((r) => (r.body as { input: { export_job_id: string } }).input.export_job_id === jobId)
    .at(-1);
  const body = call?.body as { webhook: string; input: { progress_url: string } } | undefined;
  if (!body) throw new Error(`no /run call for ${jobId}`);
  const path = (url: string) => {
    const u = new URL(url);
    return `${u.pathname}${u.search}`;
  };
  return { webhook: path(body.webhook), progress: path(body.input.progress_url) };
}

const sigOf = (path: string) => new URL(path, "https://x.test").searchParams.get("sig") ?? "";

describe("logs", () => {
  it("carry no secret, ticket or signature through a whole lifecycle, and are JSON lines", async () => {
    const endpoint = uniqueEndpoint("logs");
    await configureEndpoint(endpoint, { runMs: 60_000 });
    const wrongKeyEndpoint = uniqueEndpoint("logs-key");
    const wrongKey = `wrong-runpod-key-${crypto.randomUUID()}`;
    const testEnv = { ...env, RUNPOD_ENDPOINT_ID: endpoint };
    const secrets: Record<string, string> = {
      RUNPOD_API_KEY: env.RUNPOD_API_KEY as string,
      WEBHOOK_SECRET: env.WEBHOOK_SECRET as string,
      API_TOKEN: env.API_TOKEN as string,
      ADMIN_TOKEN: env.ADMIN_TOKEN as string,
      "the refused RunPod key": wrongKey,
    };

    // 1. Create, and repeat under the same Idempotency-Key.
    const projectId = freshProjectId();
    const idempotencyKey = `logs-${crypto.randomUUID()}`;
    const job = await createJob(projectId, idempotencyKey);
    expect((await createJob(projectId, idempotencyKey)).id).toBe(job.id);

    // 2. Live tickets: a project's and the operators', a socket opened with each, a forged one.
    const tickets: string[] = [];
    for (const [body, token] of [
      [{ project_ids: [projectId] }, undefined],
      [{ all_projects: true }, ADMIN_TOKEN],
    ] as const) {
      const res = await postJson("/live-tickets", body, token ? { token } : {});
      expect(res.status).toBe(201);
      tickets.push(((await res.json()) as { ticket: string }).ticket);
    }
    const sockets: WebSocket[] = [];
    for (const ticket of tickets) {
      const res = await producerFetch(`/live?ticket=${ticket}`, {
        token: null,
        headers: { Upgrade: "websocket" },
      });
      expect(res.status).toBe(101);
      res.webSocket?.accept();
      if (res.webSocket) sockets.push(res.webSocket);
    }
    const [kid, payload] = tickets[0]?.split(".") ?? [];
    const forgedTicket = `${kid}.${payload}.${"0".repeat(64)}`;
    expect((await producerFetch(`/live?ticket=${forgedTicket}`, { token: null })).status).toBe(401);

    // 3. The consumer submits it to RunPod (the emulator).
    expect((await deliver([message({ job_id: job.id })], { env: testEnv })).outcome).toBe("ok");
    const claimed = await waitFor(async () => {
      const row = await readJob(job.id);
      return row?.runpod_job_id ? row : undefined;
    }, "the run");
    const urls = await signedPaths(endpoint, job.id);
    const sigs = [sigOf(urls.webhook), sigOf(urls.progress)];

    // 4. RunPod's calls: a progress report, a forged webhook, a stale one, the completion.
    expect((await postJson(urls.progress, { progress: 40 }, { token: null })).status).toBe(204);
    const forged = urls.webhook.replace(/sig=[0-9a-f]+/, `sig=${"1".repeat(64)}`);
    expect((await postJson(forged, { id: "x", status: "COMPLETED" }, { token: null })).status).toBe(
      401,
    );
    const wrongAttempt = urls.webhook.replace("attempt=1", "attempt=2");
    expect(
      (await postJson(wrongAttempt, { id: "x", status: "COMPLETED" }, { token: null })).status,
    ).toBe(401);
    expect((await postJson(urls.webhook, "{not json", { token: null })).status).toBe(400);
    await putOutput(claimed);
    const done = await postJson(
      urls.webhook,
      { id: claimed.runpod_job_id, status: "COMPLETED", output: {} },
      { token: null },
    );
    expect(await done.json()).toMatchObject({ applied: true, outcome: "completed" });

    // 5. A run that fails at RunPod (FAILED webhook) and one whose output is missing.
    const failing = await createJob(freshProjectId());
    await deliver([message({ job_id: failing.id })], { env: testEnv });
    const failingRow = await waitFor(async () => {
      const row = await readJob(failing.id);
      return row?.runpod_job_id ? row : undefined;
    }, "the failing run");
    const failingUrls = await signedPaths(endpoint, failing.id);
    sigs.push(sigOf(failingUrls.webhook), sigOf(failingUrls.progress));
    const failed = await postJson(
      failingUrls.webhook,
      { id: failingRow.runpod_job_id, status: "FAILED", error: "emulated failure" },
      { token: null },
    );
    expect(await failed.json()).toMatchObject({ applied: true, outcome: "retrying" });

    // 6. Cancel a running job (RunPod /cancel).
    const toCancel = await createJob(freshProjectId());
    await deliver([message({ job_id: toCancel.id })], { env: testEnv });
    await waitFor(
      async () => ((await readJob(toCancel.id))?.runpod_job_id ? true : undefined),
      "the run to cancel",
    );
    const cancelUrls = await signedPaths(endpoint, toCancel.id);
    sigs.push(sigOf(cancelUrls.webhook), sigOf(cancelUrls.progress));
    expect((await producerFetch(`/exports/${toCancel.id}/cancel`, { method: "POST" })).status).toBe(
      200,
    );

    // 7. Failed submissions: RunPod answers 500; then RunPod refuses the API key (401).
    await configureEndpoint(endpoint, { runScript: [500] });
    const unlucky = await createJob(freshProjectId());
    await deliver([message({ job_id: unlucky.id })], { env: testEnv });
    expect(await readJob(unlucky.id)).toMatchObject({ status: "pending", retry_count: 1 });
    const refused = await createJob(freshProjectId());
    await deliver([message({ job_id: refused.id })], {
      env: { ...env, RUNPOD_ENDPOINT_ID: wrongKeyEndpoint, RUNPOD_API_KEY: wrongKey },
    });
    expect(await readJob(refused.id)).toMatchObject({ status: "pending", retry_count: 0 });

    // 8. Dead letters: an unparseable message, and the dead-letter queue's; a replay.
    await deliver([message({ nope: true }), message("job_id")], { env: testEnv });
    const letter = message({ job_id: unlucky.id }, 11);
    await deliver([letter], { queue: "export-jobs-dlq", env: testEnv });
    expect(
      (
        await producerFetch(`/dead-letters/${letter.id}/replay`, {
          method: "POST",
          token: ADMIN_TOKEN,
        })
      ).status,
    ).toBe(202);

    // 9. The reconciler, operators' reads, and refused requests.
    await consumer.scheduled(createScheduledController(), testEnv);
    for (const path of ["/stats", "/dead-letters", "/admin/jobs"]) {
      expect((await producerFetch(path, { token: ADMIN_TOKEN })).status).toBe(200);
    }
    expect((await producerFetch("/stats", { token: "nope" })).status).toBe(401);
    expect((await producerFetch(`/exports/${job.id}/events`)).status).toBe(200);
    for (const socket of sockets) socket.close(1000, "done");

    // ---- what was logged ----
    expect(sigs.every((sig) => /^[0-9a-f]{64}$/.test(sig))).toBe(true);
    const forbidden: [string, string][] = [
      ...Object.entries(secrets),
      ...tickets.flatMap((ticket, i): [string, string][] => [
        [`ticket ${i}`, ticket],
        [`ticket ${i}'s signature`, ticket.split(".")[2] as string],
      ]),
      ...sigs.map((sig, i): [string, string] => [`sig ${i}`, sig]),
    ];
    for (const [name, value] of forbidden)
      expect({ name, length: value.length >= 8 }).toEqual({ name, length: true });
    const leaks = lines.flatMap((line) =>
      forbidden
        .filter(([, value]) => line.text.includes(value))
        .map(([name]) => ({ leaked: name, line: line.text.slice(0, 300) })),
    );
    const sigParams = lines.filter((line) => /sig=[0-9a-fA-F]{8,}/.test(line.text));
    expect(leaks).toEqual([]);
    expect(sigParams).toEqual([]);

    // Every line is one JSON object with a level, a message and its event name (shared/log.ts);
    // a line about a submission names its job and attempt.
    const notJson = lines.filter((line) => {
      try {
        const parsed = JSON.parse(line.text) as {
          level?: unknown;
          message?: unknown;
          event?: unknown;
          job_id?: unknown;
          attempt?: unknown;
        };
        const aboutSubmission =
          typeof parsed.message === "string" &&
          /^(submission failed|RunPod refused the API key; released)$/.test(parsed.message);
        return (
          typeof parsed !== "object" ||
          parsed === null ||
          typeof parsed.message !== "string" ||
          !["info", "warn", "error"].includes(parsed.level as string) ||
          typeof parsed.event !== "string" ||
          !/^[a-z0-9]+(_[a-z0-9]+)*$/.test(parsed.event) ||
          (aboutSubmission &&
            (typeof parsed.job_id !== "string" || typeof parsed.attempt !== "number"))
        );
      } catch {
        return true;
      }
    });
    expect(notJson).toEqual([]);
    // And the lifecycle did log: the handlers' own lines were captured.
    const messages = new Set(
      lines.map((line) => (JSON.parse(line.text) as { message: string }).message),
    );
    for (const expected of [
      "runpod webhook",
      "submission failed",
      "RunPod refused the API key; released",
      "dead letter recorded",
    ]) {
      expect([...messages]).toContain(expected);
    }
    console.info(`logs checked: ${lines.length} lines, ${forbidden.length} secrets and signatures`);
  });
});
