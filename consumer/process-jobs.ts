// The consumer's domain logic, apart from the queue() wiring: ask the dispatch gate once for the
// batch, claim the jobs it lets through, submit each to RunPod with bounded concurrency at the
// gate's pace, then record the run, release the job or apply the seed's CASE retry — and tell the
// gate once what the batch met.
//
// Safe to run twice: the claim is `status = 'pending'`-guarded, so a second delivery of a message
// (or the same message in two concurrent batches) claims nothing and is acked without a RunPod
// call; every later step is guarded by the attempt, so a late step cannot undo a newer one.
// Waiting (a held-back job, a release, a retry delay) is a fresh delayed message, never
// `message.retry()`, which would count toward max_retries and end in the dead-letter queue.

import type { RunFigures } from "../shared/capacity.ts";
import { forEachBounded } from "../shared/concurrency.ts";
import { type GateConfig, markOf, type SubmitOutcome, trips } from "../shared/dispatch-gate.ts";
import { type Admission, type DispatchConfig, MAX_WAIT_MS } from "../shared/dispatcher.ts";
import type { ConsumerEnv } from "../shared/env.ts";
import { fairKeyOf, type OfferedJob } from "../shared/fair-queue.ts";
import {
  claimJobs,
  failRun,
  freeDurably,
  holdJobs,
  type JobDeps,
  type RunpodDeps,
  recordRun,
  refollowJobs,
  releaseJob,
  requeue,
  reuseOutput,
} from "../shared/job-state.ts";
import { livePublisher } from "../shared/live-publisher.ts";
import { log } from "../shared/log.ts";
import { notifierOf } from "../shared/notify.ts";
import { createRunpodClient, type RunpodClient, RunpodError } from "../shared/runpod-client.ts";
import { jobMessage } from "../shared/schemas.ts";
import { allEndpoints, type ConsumerSettings, consumerSettings } from "../shared/settings.ts";
import { type BatchJob, batchJobs } from "../shared/sql/jobs/reads.ts";
import type { JobRow } from "../shared/sql/jobs/row.ts";
import { buildRunRequest } from "./run-request.ts";

/** The dispatcher as the consumer sees it (shared/dispatcher.ts behind a stub). */
export interface DispatcherApi {
  dispatch(offered: OfferedJob[], config: DispatchConfig): Promise<Admission>;
  report(outcomes: SubmitOutcome[], config: GateConfig): Promise<void>;
  free(jobIds: string[], runs?: RunFigures[]): Promise<void>;
  claimStretchMs(): Promise<number>;
  heal(processing: string[], config: DispatchConfig, graceMs?: number): Promise<string[]>;
  inFlight(): Promise<string[]>;
  known(jobIds: string[]): Promise<string[]>;
  auditCursor(): Promise<number>;
  setAuditCursor(seq: number): Promise<void>;
  route(): Promise<RouteState>;
}

export interface ConsumerDeps extends JobDeps, RunpodDeps {
  settings: ConsumerSettings;
  /** The endpoint these deps submit to (RUNPOD_ENDPOINT_ID unless a route chose another). */
  endpointId: string;
  /** That endpoint's dispatcher. */
  dispatcher: DispatcherApi;
  /** Any endpoint's dispatcher (null: RUNPOD_ENDPOINT_ID's). */
  dispatcherOf(endpointId: string | null): DispatcherApi;
  /** Every endpoint RUNPOD_ENDPOINTS names, RUNPOD_ENDPOINT_ID first. */
  endpoints: string[];
}

/** The same deps, submitting to `endpointId`. */
export function forEndpoint(deps: ConsumerDeps, endpointId: string): ConsumerDeps {
  if (endpointId === deps.endpointId) return deps;
  return { ...deps, endpointId, dispatcher: deps.dispatcherOf(endpointId) };
}

/** A consumer that cannot run: the batch is retried later, no job is touched. */
export class NotConfiguredError extends Error {}

/** `ctx`: the invocation's, when there is one; live publication then finishes after the work. */
export function consumerDeps(env: ConsumerEnv, ctx?: ExecutionContext): ConsumerDeps {
  const settings = consumerSettings(env);
  const missing = [
    ["RUNPOD_ENDPOINT_ID", settings.runpod.endpointId],
    ["RUNPOD_API_KEY", settings.runpod.apiKey],
    ["PUBLIC_URL", settings.publicUrl],
    ["WEBHOOK_SECRET", settings.webhookSecret],
  ].filter(([, value]) => !value);
  if (missing.length > 0) {
    throw new NotConfiguredError(
      `consumer is not configured: ${missing.map(([name]) => name).join(", ")}`,
    );
  }
  const defaultId = settings.runpod.endpointId;
  const dispatcherOf = (endpointId: string | null) =>
    env.DISPATCHER.get(env.DISPATCHER.idFromName(endpointId ?? defaultId));
  const clients = new Map<string, RunpodClient>();
  const runpodOf = (endpointId: string | null) => {
    const id = endpointId ?? defaultId;
    let client = clients.get(id);
    if (!client) {
      client = createRunpodClient({ ...settings.runpod, endpointId: id });
      clients.set(id, client);
    }
    return client;
  };
  return {
    db: env.DB,
    queue: env.EXPORT_QUEUE,
    retry: settings.retry,
    pollAfterS: settings.pollAfterS,
    runpodOf,
    settings,
    endpointId: defaultId,
    dispatcher: dispatcherOf(defaultId),
    dispatcherOf,
    endpoints: allEndpoints(settings.routes, defaultId),
    slots: dispatcherOf,
    videos: env.VIDEOS,
    live: livePublisher(env),
    defer: ctx ? (work) => ctx.waitUntil(work) : undefined,
    notify: notifierOf(env),
  };
}

/**
 * Processes one batch of `export-jobs`. Returns the messages that did not parse, not yet acked:
 * the caller records them as dead letters, then acks them. Throws only when nothing could be
 * done (the gate or D1 unreachable before any claim): the caller retries the whole batch later.
 */
export async function processJobBatch(
  deps: ConsumerDeps,
  messages: readonly Message<unknown>[],
): Promise<Message<unknown>[]> {
  const poison: Message<unknown>[] = [];
  const byJob = new Map<string, Message<unknown>[]>();
  for (const message of messages) {
    const parsed = jobMessage.safeParse(message.body);
    if (!parsed.success) {
      poison.push(message);
      continue;
    }
    const list = byJob.get(parsed.data.job_id) ?? [];
    list.push(message);
    byJob.set(parsed.data.job_id, list);
  }
  if (byJob.size === 0) return poison;

  const gateConfig = deps.settings.gate;
  // Offer the jobs still pending to the dispatcher; it admits those whose turn it is (free slots,
  // fairness, the gate) and keeps the others waiting, sending them when their turn comes.
  const jobs = await batchJobs(deps.db, [...byJob.keys()]);
  // GPU seconds never wasted: a job identical to a complete one reuses its output, a follower
  // whose leader is on its way waits for it; neither is offered to the dispatcher.
  const settled = await settleIdentical(deps, jobs);
  for (const id of settled) for (const message of byJob.get(id) ?? []) message.ack();
  const pending = jobs.filter((job) => job.status === "pending" && !settled.has(job.id));
  // A finished job's message is a duplicate, or the retry of a slot whose free failed
  // (job-state's freeSlots): freeing is idempotent, so it is freed here either way.
  await freeDurably(
    deps,
    jobs.filter((job) => job.status === "complete" || job.status === "error"),
  );
  // Each pending job goes to the dispatcher of its endpoint (RUNPOD_ENDPOINTS: the first of its
  // type's list that is not down); it admits those whose turn it is (free slots, lanes, fairness,
  // the gate) and keeps the others waiting, sending them when their turn comes.
  const routed = await routeJobs(deps, pending);
  const admissions: { endpointId: string; admission: Admission }[] = [];
  for (const [endpointId, group] of routed) {
    const admission = await deps.dispatcherOf(endpointId).dispatch(
      group.map(({ job, stay }) => ({
        id: job.id,
        key: fairKeyOf(job),
        createdAt: job.created_at,
        lane: job.priority,
        type: job.type,
        stay,
      })),
      gateConfig,
    );
    // A dispatcher that answers paused is down: this isolate's next routes know it at once.
    if (admission.mode !== "running") forgetRoute(endpointId);
    admissions.push({ endpointId, admission });
  }
  const delayOf = new Map(
    admissions.flatMap(({ admission }) =>
      admission.admitted.map((entry) => [entry.id, entry.delayMs] as const),
    ),
  );
  // Every message but the one of each admitted job is done with: a duplicate (not pending, or a
  // second message for the same job), or a job now waiting in a dispatcher.
  for (const [id, list] of byJob) {
    const [first, ...rest] = list;
    for (const message of rest) message.ack();
    if (!delayOf.has(id)) first?.ack();
  }
  const refused = admissions.flatMap(({ admission }) => admission.refused ?? []);
  if (refused.length > 0) {
    // Refused by an endpoint that went down meanwhile: their next batch routes them on.
    log("info", "jobs refused by a down endpoint; routed again", { jobs: refused.length });
    await requeue(deps.queue, refused, 0);
  }
  const refusedIds = new Set(refused);
  for (const { endpointId, admission } of admissions) {
    const group = (routed.get(endpointId) ?? []).map(({ job }) => job);
    const waiting = group
      .filter((job) => !delayOf.has(job.id) && !refusedIds.has(job.id))
      .map((job) => job.id);
    if (waiting.length === 0) continue;
    log("info", "jobs wait for dispatch", {
      waiting: waiting.length,
      mode: admission.mode,
      endpoint: endpointId,
    });
    // Its dispatcher holds them now (D1 names it); a hold that fails leaves them to the
    // reconciler's lost-message lease, which re-enqueues them and their next batch holds them.
    await holdJobs(deps, waiting, endpointId).catch((error: unknown) => {
      log("warn", "holding waiting jobs failed", { jobs: waiting, error: String(error) });
    });
  }
  const settlement: Settlement = {
    done: (id) => byJob.get(id)?.[0]?.ack(),
    retry: (id, delaySeconds) => byJob.get(id)?.[0]?.retry({ delaySeconds }),
  };
  for (const { endpointId, admission } of admissions) {
    const mine = new Map(admission.admitted.map((entry) => [entry.id, entry.delayMs]));
    if (mine.size === 0) continue;
    await submitAdmitted(forEndpoint(deps, endpointId), mine, settlement, admission.warm);
  }
  return poison;
}

/** What a dispatcher tells a router: down (its gate is not running), and probes it could use. */
export interface RouteState {
  down: boolean;
  /** While down: jobs it would send as the breaker's probes now (its own waiting ones aside). */
  probes: number;
}

/** An endpoint found up is not asked again for this long per Worker isolate. */
export const ROUTE_STATE_MS = 2_000;
const routeStates = new Map<string, { at: number; state: RouteState }>();

/** An endpoint's route state is read again next time (its gate changed, or may have). */
function forgetRoute(endpointId: string): void {
  routeStates.delete(endpointId);
}

async function routeState(deps: ConsumerDeps, endpointId: string): Promise<RouteState> {
  const cached = routeStates.get(endpointId);
  if (cached && Date.now() - cached.at < ROUTE_STATE_MS) return cached.state;
  const state = await deps
    .dispatcherOf(endpointId)
    .route()
    .catch((error: unknown): RouteState => {
      log("warn", "dispatcher did not say whether it is down", {
        endpoint: endpointId,
        error: String(error),
      });
      return { down: false, probes: 0 };
    });
  // Only "up" is kept: while an endpoint is down every batch asks it (its pause may be over).
  if (!state.down) routeStates.set(endpointId, { at: Date.now(), state });
  return state;
}

/**
 * Failover: each job to the first endpoint of its type's list (RUNPOD_ENDPOINTS) whose dispatcher
 * is not down — the one already holding it first (D1 names it: a job never claimed, or held
 * while it waits), so that a job never waits in two — and a few jobs to a down endpoint whose
 * pause is over, as its breaker's probes (the way it comes back). With every endpoint of its list
 * down, a job waits at the first, told to stay (never refused). With one endpoint for every type
 * (no RUNPOD_ENDPOINTS), no dispatcher is asked anything more.
 */
async function routeJobs(
  deps: ConsumerDeps,
  jobs: readonly BatchJob[],
): Promise<Map<string, { job: BatchJob; stay: boolean }[]>> {
  const routed = new Map<string, { job: BatchJob; stay: boolean }[]>();
  const add = (endpointId: string, job: BatchJob, stay = false) => {
    const list = routed.get(endpointId) ?? [];
    list.push({ job, stay });
    routed.set(endpointId, list);
  };
  if (deps.endpoints.length <= 1) {
    for (const job of jobs) add(deps.endpointId, job);
    return routed;
  }
  const states = new Map<string, RouteState>();
  const stateOf = async (endpointId: string) => {
    let state = states.get(endpointId);
    if (!state) {
      state = { ...(await routeState(deps, endpointId)) };
      states.set(endpointId, state);
    }
    return state;
  };
  // Its holder: the endpoint D1 names, unless that is only its last attempt's (re-pended).
  const holderOf = (job: BatchJob) =>
    job.runpod_endpoint_id !== null &&
    (job.attempt === 0 || job.due_at === null) &&
    deps.settings.routes[job.type].includes(job.runpod_endpoint_id)
      ? job.runpod_endpoint_id
      : null;
  // A down holder keeps the jobs that still wait there (its probes); those it handed back are
  // routed on. One question per down holder.
  const downHolders = new Map<string, string[]>();
  for (const job of jobs) {
    const holder = holderOf(job);
    if (holder === null || !(await stateOf(holder)).down) continue;
    downHolders.set(holder, [...(downHolders.get(holder) ?? []), job.id]);
  }
  const heldThere = new Set<string>();
  for (const [holder, ids] of downHolders) {
    const known = await deps
      .dispatcherOf(holder)
      .known(ids)
      .catch(() => []);
    for (const id of known) heldThere.add(id);
  }
  for (const job of jobs) {
    const list = deps.settings.routes[job.type];
    const holder = holderOf(job);
    if (holder !== null && heldThere.has(job.id)) {
      add(holder, job);
      continue;
    }
    const order = holder !== null ? [holder, ...list] : list;
    let chosen: string | null = null;
    for (const endpointId of order) {
      const state = await stateOf(endpointId);
      if (!state.down) {
        chosen = endpointId;
        break;
      }
      if (state.probes > 0) {
        state.probes -= 1;
        chosen = endpointId;
        break;
      }
    }
    if (chosen === null) add(list[0] as string, job, true);
    else add(chosen, job);
  }
  return routed;
}

/** A leader on its way: its followers wait for it. */
const ON_ITS_WAY = new Set<string | null>(["pending", "processing"]);

/** The identical complete job a batch read found for a pending job, if any. */
function sourceOf(job: BatchJob): { id: string; outputVideoKey: string } | null {
  if (job.source === null) return null;
  const [id, outputVideoKey] = JSON.parse(job.source) as [unknown, unknown];
  return typeof id === "string" && typeof outputVideoKey === "string"
    ? { id, outputVideoKey }
    : null;
}

/** How long until a job whose reuse copy failed (R2 did not answer) is looked at again. */
export const REUSE_RETRY_S = 30;

/**
 * Reuse and single flight for a batch's pending jobs (shared/job-state.ts): a job with an
 * identical complete job gets a copy of its output and completes; a follower whose leader is on
 * its way is held (due_at cleared: the reconciler's audit checks it against its leader); a
 * follower whose leader ended without an output to reuse (failed for good, cancelled, superseded,
 * gone) follows another identical job on its way, or becomes an ordinary job. The jobs reused,
 * held or put back on the queue, whose messages are done with: the others go to the dispatcher.
 * A source whose output is gone leaves the job to run; a copy that fails (R2 did not answer)
 * sends the job's message again after REUSE_RETRY_S — a job with an identical output is never
 * rendered because R2 hiccupped.
 */
async function settleIdentical(
  deps: ConsumerDeps,
  jobs: readonly BatchJob[],
): Promise<Set<string>> {
  const settled = new Set<string>();
  const waiting: string[] = [];
  const released: string[] = [];
  const later: string[] = [];
  const reusing: { job: BatchJob; source: { id: string; outputVideoKey: string } }[] = [];
  for (const job of jobs) {
    if (job.status !== "pending") continue;
    const source = sourceOf(job);
    if (source) reusing.push({ job, source });
    else if (job.follows !== null && ON_ITS_WAY.has(job.leader)) waiting.push(job.id);
    else if (job.follows !== null) released.push(job.id);
  }
  await forEachBounded(
    reusing,
    deps.settings.submitConcurrency,
    async ({ job, source }) => {
      const reused = await reuseOutput(deps, job, source);
      if (reused === "missing") {
        log("warn", "identical job's output is gone; the job runs", {
          job_id: job.id,
          source: source.id,
        });
        if (job.follows !== null) released.push(job.id);
        return;
      }
      // Reused, or no longer pending (another delivery took it): either way done here.
      settled.add(job.id);
      if (reused) log("info", "output reused", { job_id: job.id, reused_from: source.id });
    },
    (entry, error) => {
      log("warn", "reuse failed; tried again later", {
        job_id: entry.job.id,
        error: String(error),
      });
      later.push(entry.job.id);
    },
  );
  if (later.length > 0) {
    for (const id of later) settled.add(id);
    await requeue(deps.queue, later, REUSE_RETRY_S);
  }
  if (released.length > 0) {
    const rows = await refollowJobs(deps, released).catch((error: unknown) => {
      // Their messages go the ordinary way; the next batch releases them again.
      log("warn", "releasing followers failed", { jobs: released, error: String(error) });
      return [];
    });
    for (const row of rows) if (row.follows !== null) waiting.push(row.id);
  }
  if (waiting.length > 0) {
    // Never offered to the dispatcher while a leader is on its way: a hold that fails (or finds
    // the leader ended meanwhile) leaves the follower due, and its wake-up message or the
    // reconciler's lost-message lease brings it to a batch again.
    for (const id of waiting) settled.add(id);
    await holdJobs(deps, waiting).catch((error: unknown) => {
      log("warn", "holding followers failed", { jobs: waiting, error: String(error) });
    });
  }
  return settled;
}

/** What becomes of an admitted job's message (or, on the refill path, of the job). */
export interface Settlement {
  /** Nothing more to do for the job (submitted, released, failed, or not pending). */
  done(jobId: string): void;
  /** D1 failed mid-way: try the job again after `delaySeconds`. */
  retry(jobId: string, delaySeconds: number): void;
}

/**
 * Claims the admitted jobs (id → the delay of its permit, ms) and submits each to RunPod with
 * bounded concurrency at the gate's pace; records the run, releases the job or applies the seed's
 * CASE; tells the gate once what the batch met. Used by a queue batch and by the dispatcher's
 * refill (consumer/index.ts's Refill), which reaches the consumer without a queue message.
 */
export async function submitAdmitted(
  deps: ConsumerDeps,
  delayOf: ReadonlyMap<string, number>,
  settlement: Settlement,
  /** The endpoint has workers ready or running (the dispatcher's last /health): batch runs go
   * with `lowPriority`. */
  warm = false,
): Promise<void> {
  const gateConfig = deps.settings.gate;

  const claimed = await claimJobs(
    deps,
    [...delayOf.keys()],
    deps.settings.claimTimeoutS,
    deps.endpointId,
  );
  const claimedIds = new Set(claimed.map((job) => job.id));
  for (const id of delayOf.keys()) {
    // Admitted, but no longer pending (a duplicate of a job now running, or cancelled): nothing
    // to submit; a slot it may hold is healed by the reconciler against D1.
    if (!claimedIds.has(id)) settlement.done(id);
  }

  const outcomes: SubmitOutcome[] = [];
  // The gate hears of this batch only at its end; within it, a bad key, or failures the gate would
  // call down (`trips`, over the batch's own submissions), stop the batch's own submissions at
  // once, and the rest are released unsent.
  let marks = "";
  let stopped = false;
  const started = Date.now();
  // A lane holds one `/run` call, never the D1 work after it: what a submission met is recorded
  // (settled) while the lane already sends the next one, so a batch's rounds of `/run` are not
  // lengthened by a statement each. Every settlement is awaited before the batch ends.
  const settling: Promise<void>[] = [];
  const settle = (job: JobRow, work: () => Promise<unknown>) => {
    settling.push(
      work().then(
        () => settlement.done(job.id),
        (error: unknown) => {
          // D1 itself failed mid-way: the job stays `processing` without a run, which the
          // reconciler's claim timeout treats as a lost run; this message is redelivered later.
          log("error", "processing failed", {
            job_id: job.id,
            attempt: job.attempt,
            error: String(error),
          });
          settlement.retry(job.id, deps.settings.claimTimeoutS);
        },
      ),
    );
  };
  // Each job is sent at its permit's time, and never sooner than its place in the batch at the
  // gate's pace: a job the dispatcher admitted earlier spent its permit then, and its message may
  // come back in a bunch with others (delays are whole seconds), which must not reach RunPod at
  // once (a 30-message batch of them drew 429s from a RunPod allowing a burst of 20).
  const spacingMs = 10_000 / Math.max(0.001, gateConfig.runsPer10s);
  const place = new Map(claimed.map((job, i) => [job.id, i]));
  await forEachBounded(
    claimed,
    deps.settings.submitConcurrency,
    async (job) => {
      const due = Math.max(
        delayOf.get(job.id) ?? 0,
        // At most the dispatcher's horizon: a slow pace never holds a claim near its timeout.
        Math.min(MAX_WAIT_MS, (place.get(job.id) ?? 0) * spacingMs),
      );
      const wait = due - (Date.now() - started);
      if (wait > 0 && !stopped) await new Promise((resolve) => setTimeout(resolve, wait));
      if (stopped) {
        settle(job, () => releaseJob(deps, job, gateConfig.breakerCooldownS));
        return;
      }
      const submitted = await submitRun(deps, job, warm);
      const verdict = "runId" in submitted ? null : verdictOf(submitted.error, deps.settings);
      const outcome = verdict ? outcomeOf(verdict) : { kind: "ok" as const };
      outcomes.push(outcome);
      marks += markOf(outcome);
      stopped ||= trips(marks, gateConfig);
      settle(job, () =>
        "runId" in submitted
          ? recordRun(deps, job, submitted.runId)
          : settleFailure(deps, job, verdict as Verdict),
      );
    },
    (job, error) => {
      log("error", "processing failed", {
        job_id: job.id,
        attempt: job.attempt,
        error: String(error),
      });
      settlement.retry(job.id, deps.settings.claimTimeoutS);
    },
  );
  await Promise.all(settling);
  await deps.dispatcher.report(outcomes, gateConfig).catch((error: unknown) => {
    log("warn", "dispatch gate report failed", { error: String(error) });
  });
  // What the batch met may have turned the gate: routes ask it again.
  if (outcomes.some((outcome) => outcome.kind !== "ok")) forgetRoute(deps.endpointId);
}

/** Sends one claimed job to RunPod's `/run`: its run id, or what went wrong. No D1 work. */
async function submitRun(
  deps: ConsumerDeps,
  job: JobRow,
  warm: boolean,
): Promise<{ runId: string } | { error: unknown }> {
  try {
    const request = await buildRunRequest(job, deps.settings, { warm });
    return { runId: (await deps.runpodOf(deps.endpointId).submitRun(request)).id };
  } catch (error) {
    return { error };
  }
}

/** What a failed submission means for the job, decided once from the error. */
type Verdict = { text: string } & (
  | { kind: "rate_limited"; delayS: number; retryAfterS: number | null }
  | { kind: "unavailable"; delayS: number }
  | { kind: "auth_failed"; delayS: number }
  | { kind: "timed_out" }
  /** RunPod answered with an error: the seed's CASE; `health` when it also says RunPod is unwell. */
  | { kind: "failed"; health: boolean }
);

function verdictOf(error: unknown, settings: ConsumerSettings): Verdict {
  const text = error instanceof Error ? error.message : String(error);
  const cooldownS = settings.gate.breakerCooldownS;
  if (!(error instanceof RunpodError)) return { text, kind: "failed", health: false };
  if (error.httpStatus === 429) {
    // Not the job's fault: back to pending with its retries intact.
    const delayS = Math.max(1, error.retryAfterS ?? cooldownS);
    return { text, kind: "rate_limited", delayS, retryAfterS: error.retryAfterS };
  }
  if (error.unavailable) {
    // RunPod is down or unreachable (502/503, no answer at all): nobody's job failed. The
    // gate counts it as a failed submission (enough of them pause dispatch); the job is released.
    return { text, kind: "unavailable", delayS: Math.max(1, error.retryAfterS ?? cooldownS) };
  }
  if (error.httpStatus === 401 || error.httpStatus === 403) {
    return { text, kind: "auth_failed", delayS: cooldownS };
  }
  // RunPod may have accepted the run: the attempt stays open for the run's news.
  if (error.timedOut) return { text, kind: "timed_out" };
  // A submission RunPod answered with an error (500, 400, a bad answer): the seed's CASE.
  return { text, kind: "failed", health: error.kind === "retryable" };
}

/** What the gate counts. */
function outcomeOf(verdict: Verdict): SubmitOutcome {
  switch (verdict.kind) {
    case "rate_limited":
      return { kind: "rate_limited", retryAfterS: verdict.retryAfterS };
    case "auth_failed":
      return { kind: "auth_failed", error: verdict.text };
    case "unavailable":
    case "timed_out":
      return { kind: "failed", error: verdict.text };
    case "failed":
      return verdict.health ? { kind: "failed", error: verdict.text } : { kind: "rejected" };
  }
}

/** The job's transition for a failed submission. */
async function settleFailure(deps: ConsumerDeps, job: JobRow, verdict: Verdict): Promise<void> {
  const fields = { job_id: job.id, attempt: job.attempt, error: verdict.text };
  switch (verdict.kind) {
    case "rate_limited":
      await releaseJob(deps, job, verdict.delayS);
      log("warn", "rate limited; released", { ...fields, delay_s: verdict.delayS });
      return;
    case "unavailable":
      await releaseJob(deps, job, verdict.delayS);
      log("warn", "RunPod unavailable; released", { ...fields, delay_s: verdict.delayS });
      return;
    case "auth_failed":
      await releaseJob(deps, job, verdict.delayS);
      log("error", "RunPod refused the API key; released", fields);
      return;
    case "timed_out":
      // If no news of the run comes, the reconciler's claim timeout treats it as a lost run.
      log("warn", "submission timed out; waiting for the run to report", fields);
      return;
    case "failed": {
      const failure = await failRun(deps, job, job.attempt, null, verdict.text);
      log("warn", "submission failed", { ...fields, ...failure });
      return;
    }
  }
}
