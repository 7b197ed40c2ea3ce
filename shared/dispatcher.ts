// The dispatcher of one RunPod endpoint, shared by every consumer invocation and the producer: a
// Durable Object (one per RUNPOD_ENDPOINT_ID) that decides which waiting job may be submitted and
// when. It holds, in its own SQLite storage:
// - the gate: the pace of `POST /run` and the circuit breaker (shared/dispatch-gate.ts);
// - the fair queue: the backlog by fairness key and the runs in flight, never more than the
//   cap (shared/fair-queue.ts);
// - the cap: RUNPOD_MAX_IN_FLIGHT when a number; with `auto`, the fleet model of
//   shared/capacity.ts, fed by RunPod's /health (polled by the alarm at most every FLEET_POLL_S,
//   and only while jobs wait or run), the finished runs' figures (`free`) and what submissions
//   met (`report`).
// A consumer batch offers its jobs and gets back the ones admitted now (`dispatch`), then reports
// what their submissions met (`report`). The state machine frees a job's slot when its run ends
// (`free`), which admits the next fairest job; jobs admitted without a consumer at hand (a slot
// freed by a webhook, a pause or the pace running out) go straight to the consumer's Refill
// entrypoint (else, or when it fails, to the queue as messages), and an alarm wakes the object
// when a pause or the pace allows the next admission, and to read the fleet. The producer holds a
// created job here at once (`offerNew`) and asks where pending jobs stand (`estimate`: queue
// positions and ETAs). Each method runs to completion before the next (the object's input gate),
// so two callers never share a slot.
import { DurableObject } from "cloudflare:workers";
import {
  type CapacityState,
  capOf,
  DEFAULT_REFILL_MS,
  expectedQueueMs,
  FAST_REFILL_MS,
  type Fleet,
  initialCapacity,
  noteAsking,
  observeFleet,
  observeOutcomes,
  observeRefill,
  observeRuns,
  type RunFigures,
  runLengthMs,
} from "./capacity.ts";
import {
  acquire,
  type GateConfig,
  type GateMode,
  type GateState,
  isDown,
  report,
  restoreGate,
  type SubmitOutcome,
} from "./dispatch-gate.ts";
import {
  FairQueue,
  LANES,
  type LaneCounts,
  laneKey,
  type OfferedJob,
  splitLaneKey,
} from "./fair-queue.ts";
import { log } from "./log.ts";
import {
  etaSeconds,
  type KeyCounts,
  type KeySnapshot,
  keySnapshot,
  type Lane,
  laneShare,
  positionOf,
  type QueueInfo,
} from "./queue-estimate.ts";
import { createRunpodClient } from "./runpod-client.ts";
import type { JobMessage } from "./schemas.ts";
import { type DispatchConfig, runpodSettings } from "./settings.ts";

/** The consumer's refill entrypoint (consumer/index.ts), as the dispatcher calls it. */
export interface RefillApi {
  /**
   * Claims and submits the admitted jobs to the endpoint; answers those to send through the
   * queue instead.
   */
  submit(
    endpointId: string,
    admitted: { id: string; delayMs: number }[],
    warm?: boolean,
  ): Promise<string[]>;
}

/** A job to place in the queue: its id, fairness key, type and lane (its priority). */
export interface QueuedJob {
  id: string;
  key: string;
  type: string;
  lane?: Lane | undefined;
}

/** The waiting keys' counts behind positions are read again after this long, at most. */
export const QUEUE_SNAPSHOT_MS = 3_000;

/** The longest a batch is asked to wait inside its invocation for a permit. */
export const MAX_WAIT_MS = 5_000;

export type { DispatchConfig };

/** The fleet as the dispatcher last read it from RunPod's /health (`at`: ISO 8601). */
export interface FleetStatus {
  ready: number;
  running: number;
  initializing: number;
  throttled: number;
  in_queue: number;
  at: string;
}

export interface DispatchStatus {
  state: GateMode;
  reason: string | null;
  since: string;
  runs_last_10s: number;
  in_flight: number;
  mode: "auto" | "fixed";
  max_in_flight: number;
  cap_reason: string;
  fleet: FleetStatus | null;
  waiting: number;
  waiting_keys: number;
  /** Jobs waiting per lane. */
  waiting_by_lane: LaneCounts;
}

/** What a consumer may do with the jobs it offered. */
export interface Admission {
  /** Jobs of the offer to claim and submit now, each after its delay (ms). */
  admitted: { id: string; delayMs: number }[];
  mode: GateMode;
  reason: string | null;
  /**
   * The endpoint has workers ready or running (its last /health): batch runs go with RunPod's
   * `lowPriority` then, and without it to an endpoint scaled to zero, so they still start.
   */
  warm: boolean;
  /** Jobs not taken: the endpoint is down and another takes over (failover). */
  refused?: string[];
}

const GATE = "gate";
const CONFIG = "config";
const CAPACITY = "capacity";
/** Where the reconciler's audit of held jobs stands against this dispatcher (an AuditMark). */
export const AUDIT_CURSOR = "held-audit-cursor";
/**
 * A mark older than this was not kept up by the audit (the cron runs every minute): the endpoint
 * id pointed at another dispatcher meanwhile, or the cron stopped. Jobs held then may have been
 * offered to another dispatcher, whatever their rowid, so the audit sweeps from the start again.
 */
export const AUDIT_STALE_MS = 180_000;

/**
 * The audit's mark: every held job of `export_jobs` up to rowid `after` was checked against this
 * dispatcher's storage, the last time at `at` (ms). Lost with the storage (a reset, another
 * endpoint id: a fresh object), which is what makes the audit sweep everything again.
 */
export interface AuditMark {
  after: number;
  at: number;
}

/**
 * What the dispatcher uses of its Worker's env: the queue, to send admitted jobs itself, and
 * RunPod's settings, to read the fleet (`GET /health`).
 */
export interface DispatcherEnv {
  EXPORT_QUEUE: Queue<JobMessage>;
  RUNPOD_BASE_URL?: string;
  RUNPOD_API_KEY?: string;
  RUNPOD_ENDPOINT_ID?: string;
  RUNPOD_TIMEOUT_MS?: string;
}

/** Waiting jobs handed back per step when the endpoint goes down (the alarm takes the rest). */
export const EVACUATE_PAGE = 500;

export class Dispatcher extends DurableObject<DispatcherEnv> {
  #gate: GateState | undefined;
  #capacity: CapacityState | undefined;
  /** The last /health asked (ms), answered or not: polls are at most FLEET_POLL_S apart. */
  #polledAt = 0;
  /** The waiting keys' counts for queue positions, and when they were read (in memory). */
  #positions: { at: number; lanes: Map<Lane, KeySnapshot>; waiting: number } | undefined;
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

  async #loadCapacity(): Promise<CapacityState> {
    this.#capacity ??=
      (await this.ctx.storage.get<CapacityState>(CAPACITY)) ??
      initialCapacity(this.#refill() ? FAST_REFILL_MS : DEFAULT_REFILL_MS);
    return this.#capacity;
  }

  async #saveCapacity(state: CapacityState): Promise<void> {
    if (state === this.#capacity) return;
    this.#capacity = state;
    await this.ctx.storage.put(CAPACITY, state);
  }

  /**
   * The cap on runs in flight now, and why; notes when runs began to queue for growth. Batch jobs
   * never grow it: only the other lanes' backlog asks RunPod for more workers.
   */
  async #cap(config: DispatchConfig): Promise<{ cap: number; reason: string }> {
    const capacity = await this.#loadCapacity();
    const now = Date.now();
    const lanes = this.#queue.laneCounts();
    const cap = capOf(capacity, config, lanes.interactive + lanes.standard, now);
    await this.#saveCapacity(noteAsking(capacity, cap.growth, now));
    return cap;
  }

  /** The endpoint this object dispatches to: its name (one object per endpoint id). */
  #endpointId(): string {
    return this.ctx.id.name ?? this.env.RUNPOD_ENDPOINT_ID ?? "";
  }

  /**
   * While jobs wait or run, the alarm comes back for the next /health (a pause's or the pace's
   * alarm, when sooner, stays). A fixed cap needs no fleet, but queue ETAs and /stats do.
   */
  async #schedulePoll(config: DispatchConfig): Promise<void> {
    const { waiting, in_flight } = this.#queue.counts();
    if (waiting + in_flight === 0) return;
    const at = Math.max(Date.now(), this.#polledAt + config.fleetPollS * 1000);
    const current = await this.ctx.storage.getAlarm();
    if (current === null || current > at) await this.ctx.storage.setAlarm(at);
  }

  /** Reads the fleet (`GET /health`) when FLEET_POLL_S has passed; a failure keeps the last one. */
  async #pollFleet(config: DispatchConfig): Promise<void> {
    const now = Date.now();
    if (now - this.#polledAt < config.fleetPollS * 1000) return;
    const { waiting, in_flight } = this.#queue.counts();
    if (waiting + in_flight === 0) return; // never while idle
    this.#polledAt = now;
    const settings = runpodSettings(this.env);
    const endpointId = this.#endpointId();
    if (!endpointId || !settings.apiKey) return;
    try {
      const health = await createRunpodClient({
        ...settings,
        endpointId,
        timeoutMs: Math.min(settings.timeoutMs, 5_000),
      }).health();
      const fleet: Fleet = { ...health, at: Date.now() };
      const before = await this.#cap(config);
      await this.#saveCapacity(observeFleet(await this.#loadCapacity(), fleet, before.cap));
    } catch (error) {
      log("warn", "fleet unknown: RunPod /health failed", { error: String(error) });
    }
  }

  /**
   * Admits as many waiting jobs as free slots and the gate allow, fairest first. Returns the
   * admitted ids with their delays; sets an alarm when jobs still wait for the gate.
   */
  async #admit(config: DispatchConfig): Promise<{ ids: string[]; delays: number[] }> {
    await this.ctx.storage.put(CONFIG, config);
    const { waiting } = this.#queue.counts();
    // Work exists: the alarm reads the fleet (at once the first time, then every FLEET_POLL_S).
    await this.#schedulePoll(config);
    const { cap } = await this.#cap(config);
    const wanted = Math.min(this.#queue.freeSlots(cap), waiting);
    if (wanted === 0) return { ids: [], delays: [] };
    const now = Date.now();
    const { state, grant } = acquire(await this.#loadGate(), config, now, wanted, MAX_WAIT_MS);
    await this.#saveGate(state);
    const ids = this.#queue.admit(grant.delaysMs.length, now, config.laneWeights);
    for (const delay of grant.delaysMs) this.#recent.push(now + delay);
    if (ids.length < wanted) {
      // Jobs wait for the gate (paused, probing, or the pace): come back when it may let them
      // (a sooner alarm, the fleet's next poll, stays: it admits too).
      const at = now + grant.retryInS * 1000;
      const current = await this.ctx.storage.getAlarm();
      if (current === null || current > at) await this.ctx.storage.setAlarm(at);
    }
    return { ids, delays: grant.delaysMs.slice(0, ids.length) };
  }

  /**
   * Sends admitted jobs that no consumer holds on their way: straight to the consumer's refill
   * entrypoint when the Worker has one (a run's end to the next /run in well under a second),
   * else — or for the jobs it could not take — to the queue, each after its permit's delay. The
   * call is not awaited here: a webhook's free() answers at once.
   */
  async #send(ids: readonly string[], delays: readonly number[]): Promise<void> {
    if (ids.length === 0) return;
    const refill = this.#refill();
    if (!refill) return this.#enqueue(ids, delays);
    const admitted = ids.map((id, i) => ({ id, delayMs: delays[i] ?? 0 }));
    const started = Date.now();
    const warm = await this.#warm();
    const work = refill.submit(this.#endpointId(), admitted, warm).then(
      async (left) => {
        const waited = Math.max(0, ...admitted.map((job) => job.delayMs));
        await this.#saveCapacity(
          observeRefill(await this.#loadCapacity(), Date.now() - started - waited),
        );
        const back = new Set(left);
        const again = admitted.filter((job) => back.has(job.id));
        await this.#enqueue(
          again.map((job) => job.id),
          again.map(() => 0),
        );
      },
      (error: unknown) => {
        log("warn", "refill failed; the queue takes the jobs", {
          jobs: ids,
          error: String(error),
        });
        return this.#enqueue(ids, delays);
      },
    );
    this.ctx.waitUntil(work);
  }

  /**
   * Whether the endpoint has workers ready or running, as a recent /health said: a reading older
   * than three polls (the dispatcher was idle) says nothing, so batch runs go without
   * `lowPriority` rather than to a fleet that may have scaled to zero.
   */
  async #warm(): Promise<boolean> {
    const fleet = (await this.#loadCapacity()).fleet;
    const config = await this.ctx.storage.get<DispatchConfig>(CONFIG);
    const fresh = fleet !== null && Date.now() - fleet.at <= 3 * (config?.fleetPollS ?? 5) * 1000;
    return fresh && fleet !== null && fleet.ready + fleet.running > 0;
  }

  /** The consumer's refill entrypoint, when the Worker hosting this object exports one. */
  #refill(): RefillApi | undefined {
    return (this.ctx.exports as { Refill?: RefillApi } | undefined)?.Refill;
  }

  /** Sends admitted jobs to the queue, each after its permit's delay. */
  async #enqueue(ids: readonly string[], delays: readonly number[]): Promise<void> {
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
      // HEAL_GRACE_MS) and re-enqueues them.
      log("warn", "dispatcher could not send admitted jobs", { jobs: ids, error: String(error) });
    }
  }

  /**
   * A consumer batch's jobs (pending in D1). Jobs admitted now or earlier are handed back to be
   * claimed; the others wait here, their messages can be acknowledged, and the dispatcher sends
   * them again when their turn comes.
   */
  async dispatch(input: OfferedJob[], config: DispatchConfig): Promise<Admission> {
    // Down, with another endpoint to take over: only the jobs it would send as probes are taken;
    // the others are refused, and their consumer sends them on to the next endpoint.
    // A job told to stay (every endpoint of its type is down), or of a type no other endpoint
    // takes, is taken all the same: it waits here.
    await this.ctx.storage.put(CONFIG, config);
    let offered = input;
    const refused: string[] = [];
    if (isDown(await this.#loadGate()) && (await this.#hasFallback())) {
      const { probes } = await this.route();
      const known = new Set(this.#queue.known(input.map((job) => job.id)));
      let room = probes;
      offered = [];
      for (const job of input) {
        if (known.has(job.id) || job.stay || !(await this.#hasFallback(job.type))) {
          offered.push(job);
          continue;
        }
        if (room > 0) {
          room -= 1;
          offered.push(job);
          continue;
        }
        refused.push(job.id);
      }
    }
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
    const now = Date.now();
    for (const job of offered) {
      if (!ids.includes(job.id) && this.#queue.handBack(job.id, now)) {
        admitted.push({ id: job.id, delayMs: 0 });
      }
    }
    await this.#send(
      elsewhere.map((job) => job.id),
      elsewhere.map((job) => job.delay),
    );
    const gate = await this.#loadGate();
    return { admitted, mode: gate.mode, reason: gate.reason, warm: await this.#warm(), refused };
  }

  /**
   * Whether the endpoint is down (its gate paused or probing) and, while it is, how many jobs it
   * would send now as the breaker's probes beyond those it holds (its pause is over): the
   * consumers' failover (consumer/process-jobs.ts routeJobs) sends it that many, so it can come
   * back, and the others to the next endpoint.
   */
  async route(): Promise<{ down: boolean; probes: number }> {
    const gate = await this.#loadGate();
    if (!isDown(gate)) return { down: false, probes: 0 };
    const config = await this.ctx.storage.get<DispatchConfig>(CONFIG);
    const probes = Math.max(1, config?.breakerProbes ?? 1);
    const now = Date.now();
    // As the gate grants them (dispatch-gate.ts acquire): after a pause, all of them; while
    // probing, those not granted yet — and, once the probes granted went unreported past
    // PROBE_TIMEOUT_MS (a consumer that died, a claim that lost its job), those again.
    const open =
      gate.mode === "paused"
        ? now >= gate.pausedUntil
          ? probes
          : 0
        : gate.probes >= probes && now >= gate.probeUntil
          ? probes - gate.probed.length
          : probes - gate.probes;
    return { down: true, probes: Math.max(0, open - this.#queue.counts().waiting) };
  }

  /**
   * Whether another endpoint takes over this one's jobs of `type` (any type when not said):
   * RUNPOD_ENDPOINTS lists one after it. Only then are jobs refused or handed back while down.
   */
  async #hasFallback(type?: string): Promise<boolean> {
    const routes = (await this.ctx.storage.get<DispatchConfig>(CONFIG))?.routes;
    if (!routes) return false;
    const self = this.#endpointId();
    const lists: readonly (readonly string[])[] =
      type === undefined
        ? Object.values(routes)
        : [(routes as Record<string, readonly string[]>)[type] ?? []];
    return lists.some((list) => {
      const at = list.indexOf(self);
      return at >= 0 && at < list.length - 1;
    });
  }

  /**
   * The endpoint is down: its waiting jobs go back to the queue, a page at a time (the alarm
   * takes the rest), and their batches route them to the next endpoint of their type (a job of a
   * type no other endpoint takes comes back, told to stay). Taken out of the backlog before their
   * messages go, so none is admitted here and there; a message that is lost leaves the job held
   * in D1 for this dispatcher: the audit mark is dropped, so the reconciler's next audit sweeps
   * every held job, finds it unknown here and re-enqueues it.
   */
  async #evacuate(): Promise<void> {
    if (!isDown(await this.#loadGate()) || !(await this.#hasFallback())) return;
    const ids = this.#queue.waitingIds(EVACUATE_PAGE);
    if (ids.length === 0) return;
    await this.ctx.storage.delete(AUDIT_CURSOR);
    const { unwaited } = this.#queue.free(ids);
    log("warn", "endpoint down: its waiting jobs go to the next endpoint", {
      endpoint: this.#endpointId(),
      jobs: unwaited.length,
    });
    await this.#enqueue(
      unwaited,
      unwaited.map(() => 0),
    );
    if (this.#queue.counts().waiting > 0) {
      const current = await this.ctx.storage.getAlarm();
      if (current === null || current > Date.now()) await this.ctx.storage.setAlarm(Date.now());
    }
  }

  async report(outcomes: SubmitOutcome[], config: GateConfig): Promise<void> {
    if (outcomes.length === 0) return;
    const stored = await this.ctx.storage.get<DispatchConfig>(CONFIG);
    if (stored?.maxInFlight === "auto") {
      const { cap } = await this.#cap(stored);
      await this.#saveCapacity(
        observeOutcomes(await this.#loadCapacity(), outcomes, Date.now(), cap),
      );
    }
    const before = await this.#loadGate();
    const after = report(before, config, Date.now(), outcomes);
    await this.#saveGate(after);
    // Down now: failover takes what waits here to the next endpoint.
    if (!isDown(before) && isDown(after)) await this.#evacuate();
    if (before.mode !== "running" && after.mode === "running" && stored) {
      // The probes succeeded: admit what waited during the pause.
      const { ids, delays } = await this.#admit(stored);
      await this.#send(ids, delays);
    }
  }

  /**
   * The state machine frees jobs' slots; the next fairest jobs are admitted and sent. `runs`: the
   * figures of the runs that ended (RunPod's delayTime and executionTime), learned by the cap.
   */
  async free(jobIds: string[], runs: RunFigures[] = []): Promise<void> {
    if (runs.length > 0) await this.#saveCapacity(observeRuns(await this.#loadCapacity(), runs));
    const config = await this.ctx.storage.get<DispatchConfig>(CONFIG);
    const { freed, unwaited } = this.#queue.free(jobIds);
    // A waiting job let go: the state machine frees it once the job left `pending` (cancelled,
    // expired), and its message then finds nothing to do. Should the job be pending again and
    // held in D1 (a free that arrived after an operator's retry and the new offer), this message
    // makes its batch offer it again: the reconciler's audit reads only the jobs held since its
    // last pass, so nothing else would find it. One message per waiting job let go.
    if (unwaited.length > 0) {
      this.ctx.waitUntil(
        this.#enqueue(
          unwaited,
          unwaited.map(() => 0),
        ),
      );
    }
    if (freed === 0 || !config) return;
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

  /**
   * Where the reconciler's audit of held jobs resumes: a rowid of export_jobs up to which every
   * held job was checked against this storage; 0 (sweep from the start) when this storage was
   * never audited (a new object: another endpoint id, a reset) or its mark is stale. (A plain
   * number is the mark of a sweep that restarted every time it finished: swept once more.)
   */
  async auditCursor(): Promise<number> {
    const mark = await this.ctx.storage.get<AuditMark | number>(AUDIT_CURSOR);
    if (typeof mark !== "object" || Date.now() - mark.at > AUDIT_STALE_MS) return 0;
    return mark.after;
  }

  async setAuditCursor(seq: number): Promise<void> {
    await this.ctx.storage.put(AUDIT_CURSOR, { after: seq, at: Date.now() } satisfies AuditMark);
  }

  /** Which of these jobs the dispatcher knows (waiting or in flight): the reconciler's audit. */
  async known(jobIds: string[]): Promise<string[]> {
    return this.#queue.known(jobIds);
  }

  /** The slots' job ids, for the reconciler to compare with D1. */
  async inFlight(): Promise<string[]> {
    return this.#queue.inFlightIds();
  }

  /**
   * A pause ran out, the pace allows more, or the fleet is to be read again: admit and send; in
   * `auto`, come back for the next /health while jobs wait or run.
   */
  override async alarm(): Promise<void> {
    await this.#evacuate();
    const config = await this.ctx.storage.get<DispatchConfig>(CONFIG);
    if (!config) return;
    await this.#pollFleet(config);
    const { ids, delays } = await this.#admit(config);
    await this.#send(ids, delays);
    await this.#schedulePoll(config);
  }

  /**
   * Queue positions and ETAs of pending jobs, given today's backlog (shared/queue-estimate.ts):
   * from the waiting keys' counts, read at most every QUEUE_SNAPSHOT_MS, and two lookups a job.
   * A job the dispatcher does not hold yet (its message on the way, a retry delay) is placed last
   * in its key; one in flight is next.
   */
  async estimate(jobs: QueuedJob[]): Promise<{ id: string; queue: QueueInfo }[]> {
    const now = Date.now();
    const { waiting } = this.#queue.counts();
    const snapshot = this.#positions;
    // Read again when old, or when the backlog grew or shrank by a tenth (a burst just offered).
    if (
      !snapshot ||
      now - snapshot.at >= QUEUE_SNAPSHOT_MS ||
      Math.abs(waiting - snapshot.waiting) > Math.max(5, snapshot.waiting / 10)
    ) {
      const byLane = new Map<Lane, Map<string, KeyCounts>>(LANES.map((lane) => [lane, new Map()]));
      for (const [name, counts] of this.#queue.waitingKeys()) {
        byLane.get(splitLaneKey(name).lane)?.set(name, counts);
      }
      this.#positions = {
        at: now,
        waiting,
        lanes: new Map(LANES.map((lane) => [lane, keySnapshot(byLane.get(lane) ?? new Map())])),
      };
    }
    const positions = this.#positions;
    const at = positions?.at ?? now;
    const empty = keySnapshot(new Map());
    const laneWaiting = this.#queue.laneCounts();
    const capacity = await this.#loadCapacity();
    const config = await this.ctx.storage.get<DispatchConfig>(CONFIG);
    const cap = config ? (await this.#cap(config)).cap : 1;
    const fleet = capacity.fleet;
    const working = fleet ? fleet.ready + fleet.running || fleet.initializing : cap;
    const inputs = {
      queuedAtRunpod: fleet?.inQueue ?? 0,
      servers: Math.max(1, Math.min(cap, working)),
      runMs: runLengthMs(capacity),
      refillMs: capacity.refillMs,
    };
    const places = this.#queue.places(jobs.map((job) => job.id));
    return jobs.map((job) => {
      const place = places.get(job.id);
      let lane: Lane = job.lane ?? "standard";
      let position = 0;
      if (place?.kind === "waiting") {
        lane = place.lane;
        const keys = positions?.lanes.get(lane) ?? empty;
        position = positionOf(keys, place.key, place.counts, place.rank);
      } else if (!place) {
        const key = laneKey(lane, job.key);
        const own = this.#queue.keyCounts(key);
        position = positionOf(positions?.lanes.get(lane) ?? empty, key, own, own?.waiting ?? 0);
      }
      // The other lanes' jobs that start before it: their weighted share of the slots until it.
      if (place?.kind !== "in_flight") {
        position = laneShare(position, lane, laneWaiting, config?.laneWeights);
      }
      const queue: QueueInfo = {
        position,
        eta_s: etaSeconds(position, inputs),
        lane,
        at: new Date(at).toISOString(),
      };
      return { id: job.id, queue };
    });
  }

  /**
   * A job just created: it waits here from now on (its queue message, when it comes, finds it
   * known), so its position counts it, and so do the positions of the jobs after it. Admission is
   * unchanged: a consumer batch or a freed slot admits it in its turn.
   */
  async offerNew(
    jobs: (QueuedJob & { createdAt: string })[],
  ): Promise<{ id: string; queue: QueueInfo }[] | null> {
    // Down, with another endpoint to take over their types, and no probe wanted (its pause is
    // not over): not held here (null); the producer offers the jobs to the next endpoint.
    if (isDown(await this.#loadGate()) && (await this.route()).probes < jobs.length) {
      let all = jobs.length > 0;
      for (const job of jobs) all &&= await this.#hasFallback(job.type);
      if (all) return null;
    }
    this.#queue.offer(jobs.map(({ id, key, createdAt, lane }) => ({ id, key, createdAt, lane })));
    return this.estimate(jobs);
  }

  /**
   * How much longer than CLAIM_TIMEOUT_S a submission whose /run answer was lost may wait before
   * its run counts as lost (ms): the time a run submitted now may queue at RunPod, from the fleet.
   */
  async claimStretchMs(): Promise<number> {
    return expectedQueueMs(await this.#loadCapacity());
  }

  async status(): Promise<DispatchStatus> {
    const gate = await this.#loadGate();
    const now = Date.now();
    const pauseOver = gate.mode === "paused" && now >= gate.pausedUntil;
    this.#recent = this.#recent.filter((at) => at > now - 10_000);
    const config = await this.ctx.storage.get<DispatchConfig>(CONFIG);
    const cap = config ? await this.#cap(config) : { cap: 0, reason: "no job offered yet" };
    const fleet = (await this.#loadCapacity()).fleet;
    return {
      // A pause that has run out is the next admission's probe.
      state: pauseOver ? "probing" : gate.mode,
      reason: gate.reason,
      since: new Date(pauseOver ? gate.pausedUntil : gate.since).toISOString(),
      runs_last_10s: this.#recent.length,
      mode: config?.maxInFlight === "auto" ? "auto" : config ? "fixed" : "auto",
      max_in_flight: cap.cap,
      cap_reason: cap.reason,
      fleet: fleet && {
        ready: fleet.ready,
        running: fleet.running,
        initializing: fleet.initializing,
        throttled: fleet.throttled,
        in_queue: fleet.inQueue,
        at: new Date(fleet.at).toISOString(),
      },
      ...this.#queue.counts(),
      waiting_by_lane: this.#queue.laneCounts(),
    };
  }
}
