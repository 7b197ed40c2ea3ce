// Outbound webhooks (NOTIFY_URL): written to the outbox by the statement that ends a job, tried by
// the consumer from its queue, retried across a receiver that fails, given up on a dead one
// (changing nothing for the job), redelivered by operators; every delivery verified with
// `standardwebhooks`, the Standard Webhooks spec's reference implementation. The receiver is the
// emulator's (`/__receiver/{name}`): it can answer 500 and hang.
import { env } from "cloudflare:workers";
import { Webhook } from "standardwebhooks";
import { describe, expect, it } from "vitest";
import consumer from "../../consumer/index.ts";
import { sweepNotifications } from "../../consumer/notifications.ts";
import type { ConsumerEnv } from "../../shared/env.ts";
import { notificationIdOf } from "../../shared/notify.ts";
import type { Job, JobRow } from "../../shared/sql/jobs/row.ts";
import {
  ADMIN_TOKEN,
  callbackPath,
  deliver,
  emulatorOrigin,
  type FetchInit,
  postJson,
  processingJob,
  producerFetch,
  putOutput,
  readJob,
} from "./helpers.ts";

const SECRET = `whsec_${btoa("reel-exports-test-notify-secret!")}`;

interface Received {
  headers: Record<string, string>;
  body: string;
  status: number | null;
}

async function receiver(config: Record<string, unknown>): Promise<string> {
  const name = `notify-${crypto.randomUUID().slice(0, 8)}`;
  const res = await fetch(`${emulatorOrigin}/__receiver/${name}/config`, {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(config),
  });
  expect(res.status).toBe(200);
  return name;
}

async function received(name: string): Promise<Received[]> {
  const res = await fetch(`${emulatorOrigin}/__receiver/${name}/requests`);
  return ((await res.json()) as { requests: Received[] }).requests;
}

/** The settings of a Worker that notifies `name` (fast retries and timeouts for the tests). */
function notifyVars(name: string, overrides: Record<string, string> = {}) {
  return {
    NOTIFY_URL: `${emulatorOrigin}/__receiver/${name}`,
    NOTIFY_SECRET: SECRET,
    NOTIFY_RETRY_S: "0,0,0",
    NOTIFY_TIMEOUT_MS: "300",
    ...overrides,
  };
}

/**
 * The outbox's switch as the consumer's cron leaves it for these settings (on with a NOTIFY_URL,
 * off without): the ending trigger writes notifications only while it is on.
 */
async function cronWith(vars: Record<string, string>): Promise<void> {
  await sweepNotifications({ ...env, ...vars } as ConsumerEnv);
}

/** A job completed through its webhook, by a producer that notifies `name`. */
async function completedJob(vars: Record<string, string>): Promise<JobRow> {
  const job = await processingJob();
  await putOutput(job);
  const res = await postJson(
    await callbackPath("webhook", job.id, job.attempt),
    { id: job.runpod_job_id, status: "COMPLETED", executionTime: 1000 },
    { token: null, vars },
  );
  expect(res.status).toBe(200);
  return (await readJob(job.id)) as JobRow;
}

/** One try of the notification, as the consumer's queue delivers it. */
async function tryOnce(id: string, vars: Record<string, string>) {
  return deliver([{ body: { notification_id: id } }], {
    queue: "export-notifications",
    env: { ...env, ...vars } as ConsumerEnv,
  });
}

async function notification(id: string) {
  return env.DB.prepare("SELECT * FROM notifications WHERE id = ?")
    .bind(id)
    .first<{ status: string; attempts: number; body: string | null }>();
}

async function eventsOf(jobId: string, init: FetchInit = {}) {
  const res = await producerFetch(`/exports/${jobId}/events`, init);
  return ((await res.json()) as { events: { type: string; detail?: string }[] }).events;
}

describe("outbound webhooks", () => {
  it("delivers a job's ending, signed per Standard Webhooks, retried across a receiver that fails twice, then succeeds", async () => {
    const name = await receiver({ answers: [500, 500], status: 200 });
    const vars = notifyVars(name);
    await cronWith(vars);
    const job = await completedJob(vars);
    const id = notificationIdOf(job.id, job.version);
    expect(await notification(id)).toMatchObject({ status: "pending", attempts: 0 });

    // Two tries answered 500: each comes back (a retry of its message), then the third lands.
    for (const expected of ["retry", "retry", "ack"] as const) {
      const result = await tryOnce(id, vars);
      if (expected === "retry") expect(result.retryMessages).toHaveLength(1);
      else expect(result.explicitAcks).toHaveLength(1);
    }
    expect(await notification(id)).toMatchObject({ status: "delivered", attempts: 3 });

    const deliveries = await received(name);
    expect(deliveries.map((d) => d.status)).toEqual([500, 500, 200]);
    const hook = new Webhook(SECRET);
    const answer = await producerFetch(`/exports/${job.id}`);
    const { job: apiJob } = (await answer.json()) as { job: Job };
    for (const delivery of deliveries) {
      // The reference implementation verifies the signature and the timestamp's freshness.
      const payload = hook.verify(delivery.body, delivery.headers) as {
        type: string;
        timestamp: string;
        data: { job: Job };
      };
      expect(delivery.headers["webhook-id"]).toBe(id);
      expect(delivery.headers["webhook-signature"]).toMatch(/^v1,/);
      expect(payload.type).toBe("export.completed");
      expect(Number.isNaN(Date.parse(payload.timestamp))).toBe(false);
      expect(payload.data.job).toEqual(apiJob);
    }
    // Every try sends the same bytes under the same webhook-id (receivers dedupe on it).
    expect(new Set(deliveries.map((d) => d.body)).size).toBe(1);
    // A forged signature fails the same verification.
    const forged = { ...deliveries[0]?.headers, "webhook-signature": "v1,AAAA" };
    expect(() => hook.verify(deliveries[0]?.body ?? "", forged)).toThrow();

    // The timeline says so, after the ending, and the job did not change.
    const events = await eventsOf(job.id);
    expect(events.map((e) => e.type).slice(-2)).toEqual(["completed", "notified"]);
    expect(await readJob(job.id)).toEqual(job);

    // A message of a delivered notification sends nothing more.
    await tryOnce(id, vars);
    expect(await received(name)).toHaveLength(3);
  });

  it("gives up on a receiver that hangs or is down, failing nothing of the job, and redelivers on an operator's request", async () => {
    const name = await receiver({ status: 200, hangMs: 60_000 });
    const vars = notifyVars(name, { NOTIFY_RETRY_S: "0" });
    await cronWith(vars);
    const before = await scrapeFailures();
    const job = await completedJob(vars);
    const id = notificationIdOf(job.id, job.version);

    // No answer within NOTIFY_TIMEOUT_MS, twice: the schedule ("0": one retry) is spent.
    expect((await tryOnce(id, vars)).retryMessages).toHaveLength(1);
    expect((await tryOnce(id, vars)).explicitAcks).toHaveLength(1);
    expect(await notification(id)).toMatchObject({ status: "failed", attempts: 2 });
    expect(await readJob(job.id)).toEqual(job);
    const events = await eventsOf(job.id);
    expect(events.at(-1)?.type).toBe("notify_failed");
    expect(events.at(-1)?.detail).toContain("no answer within 300 ms");

    // The operators see it, and GET /metrics counts it.
    const listed = await producerFetch("/admin/notifications?status=failed", {
      token: ADMIN_TOKEN,
    });
    const page = (await listed.json()) as { notifications: { id: string; status: string }[] };
    expect(page.notifications.map((n) => n.id)).toContain(id);
    expect(await scrapeFailures()).toBe(before + 1);

    // A receiver that is down (nothing listens): the same, without waiting.
    const downVars = { ...vars, NOTIFY_URL: "http://127.0.0.1:9/hook" };
    const other = await completedJob(downVars);
    const otherId = notificationIdOf(other.id, other.version);
    await tryOnce(otherId, downVars);
    await tryOnce(otherId, downVars);
    expect(await notification(otherId)).toMatchObject({ status: "failed" });
    expect(await readJob(other.id)).toEqual(other);

    // Redelivery to a receiver that answers now: a new series, delivered.
    const fixed = await receiver({ status: 204 });
    const fixedVars = notifyVars(fixed);
    const res = await producerFetch(`/admin/notifications/${id}/redeliver`, {
      method: "POST",
      token: ADMIN_TOKEN,
    });
    expect(res.status).toBe(202);
    expect(await res.json()).toMatchObject({
      notification: { id, status: "pending", attempts: 0 },
    });
    expect((await tryOnce(id, fixedVars)).explicitAcks).toHaveLength(1);
    expect(await notification(id)).toMatchObject({ status: "delivered", attempts: 1 });
    const [delivery] = await received(fixed);
    expect(delivery?.headers["webhook-id"]).toBe(id);
    expect(new Webhook(SECRET).verify(delivery?.body ?? "", delivery?.headers ?? {})).toMatchObject(
      { type: "export.completed" },
    );
    expect((await eventsOf(job.id)).map((e) => e.type).slice(-2)).toEqual([
      "notify_failed",
      "notified",
    ]);
    const missing = await producerFetch("/admin/notifications/msg_nope_1/redeliver", {
      method: "POST",
      token: ADMIN_TOKEN,
    });
    expect(missing.status).toBe(404);
  });

  it("writes a failed, cancelled or expired job's export.failed notification in the statement that ends it, and none while NOTIFY_URL is unset", async () => {
    const name = await receiver({ status: 200 });
    const vars = notifyVars(name);
    await cronWith(vars);
    const job = await processingJob();
    const cancel = await producerFetch(`/exports/${job.id}/cancel`, { method: "POST", vars });
    expect(cancel.status).toBe(200);
    const cancelled = (await readJob(job.id)) as JobRow;
    const id = notificationIdOf(cancelled.id, cancelled.version);
    expect((await tryOnce(id, vars)).explicitAcks).toHaveLength(1);
    const [delivery] = await received(name);
    const payload = new Webhook(SECRET).verify(delivery?.body ?? "", delivery?.headers ?? {}) as {
      type: string;
      data: { job: Job };
    };
    expect(payload.type).toBe("export.failed");
    expect(payload.data.job).toMatchObject({ id: job.id, status: "error", error: "cancelled" });

    // Without NOTIFY_URL (the consumer's cron turns the switch off): an ending writes none.
    await cronWith({});
    const quiet = await processingJob();
    const off = await producerFetch(`/exports/${quiet.id}/cancel`, { method: "POST" });
    expect(off.status).toBe(200);
    const ended = (await readJob(quiet.id)) as JobRow;
    expect(await notification(notificationIdOf(ended.id, ended.version))).toBeNull();
  });

  it("the cron hands due notifications to the queue (the safety net of a lost message)", async () => {
    const name = await receiver({ status: 200 });
    const vars = notifyVars(name);
    await cronWith(vars);
    const job = await completedJob(vars);
    const id = notificationIdOf(job.id, job.version);
    const sent: string[] = [];
    const queue: Queue<{ notification_id: string }> = {
      metrics: () => env.NOTIFY_QUEUE.metrics(),
      send: async (body, options) => {
        sent.push(body.notification_id);
        return env.NOTIFY_QUEUE.send(body, options);
      },
      sendBatch: async (messages, options) => {
        const list = [...messages];
        for (const message of list) sent.push(message.body.notification_id);
        return env.NOTIFY_QUEUE.sendBatch(list, options);
      },
    };
    await consumer.scheduled({ cron: "* * * * *", scheduledTime: Date.now(), noRetry: () => {} }, {
      ...env,
      ...vars,
      NOTIFY_QUEUE: queue,
    } as ConsumerEnv);
    expect(sent).toContain(id);
  });
});

async function scrapeFailures(): Promise<number> {
  const row = await env.DB.prepare(
    "SELECT value FROM metric_totals WHERE name = 'notify_failures'",
  ).first<{ value: number }>();
  return row?.value ?? 0;
}
