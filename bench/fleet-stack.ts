// What `npm run fleet` (bench/fleet.ts) does with a local stack: start one per configuration (fresh
// state directory, fixed ports below the ephemeral range), post jobs as a client would, watch
// the dispatcher (`GET /stats`) and the emulator's fleet, wait for the drain, and read the
// emulator's admin API (runs, requests, the fleet's figures and timeline).
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { type LocalStack, startLocalStack } from "../scripts/local-stack.ts";
import { readJson, sleep, stripAnsi, waitForPorts } from "./support.ts";

export const ENDPOINT = "fleet-endpoint";
/** Producer, consumer, emulator (+1: the local R2 writer), inspectors (+1: the R2 writer's). */
export const PORTS = {
  producer: 31500,
  consumer: 31501,
  emulator: 31502,
  r2Writer: 31503,
  producerInspector: 31510,
  consumerInspector: 31511,
  r2WriterInspector: 31512,
} as const;

const started = Date.now();
/** A progress line, with the seconds since the bench started. */
export const say = (line: string) =>
  console.log(`[fleet ${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${line}`);

export const ms = (value: string | number | null | undefined): number =>
  typeof value === "number" ? value : value ? Date.parse(value) : Number.NaN;

export interface EmulatorRun {
  id: string;
  status: string;
  input: { export_job_id?: string };
  submittedAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  webhookDeliveries: { at: string; status?: number; error?: string }[];
}

export interface EmulatorRequest {
  method: string;
  path: string;
  receivedAt: string;
  responseStatus: number | null;
}

export interface FleetSample {
  at: number;
  idle: number;
  running: number;
  initializing: number;
  throttled: number;
  inQueue: number;
}

export interface FleetReport {
  mode: string;
  since: number;
  at: number;
  current: Omit<FleetSample, "at"> & { inProgress: number };
  workerMs: { idle: number; running: number; initializing: number; throttled: number };
  billedWorkerMs: number;
  idleWhileQueuedMs: number;
  peakWorkers: number;
  workersStarted: number;
  workersStopped: number;
  timeline: FleetSample[];
  timelineDropped: number;
}

export interface DispatchStatus {
  state: string;
  in_flight: number;
  mode: string;
  max_in_flight: number;
  cap_reason: string;
  fleet: {
    ready: number;
    running: number;
    initializing: number;
    throttled: number;
    in_queue: number;
  } | null;
  waiting: number;
  waiting_keys: number;
}

export interface Stats {
  jobs: { pending: number; processing: number; complete: number; error: number };
  dispatch: DispatchStatus | null;
}

export interface Posted {
  id: string;
  user: number;
  sentAt: number;
  answeredAt: number;
}

/** A sample of GET /stats while a phase runs (ms since its first POST). */
export interface CapSample {
  t: number;
  cap: number;
  in_flight: number;
  waiting: number;
  fleet_workers: number | null;
  fleet_in_queue: number | null;
  reason: string;
}

export class Fleet {
  readonly tmp = mkdtempSync(path.join(os.tmpdir(), "reel-fleet-"));
  stack: LocalStack | null = null;
  /** The stack's output (the last 4,000 lines), and its notable lines for the log file. */
  readonly lines: string[] = [];
  readonly notable: string[] = [];
  /** Per configuration and process: lines seen, and of them the Workers' own JSON log lines. */
  readonly seen: Record<string, { lines: number; json: number }> = {};
  /** Per configuration: export-jobs batches the consumer ran (miniflare's QUEUE lines), messages. */
  readonly batches: Record<string, { batches: number; messages: number }> = {};
  #config = "";
  #idem = 0;

  /** Starts a stack for one configuration, on a fresh state directory. */
  async start(
    name: string,
    settings: Record<string, string>,
    emulatorEnv: Record<string, string>,
  ): Promise<LocalStack> {
    await this.stop();
    this.#config = name;
    await waitForPorts(Object.values(PORTS), say);
    const t = Date.now();
    this.stack = await startLocalStack({
      producerPort: PORTS.producer,
      consumerPort: PORTS.consumer,
      emulatorPort: PORTS.emulator,
      r2WriterPort: PORTS.r2Writer,
      inspectorPorts: [PORTS.producerInspector, PORTS.consumerInspector],
      r2WriterInspectorPort: PORTS.r2WriterInspector,
      exampleFrontendPort: null,
      persistTo: path.join(this.tmp, name, ".wrangler/state"),
      settings: { RUNPOD_ENDPOINT_ID: ENDPOINT, ...settings },
      emulatorEnv: { RUNPOD_EMULATOR_LOG: "0", ...emulatorEnv },
      onOutput: (who, line) => {
        this.lines.push(`[${name}:${who}] ${line}`);
        if (this.lines.length > 4000) this.lines.shift();
        const seen = this.seen[`${name}:${who}`] ?? { lines: 0, json: 0 };
        this.seen[`${name}:${who}`] = seen;
        seen.lines++;
        if (line.includes('"level":"')) seen.json++;
        const batch = /QUEUE export-jobs (\d+)\/(\d+)/.exec(stripAnsi(line));
        if (batch) {
          const b = this.batches[name] ?? { batches: 0, messages: 0 };
          this.batches[name] = b;
          b.batches++;
          b.messages += Number(batch[2]);
        }
        if (/"level":"(warn|error)"|refill failed|\bERROR\b|✘/.test(line)) {
          this.notable.push(`[${name}:${who}] ${line}`);
        }
      },
    });
    say(`${name}: stack up in ${((Date.now() - t) / 1000).toFixed(0)} s`);
    return this.stack;
  }

  async stop(): Promise<void> {
    const s = this.stack;
    this.stack = null;
    await s?.stop();
  }

  /** Stops the stack and removes the temporary directory. */
  async close(): Promise<void> {
    await this.stop();
    rmSync(this.tmp, { recursive: true, force: true });
  }

  get s(): LocalStack {
    if (!this.stack) throw new Error("no stack running");
    return this.stack;
  }

  /** The current configuration's queue batches so far. */
  queueBatches(): { batches: number; messages: number } {
    return { ...(this.batches[this.#config] ?? { batches: 0, messages: 0 }) };
  }

  /** How many notable lines of this configuration match. */
  count(pattern: RegExp): number {
    return this.notable.filter((l) => l.startsWith(`[${this.#config}:`) && pattern.test(l)).length;
  }

  /** POSTs one export per entry of `users` (its user_id), `concurrency` at a time. */
  async post(users: readonly number[], concurrency: number): Promise<Posted[]> {
    const out: Posted[] = [];
    let next = 0;
    const worker = async () => {
      while (next < users.length) {
        const user = users[next++] as number;
        const key = `fleet-${this.#config}-${++this.#idem}`;
        const sentAt = Date.now();
        for (let attempt = 0; ; attempt++) {
          let status = 0;
          try {
            const res = await fetch(`${this.s.producerUrl}/exports`, {
              method: "POST",
              headers: {
                authorization: `Bearer ${this.s.settings.API_TOKEN}`,
                "content-type": "application/json",
                "idempotency-key": key,
              },
              body: JSON.stringify({
                project_id: user * 1000 + (out.length % 5) + 1,
                user_id: user,
                type: "overlay",
                input_video_key: "uploads/demo/sample.mp4",
                // Distinct params: identical exports would be reused instead of run.
                params: { highlight_regions: [{ start_time: 1, end_time: 2 }], n: key },
              }),
              signal: AbortSignal.timeout(60_000),
            });
            status = res.status;
            if (status === 202 || status === 200) {
              const { job } = (await res.json()) as { job: { id: string } };
              out.push({ id: job.id, user, sentAt, answeredAt: Date.now() });
              break;
            }
            await res.arrayBuffer();
          } catch {}
          if (attempt >= 10) throw new Error(`POST /exports answered ${status || "nothing"}`);
          await sleep(300);
        }
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    return out;
  }

  stats(): Promise<Stats> {
    return readJson<Stats>(`${this.s.producerUrl}/stats`, {
      headers: { authorization: `Bearer ${this.s.settings.ADMIN_TOKEN}` },
    });
  }

  /** RunPod's /health as the emulator answers it. */
  health(): Promise<{
    jobs: { inQueue: number; inProgress: number };
    workers: { idle: number; ready: number; running: number; initializing: number };
  }> {
    return readJson(`${this.s.runpodBaseUrl}/${ENDPOINT}/health`, {
      headers: { authorization: `Bearer ${this.s.settings.RUNPOD_API_KEY}` },
    });
  }

  async runs(): Promise<EmulatorRun[]> {
    const url = `${this.s.emulatorUrl}/__emulator/jobs?endpoint=${ENDPOINT}`;
    return (await readJson<{ jobs: EmulatorRun[] }>(url)).jobs;
  }

  async requests(): Promise<EmulatorRequest[]> {
    const url = `${this.s.emulatorUrl}/__emulator/requests?endpoint=${ENDPOINT}`;
    return (await readJson<{ requests: EmulatorRequest[] }>(url)).requests;
  }

  fleet(): Promise<FleetReport> {
    return readJson<FleetReport>(`${this.s.emulatorUrl}/__emulator/endpoints/${ENDPOINT}/fleet`);
  }

  /**
   * Waits until D1 has no job pending or processing and at least `finished` jobs complete or in
   * error, sampling GET /stats every second (the samples: the dispatcher's cap over time) and
   * calling the reconciler every 5 s as the cron would (wrangler dev runs no cron). `onTick` runs
   * on each sample (e.g. to post a late job).
   */
  async drain(
    finished: number,
    from: number,
    limitMs: number,
    onTick?: (stats: Stats) => Promise<void>,
  ): Promise<{ samples: CapSample[]; stats: Stats }> {
    const samples: CapSample[] = [];
    const deadline = Date.now() + limitMs;
    let cron = Date.now();
    let reported = Date.now();
    for (;;) {
      const stats = await this.stats();
      const d = stats.dispatch;
      samples.push({
        t: Date.now() - from,
        cap: d?.max_in_flight ?? -1,
        in_flight: d?.in_flight ?? -1,
        waiting: d?.waiting ?? -1,
        fleet_workers: d?.fleet ? d.fleet.ready + d.fleet.running + d.fleet.initializing : null,
        fleet_in_queue: d?.fleet?.in_queue ?? null,
        reason: d?.cap_reason ?? "",
      });
      await onTick?.(stats);
      const { pending, processing, complete, error } = stats.jobs;
      if (pending + processing === 0 && complete + error >= finished) return { samples, stats };
      if (Date.now() > deadline) {
        throw new Error(
          `not drained after ${limitMs / 1000} s: ${JSON.stringify(stats.jobs)}, dispatch ${JSON.stringify(d)}`,
        );
      }
      if (Date.now() - reported >= 10_000) {
        reported = Date.now();
        say(
          `  ${complete + error}/${finished} done, ${pending} pending, ${processing} processing; cap ${d?.max_in_flight} (${d?.cap_reason})`,
        );
      }
      if (Date.now() - cron >= 5_000) {
        cron = Date.now();
        await fetch(`${this.s.consumerUrl}/__scheduled`).catch(() => {});
      }
      await sleep(1000);
    }
  }
}

/** Cap samples in a compact form for the results: one row per sample, the reasons as they change. */
export function compactSamples(samples: readonly CapSample[]) {
  const reasons: { t: number; reason: string }[] = [];
  for (const s of samples) {
    if (reasons.at(-1)?.reason !== s.reason) reasons.push({ t: s.t, reason: s.reason });
  }
  return {
    columns: ["t_ms", "cap", "in_flight", "waiting", "fleet_workers", "fleet_in_queue"],
    rows: samples.map((s) => [
      s.t,
      s.cap,
      s.in_flight,
      s.waiting,
      s.fleet_workers,
      s.fleet_in_queue,
    ]),
    reasons,
  };
}

/** The successful webhook delivery that ended a run (ms), or NaN. */
export function webhookAt(run: EmulatorRun): number {
  const ok = run.webhookDeliveries.filter((d) => d.status === 200);
  return ok.length > 0 ? ms(ok[ok.length - 1]?.at) : Number.NaN;
}

/**
 * The time-weighted distribution of a timeline value over [from, to], counting only the time of
 * samples `where` holds: each sample holds until the next one. Answers the max, the quantile `q`
 * (time-weighted) and how long was counted.
 */
export function timeWeighted(
  timeline: readonly FleetSample[],
  from: number,
  to: number,
  value: (s: FleetSample) => number,
  q: number,
  where: (s: FleetSample) => boolean = () => true,
): { max: number; quantile: number; ms: number } {
  const spans: { v: number; d: number }[] = [];
  for (let i = 0; i < timeline.length; i++) {
    const s = timeline[i] as FleetSample;
    const end = Math.min(to, timeline[i + 1]?.at ?? to);
    const start = Math.max(from, s.at);
    if (end > start && where(s)) spans.push({ v: value(s), d: end - start });
  }
  const total = spans.reduce((sum, s) => sum + s.d, 0);
  if (total === 0) return { max: Number.NaN, quantile: Number.NaN, ms: 0 };
  spans.sort((a, b) => a.v - b.v);
  let acc = 0;
  let quantile = Number.NaN;
  for (const s of spans) {
    acc += s.d;
    if (acc >= q * total) {
      quantile = s.v;
      break;
    }
  }
  return { max: Math.max(...spans.map((s) => s.v)), quantile, ms: total };
}
