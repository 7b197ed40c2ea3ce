// BENCH ONLY, never deployed (bench/worker/fair-queue.toml): the dispatcher's FairQueue over a
// Durable Object's own SQLite storage, as shared/dispatcher.ts holds it, for the admission-cost
// figure of `npm run fleet` (bench/admission-cost.ts). Routes (JSON bodies, `name` picks the
// object, one per backlog size):
//
//   POST /seed    {name, from, n, keys}  offers jobs w<from>…w<from+n-1>, round-robin over `keys`
//                                        fairness keys (user:0 …), one offer per job
//   POST /fill    {name, n}              admits n jobs into flight (the runs at RunPod)
//   POST /cycles  {name, from, n, keys}  n admissions as the dispatcher makes them, one job each:
//                                        a new job offered (the backlog stays the same size), the
//                                        oldest slot freed (a run ended), the fairest job admitted;
//                                        answers the rows read and written by each step (FairQueue's
//                                        cost(), SQLite's own counts) and the counts after
//   GET  /health
//
// workerd's clock only moves on I/O, so the time of a request is taken by the caller.
import { DurableObject } from "cloudflare:workers";
import { FairQueue, type FairQueueCost, type FairQueueCounts } from "../../shared/fair-queue.ts";

interface Env {
  QUEUES: DurableObjectNamespace<FairQueueBench>;
}

/** Seeded jobs are older than the cycles' ones: a new job joins the end of its key's line. */
const SEED_EPOCH = Date.parse("2026-01-01T00:00:00Z");
const CYCLE_EPOCH = Date.parse("2026-06-01T00:00:00Z");

export type Step = "offer" | "free" | "admit";

export interface CycleResult {
  cycles: number;
  rows: Record<Step, FairQueueCost>;
  counts: FairQueueCounts;
}

export class FairQueueBench extends DurableObject<Env> {
  readonly #queue: FairQueue;
  /** The in-flight ids, oldest first (read once per object, then kept here). */
  #inFlight: string[] | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#queue = new FairQueue(ctx.storage.sql);
  }

  seed(from: number, n: number, keys: number): FairQueueCounts {
    const jobs = [];
    for (let i = from; i < from + n; i++) {
      jobs.push({
        id: `w${i}`,
        key: `user:${i % keys}`,
        createdAt: new Date(SEED_EPOCH + i).toISOString(),
      });
    }
    this.#queue.offer(jobs);
    return this.#queue.counts();
  }

  fill(n: number): FairQueueCounts {
    this.#queue.admit(n, Date.now());
    this.#inFlight = null;
    return this.#queue.counts();
  }

  cycles(from: number, n: number, keys: number): CycleResult {
    this.#inFlight ??= this.#queue.inFlightIds();
    const inFlight = this.#inFlight;
    const rows: Record<Step, FairQueueCost> = {
      offer: { rowsRead: 0, rowsWritten: 0 },
      free: { rowsRead: 0, rowsWritten: 0 },
      admit: { rowsRead: 0, rowsWritten: 0 },
    };
    const step = <T>(name: Step, work: () => T): T => {
      const before = this.#queue.cost();
      const out = work();
      const after = this.#queue.cost();
      rows[name].rowsRead += after.rowsRead - before.rowsRead;
      rows[name].rowsWritten += after.rowsWritten - before.rowsWritten;
      return out;
    };
    for (let i = from; i < from + n; i++) {
      step("offer", () =>
        this.#queue.offer([
          {
            id: `c${i}`,
            key: `user:${i % keys}`,
            createdAt: new Date(CYCLE_EPOCH + i).toISOString(),
          },
        ]),
      );
      const oldest = inFlight.shift();
      if (oldest !== undefined) step("free", () => this.#queue.free([oldest]));
      inFlight.push(...step("admit", () => this.#queue.admit(1, Date.now())));
    }
    return { cycles: n, rows, counts: this.#queue.counts() };
  }
}

interface Body {
  name: string;
  from?: number;
  n?: number;
  keys?: number;
}

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const { pathname } = new URL(request.url);
    if (pathname === "/health") return json(200, { ok: true });
    if (request.method !== "POST") return json(404, { error: "not found" });
    const body = (await request.json()) as Body;
    const queue = env.QUEUES.get(env.QUEUES.idFromName(body.name));
    const [from, n, keys] = [body.from ?? 0, body.n ?? 0, Math.max(1, body.keys ?? 1)];
    switch (pathname) {
      case "/seed":
        return json(200, await queue.seed(from, n, keys));
      case "/fill":
        return json(200, await queue.fill(n));
      case "/cycles":
        return json(200, await queue.cycles(from, n, keys));
      default:
        return json(404, { error: "not found" });
    }
  },
} satisfies ExportedHandler<Env>;
