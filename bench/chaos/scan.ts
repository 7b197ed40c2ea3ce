// Watches every line the stack's children print (the stack's onOutput): looks for secrets, minted
// tickets and `sig=` values, counts the lines the report needs, and keeps recent and warning
// lines as evidence.
import { bump, type Counts, stripAnsi } from "./util.ts";

/** Children whose output is the Workers' (and wrangler's on their behalf). */
const WORKER_OUTPUT = new Set(["producer", "consumer", "r2-writer", "migrate", "seed"]);

/** Lines counted by the report: label → test. */
const COUNTED: [string, RegExp][] = [
  ["submission timed out", /submission timed out/],
  ["live publication failed", /live publication failed/],
  ["unhandled error", /"message":"unhandled error"/],
  ["freeing dispatch slots failed", /freeing dispatch slots failed/],
  ["queue message dropped by wrangler dev", /Failed to forward message on queue/],
  ["submission failed", /"message":"submission failed"/],
  ["rate limited; released", /rate limited; released/],
  ["unwanted run cancelled", /unwanted run cancelled/],
  ["reconciler step failed", /reconciler step failed/],
  ["reconcile failed for a job", /reconcile failed for a job/],
  ["RunPod cancel failed", /RunPod cancel failed/],
  ["batch could not be processed", /batch could not be processed/],
  ["processing failed", /"message":"processing failed"/],
  ["dead letter recorded", /dead letter recorded/],
];

/** A request the producer answered with a 5xx, from wrangler's request log line. */
export interface LoggedServerError {
  at: number;
  route: string;
  status: number;
}

const REQUEST_LINE = /\[wrangler:info\] (GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS) (\S+) (\d{3}) /;
const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g;

export interface SecretHit {
  source: string;
  what: string;
  line: string;
}

export class OutputScan {
  readonly secrets: [string, string][];
  readonly tickets = new Set<string>();
  /** Hits in the Workers' output (violations) and in the emulator's (RunPod's stand-in). */
  readonly workerHits: SecretHit[] = [];
  readonly emulatorHits: SecretHit[] = [];
  workerHitCount = 0;
  emulatorHitCount = 0;
  readonly counts: Counts = {};
  /** What the producer answered, by route and status (wrangler's request log). */
  readonly producerAnswers = new Map<string, Counts>();
  readonly producer5xx: LoggedServerError[] = [];
  readonly linesBySource: Counts = {};
  /** Warning and error lines of the Workers, with their time (capped). */
  readonly warnings: string[] = [];
  readonly #recent: string[] = [];

  constructor(secrets: Record<string, string>) {
    this.secrets = Object.entries(secrets).filter(([, value]) => value.length >= 8);
  }

  line(source: string, raw: string): void {
    const line = stripAnsi(raw);
    bump(this.linesBySource, source);
    const stamped = `${new Date().toISOString().slice(11, 23)} [${source}] ${line}`;
    for (const [label, test] of COUNTED) if (test.test(line)) bump(this.counts, label);
    if (source === "producer") {
      const request = REQUEST_LINE.exec(line);
      if (request) {
        const [, method, target, status] = request as unknown as [string, string, string, string];
        const route = `${method} ${(target.split("?")[0] ?? "").replace(UUID, ":id")}`;
        const counts = this.producerAnswers.get(route) ?? {};
        this.producerAnswers.set(route, counts);
        bump(counts, status);
        if (Number(status) >= 500) {
          this.producer5xx.push({ at: Date.now(), route, status: Number(status) });
        }
      }
    }
    this.#recent.push(stamped);
    if (this.#recent.length > 5000) this.#recent.shift();
    if (
      WORKER_OUTPUT.has(source) &&
      /WARNING|ERROR|"level":"(warn|error)"|wrangler:(warn|error)/.test(line) &&
      this.warnings.length < 50_000
    ) {
      this.warnings.push(stamped);
    }
    this.#check(source, line);
  }

  /** A ticket minted by a live client: looked for from now on, and in the recent lines. */
  addTicket(ticket: string): void {
    if (this.tickets.has(ticket)) return;
    this.tickets.add(ticket);
    for (const stamped of this.#recent) {
      const source = /^\S+ \[([^\]]+)\]/.exec(stamped)?.[1] ?? "?";
      for (const what of this.#ticketHits(stamped)) this.#hit(source, what, stamped);
    }
  }

  recent(n = 80): string[] {
    return this.#recent.slice(-n);
  }

  /** Warning lines that mention `text` (a job id), for evidence. */
  mentioning(text: string, n = 8): string[] {
    return this.warnings.filter((line) => line.includes(text)).slice(0, n);
  }

  #ticketHits(line: string): string[] {
    const out: string[] = [];
    for (const ticket of this.tickets) {
      const sig = ticket.slice(ticket.lastIndexOf(".") + 1);
      if (line.includes(ticket)) out.push("a minted ticket");
      else if (sig.length >= 32 && line.includes(sig)) out.push("a minted ticket's signature");
    }
    return out;
  }

  #check(source: string, line: string): void {
    const found: string[] = [];
    for (const [name, value] of this.secrets) if (line.includes(value)) found.push(name);
    if (/sig=[0-9a-f]{6,}/i.test(line)) found.push("a sig= value");
    found.push(...this.#ticketHits(line));
    for (const what of found) this.#hit(source, what, line);
  }

  #hit(source: string, what: string, line: string): void {
    const hit = { source, what, line: line.slice(0, 400) };
    if (WORKER_OUTPUT.has(source)) {
      this.workerHitCount++;
      if (this.workerHits.length < 20) this.workerHits.push(hit);
    } else {
      this.emulatorHitCount++;
      if (this.emulatorHits.length < 5) this.emulatorHits.push(hit);
    }
  }
}
