// Queue position and ETA: where a pending job stands in the dispatcher's order, as pure functions
// of the dispatcher's per-key counts and its fleet model (shared/dispatcher.ts is the only caller).
//
// The dispatcher gives each freed slot to the waiting key with the least dispatched, oldest job
// first within it (shared/fair-queue.ts). So the job of rank r (0: its key's next) in key K, whose
// key has had d_K dispatched, starts after every job that the order puts before it given today's
// backlog: from each waiting key k, the jobs it is served before K reaches d_K + r, that is
// min(w_k, max(0, d_K + r − d_k)) of its w_k waiting — its own key included, which gives r. That
// sum is the job's position, computed in O(log keys) from the keys sorted by d and by d + w with
// prefix sums (a snapshot the dispatcher rebuilds at most every few seconds, never on the
// admission path). Jobs arriving later in a less-served key may still pass it: an estimate.
//
// Its ETA: the runs that start before it (its position, plus the runs already queued at RunPod)
// start at the rate the fleet finishes runs (S workers taking work, a run of L ms): the n-th start
// from now comes after about (n − ½)·L/S, plus the refill latency.

/** A job's lane: its priority. */
export type Lane = "interactive" | "standard" | "batch";

/** A pending job's place in the queue, as the API answers it (`at`: ISO 8601, when computed). */
export interface QueueInfo {
  position: number;
  eta_s: number;
  lane: Lane;
  at: string;
}

/** One waiting key's counts: dispatched so far and waiting now. */
export interface KeyCounts {
  dispatched: number;
  waiting: number;
}

/** The waiting keys' counts in the form a position is computed from. */
export interface KeySnapshot {
  /** Each key's counts, to leave a job's own key out (its live counts give its rank). */
  byKey: Map<string, KeyCounts>;
  /** Jobs waiting in all keys when the snapshot was taken. */
  waiting: number;
  /** dispatched, ascending, with prefix sums (sumD[i] = Σ of the first i). */
  d: number[];
  sumD: number[];
  /** dispatched + waiting, ascending, with prefix sums. */
  e: number[];
  sumE: number[];
  /** The least dispatched among waiting keys: where a key that starts waiting begins. */
  floor: number;
}

export function keySnapshot(keys: ReadonlyMap<string, KeyCounts>): KeySnapshot {
  const counts = [...keys.values()];
  const d = counts.map((k) => k.dispatched).sort((a, b) => a - b);
  const e = counts.map((k) => k.dispatched + k.waiting).sort((a, b) => a - b);
  const prefix = (values: number[]) => {
    const sums = [0];
    for (const value of values) sums.push((sums.at(-1) ?? 0) + value);
    return sums;
  };
  return {
    byKey: new Map(keys),
    waiting: counts.reduce((sum, k) => sum + k.waiting, 0),
    d,
    sumD: prefix(d),
    e,
    sumE: prefix(e),
    floor: d[0] ?? 0,
  };
}

/** How many of `sorted` are below `t` (binary search). */
function below(sorted: readonly number[], t: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((sorted[mid] ?? 0) < t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Σ over waiting keys of min(w_k, max(0, t − d_k)): the jobs served before a key reaches t. */
export function servedBefore(snapshot: KeySnapshot, t: number): number {
  const nd = below(snapshot.d, t);
  const ne = below(snapshot.e, t);
  const upToT = nd * t - (snapshot.sumD[nd] ?? 0);
  const exhausted = ne * t - (snapshot.sumE[ne] ?? 0);
  return Math.max(0, upToT - exhausted);
}

/** The jobs of one key served before the keys reach `t`. */
const servedOf = (k: KeyCounts, t: number) => Math.min(k.waiting, Math.max(0, t - k.dispatched));

/**
 * A job's position: the other keys' jobs served before its key reaches it (from the snapshot),
 * plus its rank within its own key (from `own`, the key's counts now: null when it has nothing
 * waiting). `rank`: 0 for its key's next; a job the dispatcher does not hold yet is its key's last
 * (rank = the key's waiting).
 */
export function positionOf(
  snapshot: KeySnapshot,
  key: string,
  own: KeyCounts | null,
  rank: number,
): number {
  const start = own === null || own.waiting === 0 ? snapshot.floor : own.dispatched;
  const t = Math.max(start, snapshot.floor) + rank;
  const mine = snapshot.byKey.get(key);
  const others = servedBefore(snapshot, t) - (mine ? servedOf(mine, t) : 0);
  return Math.max(0, others) + rank;
}

/**
 * A position within its lane (`inLane` jobs of the lane start before it), made a position among
 * all lanes: slots go to the lanes with jobs waiting by weighted round robin, so until lane L has
 * served its next `inLane` jobs and this one, every other lane with jobs waiting starts about
 * (inLane + 1) × its weight / L's weight of them (at most what it has waiting).
 */
export function laneShare(
  inLane: number,
  lane: Lane,
  waiting: Readonly<Record<Lane, number>>,
  weights: readonly [number, number, number] = [8, 4, 1],
): number {
  const order: Lane[] = ["interactive", "standard", "batch"];
  const own = Math.max(1, weights[order.indexOf(lane)] ?? 1);
  let others = 0;
  order.forEach((other, i) => {
    if (other === lane) return;
    const share = Math.floor(((inLane + 1) * Math.max(1, weights[i] ?? 1)) / own);
    others += Math.min(waiting[other] ?? 0, share);
  });
  return inLane + others;
}

export interface EtaInputs {
  /** Runs already queued at RunPod, which start before any waiting job. */
  queuedAtRunpod: number;
  /** Workers taking work (ready + running), bounded by the cap. */
  servers: number;
  /** The run length to plan with (ms). */
  runMs: number;
  /** From a slot's freeing to the next run at RunPod (ms). */
  refillMs: number;
}

/** Seconds until a job at `position` starts, about. */
export function etaSeconds(position: number, inputs: EtaInputs): number {
  const n = position + inputs.queuedAtRunpod + 1;
  const perStart = inputs.runMs / Math.max(1, inputs.servers);
  return Math.max(0, Math.round(((n - 0.5) * perStart + inputs.refillMs) / 1000));
}
