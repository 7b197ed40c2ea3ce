// Figure 7, live latency (phase D, first): 100 operators' WebSockets on GET /live, then 40
// progress reports of the phase's one running job through its signed progress URL: from each
// report's answer (and its sending) to each socket's message.
import type { LocalStack } from "../../scripts/local-stack.ts";
import { signText } from "../../shared/signing.ts";
import { jsonInit, median, quantile, readJson, sleep } from "../support.ts";
import { figure } from "./results.ts";
import {
  countBy,
  ENDPOINTS,
  emulatorJobs,
  load,
  note,
  producer,
  type Run,
  until,
} from "./stack.ts";

const LIVE_CLIENTS = 100;
const LIVE_TRANSITIONS = 40;

/** Figure 7: LIVE_CLIENTS operators' sockets, LIVE_TRANSITIONS progress reports of one job. */
async function liveLatency(s: LocalStack, endpoint: string, jobId: string) {
  const job = (await emulatorJobs(s, endpoint)).find((j) => j.input.export_job_id === jobId);
  const progressUrl = job?.input.progress_url;
  if (!progressUrl) throw new Error("the live job has no progress_url at the emulator");
  const attempt = Number(new URL(progressUrl).searchParams.get("attempt"));
  const sig = await signText(s.settings.WEBHOOK_SECRET as string, `progress:${jobId}:${attempt}`);
  const signedHere = new URL(progressUrl).searchParams.get("sig") === sig;
  const wsBase = producer.url.replace(/^http/, "ws");
  const arrivals = new Map<number, number[]>(); // progress → arrival times
  const sockets: WebSocket[] = [];
  let snapshots = 0;
  await Promise.all(
    Array.from({ length: LIVE_CLIENTS }, async () => {
      const { ticket } = await readJson<{ ticket: string }>(
        `${producer.url}/live-tickets`,
        jsonInit(
          "POST",
          { all_projects: true },
          {
            authorization: `Bearer ${s.settings.ADMIN_TOKEN}`,
          },
        ),
      );
      const ws = new WebSocket(`${wsBase}/live?ticket=${encodeURIComponent(ticket)}`);
      sockets.push(ws);
      ws.addEventListener("message", (event) => {
        const at = Date.now();
        const message = JSON.parse(String(event.data)) as {
          type: string;
          job?: { id: string; progress: number };
          job_id?: string;
          progress?: number;
        };
        if (message.type === "snapshot") snapshots++;
        // A report reaches the sockets as the job (when D1 records it: a multiple of 25, or
        // the attempt's first news) or as a `progress` message (when it does not).
        const progress =
          message.type === "job" && message.job?.id === jobId
            ? message.job.progress
            : message.type === "progress" && message.job_id === jobId
              ? message.progress
              : undefined;
        if (progress !== undefined) {
          const list = arrivals.get(progress) ?? [];
          list.push(at);
          arrivals.set(progress, list);
        }
      });
      await new Promise<void>((resolve, reject) => {
        ws.addEventListener("open", () => resolve(), { once: true });
        ws.addEventListener("error", () => reject(new Error("a live socket failed")), {
          once: true,
        });
      });
    }),
  );
  await until(20_000, 50, async () => snapshots >= LIVE_CLIENTS);
  const sent: { progress: number; sentAt: number; answeredAt: number; status: number }[] = [];
  for (let p = 1; p <= LIVE_TRANSITIONS; p++) {
    const sentAt = Date.now();
    const res = await fetch(progressUrl, jsonInit("POST", { progress: p }));
    await res.arrayBuffer();
    sent.push({ progress: p, sentAt, answeredAt: Date.now(), status: res.status });
    await sleep(100);
  }
  await until(5000, 50, async () =>
    sent.every((t) => (arrivals.get(t.progress)?.length ?? 0) >= LIVE_CLIENTS),
  );
  const fromAnswer: number[] = [];
  const fromSend: number[] = [];
  let missing = 0;
  for (const t of sent) {
    const got = arrivals.get(t.progress) ?? [];
    missing += Math.max(0, LIVE_CLIENTS - got.length);
    for (const at of got) {
      fromAnswer.push(at - t.answeredAt);
      fromSend.push(at - t.sentAt);
    }
  }
  for (const ws of sockets) ws.close();
  await sleep(300);
  return {
    clients: LIVE_CLIENTS,
    snapshots,
    transitions: sent.length,
    answers: countBy(sent.map((t) => t.status)),
    fromAnswer,
    fromSend,
    missing,
    signedHere,
  };
}

export type LiveLatency = Awaited<ReturnType<typeof liveLatency>>;

/** On phase D's endpoint, through `jobId`: the job its warm-up left running. */
export async function measureLiveLatency(run: Run, jobId: string): Promise<LiveLatency> {
  load("live");
  note("live status: ");
  const live = await liveLatency(run.s, ENDPOINTS.hold, jobId);
  console.log(`p99 ${quantile(live.fromAnswer, 0.99)} ms after the answer`);
  return live;
}

/** The row of figure 7. */
export function reportLiveLatency(lv: LiveLatency): void {
  figure(
    "live_latency_p99",
    `7. live message after the transition's answer, p50 / p99 (${lv.clients} sockets)`,
    {
      value: quantile(lv.fromAnswer, 0.99),
      unit: "ms",
      target: "p99 < 100 ms",
      pass: quantile(lv.fromAnswer, 0.99) < 100 && lv.missing === 0,
      note:
        `p50 ${median(lv.fromAnswer)} ms after the 204 (negative: the message came before the answer); ` +
        `from the request sent p50 ${median(lv.fromSend)} ms, p99 ${quantile(lv.fromSend, 0.99)} ms; ` +
        `${lv.transitions} progress reports through the signed progress URL (answers ${JSON.stringify(lv.answers)}), ` +
        `${lv.clients} operators' sockets, ${lv.missing} messages missing`,
    },
  );
}
