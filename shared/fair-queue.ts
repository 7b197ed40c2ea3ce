// The dispatcher's backlog and its runs in flight, in the Durable Object's own SQLite: which job
// gets the next free slot at RunPod. A capability in the style of cloudflare/agents: it owns its
// three tables and is reached only through the methods below.
//
// - `waiting`: jobs offered and not yet admitted, by fairness key (user_id, else project) and age.
// - `fair_keys`: per key, how many of its jobs were admitted so far (`dispatched`) and how many
//   wait. The next slot goes to the waiting key with the least dispatched, oldest job first
//   within it: equal shares between keys that have work waiting. A key that starts waiting again
//   is lifted to the least `dispatched` of the keys already waiting, so idle time banks no credit.
// - `in_flight`: admitted jobs whose run has not finished; never more than the cap. A job leaves
//   it exactly once, when the state machine frees its slot (complete, failed, cancelled,
//   released, lost) or when the reconciler finds D1 no longer has it processing.
// Every pick is an index range lookup (`fair_keys_next`, `waiting_by_key`).

export interface OfferedJob {
  id: string;
  key: string;
  createdAt: string;
}

export interface FairQueueCounts {
  in_flight: number;
  waiting: number;
  waiting_keys: number;
}

/** An in-flight entry younger than this is never healed away (it may not be claimed yet). */
export const HEAL_GRACE_MS = 60_000;

export class FairQueue {
  readonly #sql: SqlStorage;

  constructor(sql: SqlStorage) {
    this.#sql = sql;
    sql.exec(`CREATE TABLE IF NOT EXISTS waiting (
                job_id TEXT PRIMARY KEY, fair_key TEXT NOT NULL, created_at TEXT NOT NULL)`);
    sql.exec("CREATE INDEX IF NOT EXISTS waiting_by_key ON waiting (fair_key, created_at, job_id)");
    sql.exec(`CREATE TABLE IF NOT EXISTS fair_keys (
                fair_key TEXT PRIMARY KEY, dispatched INTEGER NOT NULL, waiting INTEGER NOT NULL)`);
    sql.exec(
      "CREATE INDEX IF NOT EXISTS fair_keys_next ON fair_keys (dispatched, fair_key) WHERE waiting > 0",
    );
    sql.exec(`CREATE TABLE IF NOT EXISTS in_flight (
                job_id TEXT PRIMARY KEY, fair_key TEXT NOT NULL, admitted_at INTEGER NOT NULL)`);
  }

  /** Adds jobs to the backlog; a job already waiting or in flight is left as it is. */
  offer(jobs: readonly OfferedJob[]): void {
    for (const job of jobs) {
      const known = this.#sql
        .exec<{ n: number }>(
          `SELECT (SELECT COUNT(*) FROM waiting WHERE job_id = ?1)
                + (SELECT COUNT(*) FROM in_flight WHERE job_id = ?1) AS n`,
          job.id,
        )
        .one().n;
      if (known > 0) continue;
      const key = this.#sql
        .exec<{ dispatched: number; waiting: number }>(
          "SELECT dispatched, waiting FROM fair_keys WHERE fair_key = ?",
          job.key,
        )
        .toArray()[0];
      if (!key || key.waiting === 0) {
        // (Re)joining the waiting keys: level with the least served of them, no banked credit.
        const floor =
          this.#sql
            .exec<{ d: number | null }>(
              "SELECT dispatched AS d FROM fair_keys WHERE waiting > 0 ORDER BY dispatched LIMIT 1",
            )
            .toArray()[0]?.d ?? 0;
        this.#sql.exec(
          `INSERT INTO fair_keys (fair_key, dispatched, waiting) VALUES (?1, ?2, 0)
           ON CONFLICT (fair_key) DO UPDATE SET dispatched = MAX(dispatched, ?2)`,
          job.key,
          floor,
        );
      }
      this.#sql.exec(
        "INSERT INTO waiting (job_id, fair_key, created_at) VALUES (?, ?, ?)",
        job.id,
        job.key,
        job.createdAt,
      );
      this.#sql.exec("UPDATE fair_keys SET waiting = waiting + 1 WHERE fair_key = ?", job.key);
    }
  }

  /** Free slots under `cap`. */
  freeSlots(cap: number): number {
    return Math.max(0, cap - this.counts().in_flight);
  }

  /** Moves up to `n` jobs from the backlog into flight, fairest first; their ids in order. */
  admit(n: number, now: number): string[] {
    const admitted: string[] = [];
    while (admitted.length < n) {
      const key = this.#sql
        .exec<{ fair_key: string }>(
          "SELECT fair_key FROM fair_keys WHERE waiting > 0 ORDER BY dispatched, fair_key LIMIT 1",
        )
        .toArray()[0]?.fair_key;
      if (key === undefined) break;
      const job = this.#sql
        .exec<{ job_id: string }>(
          "SELECT job_id FROM waiting WHERE fair_key = ? ORDER BY created_at, job_id LIMIT 1",
          key,
        )
        .one().job_id;
      this.#sql.exec("DELETE FROM waiting WHERE job_id = ?", job);
      this.#sql.exec(
        "INSERT INTO in_flight (job_id, fair_key, admitted_at) VALUES (?, ?, ?)",
        job,
        key,
        now,
      );
      this.#sql.exec(
        "UPDATE fair_keys SET dispatched = dispatched + 1, waiting = waiting - 1 WHERE fair_key = ?",
        key,
      );
      admitted.push(job);
    }
    return admitted;
  }

  /** Whether the job holds a slot. */
  inFlight(jobId: string): boolean {
    return (
      this.#sql
        .exec<{ n: number }>("SELECT COUNT(*) AS n FROM in_flight WHERE job_id = ?", jobId)
        .one().n > 0
    );
  }

  /** Frees the slots (or backlog places) of jobs that no longer need one; each at most once. */
  free(jobIds: readonly string[]): number {
    let freed = 0;
    for (const id of jobIds) {
      freed += this.#sql.exec("DELETE FROM in_flight WHERE job_id = ?", id).rowsWritten > 0 ? 1 : 0;
      const waiting = this.#sql
        .exec<{ fair_key: string }>("DELETE FROM waiting WHERE job_id = ? RETURNING fair_key", id)
        .toArray()[0];
      if (waiting) {
        this.#sql.exec(
          "UPDATE fair_keys SET waiting = waiting - 1 WHERE fair_key = ?",
          waiting.fair_key,
        );
      }
    }
    return freed;
  }

  /**
   * The reconciler's check against D1: in-flight jobs D1 no longer has processing (a lost
   * notification) are freed, unless admitted less than a minute ago (maybe not claimed yet).
   */
  heal(processing: ReadonlySet<string>, now: number, graceMs = HEAL_GRACE_MS): string[] {
    const stale = this.#sql
      .exec<{ job_id: string }>(
        "SELECT job_id FROM in_flight WHERE admitted_at <= ?",
        now - graceMs,
      )
      .toArray()
      .map((row) => row.job_id)
      .filter((id) => !processing.has(id));
    this.free(stale);
    return stale;
  }

  /** Which of these jobs wait or hold a slot. */
  known(jobIds: readonly string[]): string[] {
    return this.#sql
      .exec<{ job_id: string }>(
        `SELECT value AS job_id FROM json_each(?1)
         WHERE value IN (SELECT job_id FROM waiting) OR value IN (SELECT job_id FROM in_flight)`,
        JSON.stringify(jobIds),
      )
      .toArray()
      .map((row) => row.job_id);
  }

  /** Every in-flight job id (the reconciler compares them with D1). */
  inFlightIds(): string[] {
    return this.#sql
      .exec<{ job_id: string }>("SELECT job_id FROM in_flight")
      .toArray()
      .map((row) => row.job_id);
  }

  counts(): FairQueueCounts {
    return this.#sql
      .exec<{ in_flight: number; waiting: number; waiting_keys: number }>(
        `SELECT (SELECT COUNT(*) FROM in_flight) AS in_flight,
                (SELECT COUNT(*) FROM waiting) AS waiting,
                (SELECT COUNT(*) FROM fair_keys WHERE waiting > 0) AS waiting_keys`,
      )
      .one();
  }
}
