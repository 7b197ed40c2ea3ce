// The dispatcher's backlog and its runs in flight, in the Durable Object's own SQLite: which job
// gets the next free slot at RunPod. A capability in the style of cloudflare/agents: it owns its
// three tables and is reached only through the methods below.
//
// - `waiting`: jobs offered and not yet admitted, by fairness key (user_id, else project) and age.
// - `lanes`: the three priorities (interactive, standard, batch), how many jobs wait in each and
//   their smooth weighted round robin credit. The next slot goes to a lane by weighted round robin
//   among the lanes with jobs waiting (PRIORITY_WEIGHTS, 8,4,1: with interactive and batch both
//   waiting, 8 of 9 slots go to interactive, and no lane starves).
// - `fair_keys`: per (lane, key), how many of its jobs were admitted so far (`dispatched`) and how
//   many wait. Within the lane, the next slot goes to the waiting key with the least dispatched
//   *in that lane*, oldest job first within it: equal shares between keys that have work waiting.
//   A key that starts waiting again is lifted to the least `dispatched` of the lane's waiting
//   keys, so idle time banks no credit. (A standard lane's row is named by the key itself, as
//   before lanes; the other lanes' rows by `<lane>|<key>`.)
// - `in_flight`: admitted jobs whose run has not finished; never more than the cap. A job leaves
//   it exactly once, when the state machine frees its slot (complete, failed, cancelled,
//   released, lost) or when the reconciler finds D1 no longer has it processing.
// - `totals`: one row, the counts of the three tables above, kept with every change, so no
//   operation counts rows: the cost of an admission is the same at 100 and at 100,000 waiting.
// Every pick is an index range lookup (`fair_keys_next`, `waiting_by_key`); `cost()` tells the
// rows read and written so far (tests and the bench compare them at different backlogs).

import type { KeyCounts, Lane } from "./queue-estimate.ts";

export const LANES: readonly Lane[] = ["interactive", "standard", "batch"];

/** Weights of the lanes' weighted round robin, in LANES' order (PRIORITY_WEIGHTS). */
export type LaneWeights = readonly [number, number, number];
export const DEFAULT_LANE_WEIGHTS: LaneWeights = [8, 4, 1];

/** The fair_keys row of a (lane, key): the key itself in the standard lane. */
export function laneKey(lane: Lane, key: string): string {
  return lane === "standard" ? key : `${lane}|${key}`;
}

/** The lane and key of a fair_keys row's name. */
export function splitLaneKey(name: string): { lane: Lane; key: string } {
  const bar = name.indexOf("|");
  const lane = bar > 0 ? name.slice(0, bar) : "";
  return lane === "interactive" || lane === "batch"
    ? { lane, key: name.slice(bar + 1) }
    : { lane: "standard", key: name };
}

/**
 * Smooth weighted round robin (nginx's): each lane with jobs waiting gains its weight, the
 * richest is chosen and pays the sum of the weights in play. Pure: the credits in, the lane and
 * the credits out.
 */
export function pickLane(
  waiting: ReadonlyMap<Lane, number>,
  credits: ReadonlyMap<Lane, number>,
  weights: LaneWeights,
): { lane: Lane; credits: Map<Lane, number> } | null {
  const next = new Map(credits);
  let best: Lane | null = null;
  let total = 0;
  LANES.forEach((lane, i) => {
    if ((waiting.get(lane) ?? 0) <= 0) return;
    const weight = Math.max(1, weights[i] ?? 1);
    total += weight;
    next.set(lane, (next.get(lane) ?? 0) + weight);
    if (best === null || (next.get(lane) ?? 0) > (next.get(best) ?? 0)) best = lane;
  });
  if (best === null) return null;
  const chosen: Lane = best;
  next.set(chosen, (next.get(chosen) ?? 0) - total);
  return { lane: chosen, credits: next };
}

/** A job's fairness key: its user when it names one, else its project. */
export function fairKeyOf(job: { user_id: number | null; project_id: number }): string {
  return job.user_id === null ? `project:${job.project_id}` : `user:${job.user_id}`;
}

export interface OfferedJob {
  id: string;
  /** Its fairness key (fairKeyOf). */
  key: string;
  createdAt: string;
  /** Its priority: `standard` when not said. */
  lane?: Lane | undefined;
  /** Its export type (a down endpoint refuses only the types another endpoint takes). */
  type?: string | undefined;
  /** Every endpoint of its type is down: it waits here, never refused (failover). */
  stay?: boolean | undefined;
}

export interface FairQueueCounts {
  in_flight: number;
  waiting: number;
  waiting_keys: number;
}

/** Jobs waiting per lane. */
export type LaneCounts = Record<Lane, number>;

/** Rows SQLite read and wrote for this queue since the object started. */
export interface FairQueueCost {
  rowsRead: number;
  rowsWritten: number;
}

/** A job's place: waiting (its lane, its key's counts and its rank in the key), or in flight. */
export type JobPlace =
  | { kind: "waiting"; lane: Lane; key: string; counts: KeyCounts; rank: number }
  | { kind: "in_flight" };

/** An in-flight entry younger than this is never healed away (it may not be claimed yet). */
export const HEAL_GRACE_MS = 60_000;

export class FairQueue {
  readonly #sql: SqlStorage;
  readonly #cost: FairQueueCost = { rowsRead: 0, rowsWritten: 0 };

  constructor(sql: SqlStorage) {
    this.#sql = sql;
    sql.exec(`CREATE TABLE IF NOT EXISTS waiting (
                job_id TEXT PRIMARY KEY, fair_key TEXT NOT NULL, created_at TEXT NOT NULL,
                seq INTEGER NOT NULL DEFAULT 0)`);
    sql.exec("CREATE INDEX IF NOT EXISTS waiting_by_key ON waiting (fair_key, created_at, job_id)");
    sql.exec(`CREATE TABLE IF NOT EXISTS fair_keys (
                fair_key TEXT PRIMARY KEY, dispatched INTEGER NOT NULL, waiting INTEGER NOT NULL,
                next_seq INTEGER NOT NULL DEFAULT 0)`);
    // Objects from before queue positions: the columns added once.
    for (const [table, column, type] of [
      ["waiting", "seq", "INTEGER NOT NULL DEFAULT 0"],
      ["fair_keys", "next_seq", "INTEGER NOT NULL DEFAULT 0"],
      // Objects from before lanes: every key was a standard one.
      ["fair_keys", "lane", "TEXT NOT NULL DEFAULT 'standard'"],
    ] as const) {
      const ddl = sql
        .exec<{ sql: string }>(
          "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
          table,
        )
        .one().sql;
      if (!ddl.includes(` ${column} `)) {
        sql.exec(`ALTER TABLE ${table} ADD COLUMN ${column} ${type}`);
      }
    }
    sql.exec("DROP INDEX IF EXISTS fair_keys_next");
    sql.exec(
      `CREATE INDEX IF NOT EXISTS fair_keys_lane_next ON fair_keys (lane, dispatched, fair_key)
       WHERE waiting > 0`,
    );
    sql.exec(`CREATE TABLE IF NOT EXISTS in_flight (
                job_id TEXT PRIMARY KEY, fair_key TEXT NOT NULL, admitted_at INTEGER NOT NULL)`);
    const hasTotals =
      sql
        .exec<{ n: number }>(
          "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'totals'",
        )
        .one().n > 0;
    if (!hasTotals) {
      // Created once, from what the tables hold (an object from before the counters: counted
      // here once, never again).
      sql.exec(`CREATE TABLE totals (
                  id INTEGER PRIMARY KEY CHECK (id = 1), in_flight INTEGER NOT NULL,
                  waiting INTEGER NOT NULL, waiting_keys INTEGER NOT NULL)`);
      sql.exec(`INSERT INTO totals (id, in_flight, waiting, waiting_keys)
                SELECT 1, (SELECT COUNT(*) FROM in_flight), (SELECT COUNT(*) FROM waiting),
                       (SELECT COUNT(*) FROM fair_keys WHERE waiting > 0)`);
    }
    const hasLanes =
      sql
        .exec<{ n: number }>(
          "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'lanes'",
        )
        .one().n > 0;
    if (!hasLanes) {
      // Created once; what waits already (an object from before lanes) is standard.
      sql.exec(`CREATE TABLE lanes (
                  lane TEXT PRIMARY KEY, waiting INTEGER NOT NULL, credit INTEGER NOT NULL)`);
      for (const lane of LANES) {
        sql.exec(
          `INSERT INTO lanes (lane, waiting, credit)
           VALUES (?1, CASE WHEN ?1 = 'standard' THEN (SELECT waiting FROM totals) ELSE 0 END, 0)`,
          lane,
        );
      }
    }
  }

  /** Runs one statement, counting its rows. */
  #exec<T extends Record<string, SqlStorageValue>>(
    query: string,
    ...binds: SqlStorageValue[]
  ): T[] & { written: number } {
    const cursor = this.#sql.exec<T>(query, ...binds);
    const rows = cursor.toArray();
    this.#cost.rowsRead += cursor.rowsRead;
    this.#cost.rowsWritten += cursor.rowsWritten;
    return Object.assign(rows, { written: cursor.rowsWritten });
  }

  #addTotals(inFlight: number, waiting: number, waitingKeys: number): void {
    if (inFlight === 0 && waiting === 0 && waitingKeys === 0) return;
    this.#exec(
      `UPDATE totals SET in_flight = in_flight + ?, waiting = waiting + ?,
                         waiting_keys = waiting_keys + ? WHERE id = 1`,
      inFlight,
      waiting,
      waitingKeys,
    );
  }

  /** Adds jobs to the backlog; a job already waiting or in flight is left as it is. */
  offer(jobs: readonly OfferedJob[]): void {
    // Oldest first, as they are admitted within a key: their `seq` follows that order.
    const oldestFirst = [...jobs].sort((a, b) =>
      a.createdAt === b.createdAt ? (a.id < b.id ? -1 : 1) : a.createdAt < b.createdAt ? -1 : 1,
    );
    for (const offered of oldestFirst) {
      const lane = offered.lane ?? "standard";
      const job = { ...offered, key: laneKey(lane, offered.key) };
      const [known] = this.#exec<{ n: number }>(
        `SELECT EXISTS (SELECT 1 FROM waiting WHERE job_id = ?1)
              + EXISTS (SELECT 1 FROM in_flight WHERE job_id = ?1) AS n`,
        job.id,
      );
      if ((known?.n ?? 0) > 0) continue;
      const [key] = this.#exec<{ dispatched: number; waiting: number; next_seq: number }>(
        "SELECT dispatched, waiting, next_seq FROM fair_keys WHERE fair_key = ?",
        job.key,
      );
      if (!key || key.waiting === 0) {
        // (Re)joining the lane's waiting keys: level with the least served of them, no banked
        // credit.
        const floor =
          this.#exec<{ d: number }>(
            `SELECT dispatched AS d FROM fair_keys WHERE lane = ? AND waiting > 0
             ORDER BY dispatched LIMIT 1`,
            lane,
          )[0]?.d ?? 0;
        this.#exec(
          `INSERT INTO fair_keys (fair_key, dispatched, waiting, lane) VALUES (?1, ?2, 0, ?3)
           ON CONFLICT (fair_key) DO UPDATE SET dispatched = MAX(dispatched, ?2)`,
          job.key,
          floor,
          lane,
        );
      }
      // Its place in its key's arrivals, for queue positions (seq − the key's first waiting one).
      this.#exec(
        "INSERT INTO waiting (job_id, fair_key, created_at, seq) VALUES (?, ?, ?, ?)",
        job.id,
        job.key,
        job.createdAt,
        key?.next_seq ?? 0,
      );
      this.#exec(
        "UPDATE fair_keys SET waiting = waiting + 1, next_seq = next_seq + 1 WHERE fair_key = ?",
        job.key,
      );
      this.#exec("UPDATE lanes SET waiting = waiting + 1 WHERE lane = ?", lane);
      this.#addTotals(0, 1, !key || key.waiting === 0 ? 1 : 0);
    }
  }

  /** Free slots under `cap`. */
  freeSlots(cap: number): number {
    return Math.max(0, cap - this.counts().in_flight);
  }

  /**
   * Moves up to `n` jobs from the backlog into flight: each slot to a lane by weighted round
   * robin among the lanes with jobs waiting, then to the lane's least served key, its oldest job.
   * Their ids in order. Three lane rows and two index lookups a job, whatever the backlog.
   */
  admit(n: number, now: number, weights: LaneWeights = DEFAULT_LANE_WEIGHTS): string[] {
    const admitted: string[] = [];
    let keysLeft = 0;
    if (n <= 0) return admitted;
    const rows = this.#exec<{ lane: Lane; waiting: number; credit: number }>(
      "SELECT lane, waiting, credit FROM lanes",
    );
    const waiting = new Map(rows.map((row) => [row.lane, row.waiting]));
    let credits = new Map(rows.map((row) => [row.lane, row.credit]));
    const taken = new Map<Lane, number>();
    while (admitted.length < n) {
      const pick = pickLane(waiting, credits, weights);
      if (pick === null) break;
      const [key] = this.#exec<{ fair_key: string; waiting: number }>(
        `SELECT fair_key, waiting FROM fair_keys WHERE lane = ? AND waiting > 0
         ORDER BY dispatched, fair_key LIMIT 1`,
        pick.lane,
      );
      const [job] =
        key === undefined
          ? []
          : this.#exec<{ job_id: string }>(
              "SELECT job_id FROM waiting WHERE fair_key = ? ORDER BY created_at, job_id LIMIT 1",
              key.fair_key,
            );
      if (key === undefined || job === undefined) {
        // The lane's count ran ahead of its keys (it cannot, but never loop on it): set it right.
        waiting.set(pick.lane, 0);
        this.#exec("UPDATE lanes SET waiting = 0 WHERE lane = ?", pick.lane);
        continue;
      }
      credits = pick.credits;
      this.#exec("DELETE FROM waiting WHERE job_id = ?", job.job_id);
      this.#exec(
        "INSERT INTO in_flight (job_id, fair_key, admitted_at) VALUES (?, ?, ?)",
        job.job_id,
        key.fair_key,
        now,
      );
      this.#exec(
        "UPDATE fair_keys SET dispatched = dispatched + 1, waiting = waiting - 1 WHERE fair_key = ?",
        key.fair_key,
      );
      if (key.waiting === 1) keysLeft++;
      waiting.set(pick.lane, (waiting.get(pick.lane) ?? 0) - 1);
      taken.set(pick.lane, (taken.get(pick.lane) ?? 0) + 1);
      admitted.push(job.job_id);
    }
    for (const lane of LANES) {
      const before = rows.find((row) => row.lane === lane);
      const credit = credits.get(lane) ?? 0;
      const took = taken.get(lane) ?? 0;
      if (took === 0 && credit === before?.credit) continue;
      this.#exec(
        "UPDATE lanes SET waiting = MAX(0, waiting - ?), credit = ? WHERE lane = ?",
        took,
        // A lane left with nothing waiting forgets its credit: idle time banks none.
        (waiting.get(lane) ?? 0) > 0 ? credit : 0,
        lane,
      );
    }
    this.#addTotals(admitted.length, -admitted.length, -keysLeft);
    return admitted;
  }

  /**
   * A job admitted earlier comes back to be claimed (its message, sent by the dispatcher): true
   * when it holds a slot. The slot's age restarts, so the reconciler's heal, which compares the
   * slots with a read of D1 made before this claim, does not take it for a lost one.
   */
  handBack(jobId: string, now: number): boolean {
    return (
      this.#exec("UPDATE in_flight SET admitted_at = ? WHERE job_id = ?", now, jobId).written > 0
    );
  }

  /**
   * Frees the slots (or backlog places) of jobs that no longer need one; each at most once.
   * `freed`: slots freed; `unwaited`: the jobs that were still waiting.
   */
  free(jobIds: readonly string[]): { freed: number; unwaited: string[] } {
    let freed = 0;
    const unwaited: string[] = [];
    let keysLeft = 0;
    for (const id of jobIds) {
      freed += this.#exec("DELETE FROM in_flight WHERE job_id = ?", id).written > 0 ? 1 : 0;
      const [waiting] = this.#exec<{ fair_key: string }>(
        "DELETE FROM waiting WHERE job_id = ? RETURNING fair_key",
        id,
      );
      if (waiting) {
        unwaited.push(id);
        const [key] = this.#exec<{ waiting: number; lane: Lane }>(
          "UPDATE fair_keys SET waiting = waiting - 1 WHERE fair_key = ? RETURNING waiting, lane",
          waiting.fair_key,
        );
        if (key?.waiting === 0) keysLeft++;
        this.#exec(
          "UPDATE lanes SET waiting = MAX(0, waiting - 1) WHERE lane = ?",
          key?.lane ?? "standard",
        );
      }
    }
    this.#addTotals(-freed, -unwaited.length, -keysLeft);
    return { freed, unwaited };
  }

  /**
   * The reconciler's check against D1: in-flight jobs D1 no longer has processing (a lost
   * notification) are freed, unless admitted or handed back less than `graceMs` ago (maybe not
   * claimed yet).
   */
  heal(processing: ReadonlySet<string>, now: number, graceMs = HEAL_GRACE_MS): string[] {
    const stale = this.#exec<{ job_id: string }>(
      "SELECT job_id FROM in_flight WHERE admitted_at <= ?",
      now - graceMs,
    )
      .map((row) => row.job_id)
      .filter((id) => !processing.has(id));
    this.free(stale);
    return stale;
  }

  /** Which of these jobs wait or hold a slot. */
  known(jobIds: readonly string[]): string[] {
    return this.#exec<{ job_id: string }>(
      `SELECT value AS job_id FROM json_each(?1)
       WHERE EXISTS (SELECT 1 FROM waiting WHERE job_id = value)
          OR EXISTS (SELECT 1 FROM in_flight WHERE job_id = value)`,
      JSON.stringify(jobIds),
    ).map((row) => row.job_id);
  }

  /** Up to `limit` waiting job ids, oldest first within their keys (failover hands them back). */
  waitingIds(limit: number): string[] {
    return this.#exec<{ job_id: string }>("SELECT job_id FROM waiting LIMIT ?", limit).map(
      (row) => row.job_id,
    );
  }

  /** Every in-flight job id (the reconciler compares them with D1; at most the cap). */
  inFlightIds(): string[] {
    return this.#exec<{ job_id: string }>("SELECT job_id FROM in_flight").map((row) => row.job_id);
  }

  /**
   * Where these jobs stand for a queue position: each waiting one's key counts and rank in its
   * key (the key's waiting jobs taken as its last arrivals: exact while jobs leave a key in the
   * order they came, an estimate otherwise); `held`: in flight (admitted, about to start). Two
   * primary-key lookups a job.
   */
  places(jobIds: readonly string[]): Map<string, JobPlace> {
    const places = new Map<string, JobPlace>();
    for (const id of jobIds) {
      const [row] = this.#exec<{
        fair_key: string;
        seq: number;
        dispatched: number;
        waiting: number;
        next_seq: number;
      }>(
        `SELECT w.fair_key, w.seq, k.dispatched, k.waiting, k.next_seq FROM waiting w
         JOIN fair_keys k ON k.fair_key = w.fair_key WHERE w.job_id = ?`,
        id,
      );
      if (row) {
        const rank = Math.min(row.waiting - 1, Math.max(0, row.seq - (row.next_seq - row.waiting)));
        places.set(id, {
          kind: "waiting",
          lane: splitLaneKey(row.fair_key).lane,
          key: row.fair_key,
          counts: { dispatched: row.dispatched, waiting: row.waiting },
          rank,
        });
      } else if (this.#exec("SELECT 1 FROM in_flight WHERE job_id = ?", id).length > 0) {
        places.set(id, { kind: "in_flight" });
      }
    }
    return places;
  }

  /** A key's counts now (null: it has nothing waiting). */
  keyCounts(key: string): KeyCounts | null {
    const [row] = this.#exec<{ dispatched: number; waiting: number }>(
      "SELECT dispatched, waiting FROM fair_keys WHERE fair_key = ? AND waiting > 0",
      key,
    );
    return row ?? null;
  }

  /** Every waiting key's counts (O(keys): for the position snapshot, never per admission). */
  waitingKeys(): Map<string, KeyCounts> {
    return new Map(
      this.#exec<{ fair_key: string; dispatched: number; waiting: number }>(
        "SELECT fair_key, dispatched, waiting FROM fair_keys WHERE waiting > 0",
      ).map((row) => [row.fair_key, { dispatched: row.dispatched, waiting: row.waiting }]),
    );
  }

  /** The counts, from the one `totals` row. */
  counts(): FairQueueCounts {
    const [row] = this.#exec<{ in_flight: number; waiting: number; waiting_keys: number }>(
      "SELECT in_flight, waiting, waiting_keys FROM totals WHERE id = 1",
    );
    return row ?? { in_flight: 0, waiting: 0, waiting_keys: 0 };
  }

  /** Jobs waiting per lane (three rows). */
  laneCounts(): LaneCounts {
    const counts: LaneCounts = { interactive: 0, standard: 0, batch: 0 };
    for (const row of this.#exec<{ lane: Lane; waiting: number }>(
      "SELECT lane, waiting FROM lanes",
    )) {
      counts[row.lane] = row.waiting;
    }
    return counts;
  }

  /** Rows read and written so far by this queue's statements. */
  cost(): FairQueueCost {
    return { ...this.#cost };
  }
}
