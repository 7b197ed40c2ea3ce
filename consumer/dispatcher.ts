// The dispatch gate of one RunPod endpoint, shared by every consumer invocation: a Durable Object
// (one per RUNPOD_ENDPOINT_ID) whose state is the gate's pace and breaker (shared/dispatch-gate.ts)
// in its own SQLite storage. A consumer asks it once per batch (`acquire`) and tells it once per
// batch what its submissions met (`report`); the producer's GET /stats reads `status`.
// Each method runs to completion before the next (the object's input gate), so two invocations
// can never be granted the same slot.
import { DurableObject } from "cloudflare:workers";
import {
  acquire,
  type GateConfig,
  type GateMode,
  type GateState,
  type Grant,
  initialGate,
  report,
  type SubmitOutcome,
} from "../shared/dispatch-gate.ts";

/** The longest a batch is asked to wait inside its invocation for a permit. */
export const MAX_WAIT_MS = 5_000;

export interface DispatchStatus {
  state: GateMode;
  reason: string | null;
  since: string;
  runs_last_10s: number;
}

const KEY = "gate";

export class Dispatcher extends DurableObject {
  #state: GateState | undefined;
  /** When permits were granted in the last 10 s (for /stats only; not kept across restarts). */
  #recent: number[] = [];

  async #load(): Promise<GateState> {
    this.#state ??= (await this.ctx.storage.get<GateState>(KEY)) ?? initialGate(Date.now());
    return this.#state;
  }

  async #save(state: GateState): Promise<void> {
    this.#state = state;
    await this.ctx.storage.put(KEY, state);
  }

  #runsLast10s(now: number): number {
    this.#recent = this.#recent.filter((at) => at > now - 10_000);
    return this.#recent.length;
  }

  async acquire(wanted: number, config: GateConfig): Promise<Grant> {
    const now = Date.now();
    const { state, grant } = acquire(await this.#load(), config, now, wanted, MAX_WAIT_MS);
    await this.#save(state);
    for (const delay of grant.delaysMs) this.#recent.push(now + delay);
    return grant;
  }

  async report(outcomes: SubmitOutcome[], probe: boolean, config: GateConfig): Promise<void> {
    if (outcomes.length === 0) return;
    await this.#save(report(await this.#load(), config, Date.now(), outcomes, probe));
  }

  async status(): Promise<DispatchStatus> {
    const state = await this.#load();
    const now = Date.now();
    const paused = state.mode === "paused" && now >= state.pausedUntil;
    return {
      // A pause that has run out is the next acquire's probe.
      state: paused ? "probing" : state.mode,
      reason: state.reason,
      since: new Date(paused ? state.pausedUntil : state.since).toISOString(),
      runs_last_10s: this.#runsLast10s(now),
    };
  }
}
