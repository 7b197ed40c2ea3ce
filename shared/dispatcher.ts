// The dispatcher of one RunPod endpoint, shared by every consumer invocation and the producer: a
// Durable Object (one per RUNPOD_ENDPOINT_ID) that decides which waiting job may be submitted and
// when. It holds, in its own SQLite storage:
// - the gate: the pace of `POST /run` and the circuit breaker (shared/dispatch-gate.ts);
// - the fair queue: the backlog by fairness key and the runs in flight, never more than
//   RUNPOD_MAX_IN_FLIGHT (shared/fair-queue.ts).
// A consumer batch offers its jobs and gets back the ones admitted now (`dispatch`), then reports
// what their submissions met (`report`). The state machine frees a job's slot when its run ends
// (`free`), which admits the next fairest job; jobs admitted without a consumer at hand (a slot
// freed by a webhook, a pause or the pace running out) are sent to the queue as messages, and an
// alarm wakes the object when a pause or the pace allows the next admission. Each method runs to
// completion before the next (the object's input gate), so two callers never share a slot.
import { DurableObject } from "cloudflare:workers";
import {
  acquire,
  type GateConfig,
  type GateMode,
  type GateState,
  report,
  restoreGate,
  type SubmitOutcome,
} from "./dispatch-gate.ts";
import { FairQueue, type OfferedJob } from "./fair-queue.ts";
import { log } from "./log.ts";
import type { JobMessage } from "./schemas.ts";
import type { DispatchConfig } from "./settings.ts";

/** The longest a batch is asked to wait inside its invocation for a permit. */
export const MAX_WAIT_MS = 5_000;

export type { DispatchConfig };

export interface DispatchStatus {
  state: GateMode;
  reason: string | null;
  since: string;
  runs_last_10s: number;
  in_flight: number;
  max_in_flight: number;
  waiting: number;
  waiting_keys: number;
}

/** What a consumer may do with the jobs it offered. */
export interface Admission {
  /** Jobs of the offer to claim and submit now, each after its delay (ms). */
  admitted: { id: string; delayMs: number }[];
  mode: GateMode;
  reason: string | null;
}

const GATE = "gate";
const CONFIG = "config";
const AUDIT_CURSOR = "held-audit-cursor";

/** The one binding the dispatcher uses: it sends admitted jobs to the queue itself. */
export interface DispatcherEnv {
  EXPORT_QUEUE: Queue<JobMessage>;
}

export class Dispatcher extends DurableObject<DispatcherEnv> {
  #gate: GateState | undefined;
  #queue: FairQueue;
  /** When permits were granted in the last 10 s (for /stats only; not kept across restarts). */
  #recent: number[] = [];

  constructor(ctx: DurableObjectState, env: DispatcherEnv) {
    super(ctx, env);
    this.#queue = new FairQueue(ctx.storage.sql);
  }

  async #loadGate(): Promise<GateState> {
    this.#gate ??= restoreGate(await this.ctx.storage.get<GateState>(GATE), Date.now());
    return this.#gate;
  }

  async #saveGate(state: GateState): Promise<void> {
    this.#gate = state;
    await this.ctx.storage.put(GATE, state);
  }

  /** The cap on runs in flight now. */
  #cap(config: DispatchConfig): number {
    // TODO(auto): the fleet model; until it lands, auto keeps the former fixed default.
    return config.maxInFlight === "auto" ? 20 : config.maxInFlight;
  }

  /**
   * Admits as many waiting jobs as free slots and the gate allow, fairest first. Returns the
   * admitted ids with their delays; sets an alarm when jobs still wait for the gate.
   */
  async #admit(config: DispatchConfig): Promise<{ ids: string[]; delays: number[] }> {
    await this.ctx.storage.put(CONFIG, config);
    const { waiting } = this.#queue.counts();
    const wanted = Math.min(this.#queue.freeSlots(this.#cap(config)), waiting);
    if (wanted === 0) return { ids: [], delays: [] };
    const now = Date.now();
    const { state, grant } = acquire(await this.#loadGate(), config, now, wanted, MAX_WAIT_MS);
    await this.#saveGate(state);
    const ids = this.#queue.admit(grant.delaysMs.length, now);
    for (const delay of grant.delaysMs) this.#recent.push(now + delay);
    if (ids.length < wanted) {
      // Jobs wait for the gate (paused, probing, or the pace): come back when it may let them.
      await this.ctx.storage.setAlarm(now + grant.retryInS * 1000);
    }
    return { ids, delays: grant.delaysMs.slice(0, ids.length) };
  }

  /** Sends admitted jobs that no consumer holds to the queue, each after its permit's delay. */
  async #send(ids: readonly string[], delays: readonly number[]): Promise<void> {
    if (ids.length === 0) return;
    try {
      await this.env.EXPORT_QUEUE.sendBatch(
        ids.map((id, i) => ({
          body: { job_id: id },
          delaySeconds: Math.ceil((delays[i] ?? 0) / 1000),
        })),
      );
    } catch (error) {
      // The jobs hold their slots until the reconciler heals them (no processing row after
      // HEAL_GRACE_MS); its held-jobs audit then re-enqueues them.
      log("warn", "dispatcher could not send admitted jobs", { jobs: ids, error: String(error) });
    }
  }

  /**
   * A consumer batch's jobs (pending in D1). Jobs admitted now or earlier are handed back to be
   * claimed; the others wait here, their messages can be acknowledged, and the dispatcher sends
   * them again when their turn comes.
   */
  async dispatch(offered: OfferedJob[], config: DispatchConfig): Promise<Admission> {
    this.#queue.offer(offered);
    const { ids, delays } = await this.#admit(config);
    const wanted = new Set(offered.map((job) => job.id));
    const admitted: Admission["admitted"] = [];
    const elsewhere: { id: string; delay: number }[] = [];
    ids.forEach((id, i) => {
      const delayMs = delays[i] ?? 0;
      if (wanted.has(id)) admitted.push({ id, delayMs });
      else elsewhere.push({ id, delay: delayMs });
    });
    // An offered job admitted earlier (its message is the dispatcher's own): claim it now.
    for (const job of offered) {
      if (!ids.includes(job.id) && this.#queue.inFlight(job.id)) {
        admitted.push({ id: job.id, delayMs: 0 });
      }
    }
    await this.#send(
      elsewhere.map((job) => job.id),
      elsewhere.map((job) => job.delay),
    );
    const gate = await this.#loadGate();
    return { admitted, mode: gate.mode, reason: gate.reason };
  }

  async report(outcomes: SubmitOutcome[], config: GateConfig): Promise<void> {
    if (outcomes.length === 0) return;
    const before = await this.#loadGate();
    const after = report(before, config, Date.now(), outcomes);
    await this.#saveGate(after);
    const stored = await this.ctx.storage.get<DispatchConfig>(CONFIG);
    if (before.mode !== "running" && after.mode === "running" && stored) {
      // The probes succeeded: admit what waited during the pause.
      const { ids, delays } = await this.#admit(stored);
      await this.#send(ids, delays);
    }
  }

  /** The state machine frees jobs' slots; the next fairest jobs are admitted and sent. */
  async free(jobIds: string[]): Promise<void> {
    const config = await this.ctx.storage.get<DispatchConfig>(CONFIG);
    if (this.#queue.free(jobIds) === 0 || !config) return;
    const { ids, delays } = await this.#admit(config);
    await this.#send(ids, delays);
  }

  /**
   * The reconciler's check: slots held by jobs D1 no longer has processing are freed (a lost
   * notification), then admission runs as after any free.
   */
  async heal(processing: string[], config: DispatchConfig, graceMs?: number): Promise<string[]> {
    const healed = this.#queue.heal(new Set(processing), Date.now(), graceMs);
    if (healed.length > 0) log("warn", "dispatcher healed lost slots", { jobs: healed });
    const { ids, delays } = await this.#admit(config);
    await this.#send(ids, delays);
    return healed;
  }

  /** Where the reconciler's sweep of held jobs resumes (a rowid of export_jobs; 0: the start). */
  async auditCursor(): Promise<number> {
    return (await this.ctx.storage.get<number>(AUDIT_CURSOR)) ?? 0;
  }

  async setAuditCursor(seq: number): Promise<void> {
    await this.ctx.storage.put(AUDIT_CURSOR, seq);
  }

  /** Which of these jobs the dispatcher knows (waiting or in flight): the reconciler's audit. */
  async known(jobIds: string[]): Promise<string[]> {
    return this.#queue.known(jobIds);
  }

  /** The slots' job ids, for the reconciler to compare with D1. */
  async inFlight(): Promise<string[]> {
    return this.#queue.inFlightIds();
  }

  /** A pause ran out or the pace allows more: admit and send. */
  override async alarm(): Promise<void> {
    const config = await this.ctx.storage.get<DispatchConfig>(CONFIG);
    if (!config) return;
    const { ids, delays } = await this.#admit(config);
    await this.#send(ids, delays);
  }

  async status(maxInFlight?: number): Promise<DispatchStatus> {
    const gate = await this.#loadGate();
    const now = Date.now();
    const pauseOver = gate.mode === "paused" && now >= gate.pausedUntil;
    this.#recent = this.#recent.filter((at) => at > now - 10_000);
    const config = await this.ctx.storage.get<DispatchConfig>(CONFIG);
    return {
      // A pause that has run out is the next admission's probe.
      state: pauseOver ? "probing" : gate.mode,
      reason: gate.reason,
      since: new Date(pauseOver ? gate.pausedUntil : gate.since).toISOString(),
      runs_last_10s: this.#recent.length,
      max_in_flight: maxInFlight ?? (config ? this.#cap(config) : 0),
      ...this.#queue.counts(),
    };
  }
}
