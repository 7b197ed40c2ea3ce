// A live-status client as the frontend and the dashboard are: it mints a ticket (POST
// /live-tickets), opens GET /live, keeps the highest `version` per job from the snapshot and every
// message, and when its socket closes it reconnects with a fresh ticket; after a reconnect it
// reads the listing of its scope once, as the dashboard does, for what changed while it was
// down outside the new snapshot. What that listing had to repair is counted apart.
import type { Api } from "./api.ts";
import type { Job, LiveMessage } from "./types.ts";
import { sleep } from "./util.ts";

export type LiveScope = { all: true } | { all: false; projectIds: number[] };

const RECONNECT_MS = [250, 500, 1000, 2000, 3000];
const PING_MS = 20_000;

export class LiveClient {
  readonly name: string;
  readonly scope: LiveScope;
  readonly view = new Map<string, Job>();
  /** Every ticket this client minted (the secret scan looks for them in the Workers' output). */
  readonly tickets: string[] = [];
  connects = 0;
  connectFailures = 0;
  closes = 0;
  snapshots = 0;
  messages = 0;
  /** Messages older than what the client already had (arrived out of order, or duplicates). */
  staleMessages = 0;
  catchUps = 0;
  /** Jobs whose version the catch-up listing raised (news the socket never brought). */
  repairedByCatchUp = 0;
  /** When the last snapshot arrived (ms), and when the socket last went down. */
  lastSnapshotAt = 0;
  lastDownAt = 0;
  /** Called for every job this client learns of, newest version or not. */
  onJob: ((job: Job) => void) | null = null;
  /** Called when a snapshot arrives (after a connect). */
  onSnapshot: ((at: number) => void) | null = null;

  readonly #api: Api;
  readonly #wsBase: string;
  #socket: WebSocket | null = null;
  #stopped = false;
  #failuresInRow = 0;
  #ping: ReturnType<typeof setInterval> | undefined;
  #reconnect: ReturnType<typeof setTimeout> | undefined;

  constructor(api: Api, name: string, scope: LiveScope) {
    this.#api = api;
    this.name = name;
    this.scope = scope;
    this.#wsBase = api.base.replace(/^http/, "ws");
  }

  inScope(projectId: number): boolean {
    return this.scope.all || this.scope.projectIds.includes(projectId);
  }

  get up(): boolean {
    return this.#socket !== null && this.lastSnapshotAt > this.lastDownAt;
  }

  /** Keeps `job` if it is newer than what the view has; true when it was. */
  keep(job: Job): boolean {
    const had = this.view.get(job.id);
    if (had && had.version >= job.version) return false;
    this.view.set(job.id, job);
    return true;
  }

  /** Connects and resolves once the first snapshot arrived. */
  async start(): Promise<void> {
    const first = new Promise<void>((resolve) => {
      const previous = this.onSnapshot;
      this.onSnapshot = (at) => {
        this.onSnapshot = previous;
        previous?.(at);
        resolve();
      };
    });
    void this.#connect();
    await first;
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#reconnect);
    clearInterval(this.#ping);
    try {
      this.#socket?.close(1000, "chaos done");
    } catch {}
    this.#socket = null;
  }

  async #connect(): Promise<void> {
    if (this.#stopped) return;
    const answer = await this.#api.request("POST", "/live-tickets", {
      token: this.scope.all ? "admin" : "api",
      body: this.scope.all ? { all_projects: true } : { project_ids: this.scope.projectIds },
    });
    const ticket = (answer.json as { ticket?: string } | undefined)?.ticket;
    if (answer.status !== 201 || !ticket) {
      this.connectFailures++;
      this.#retryLater();
      return;
    }
    this.tickets.push(ticket);
    const ws = new WebSocket(`${this.#wsBase}/live?ticket=${encodeURIComponent(ticket)}`);
    this.#socket = ws;
    let opened = false;
    let reconnecting = false;
    ws.addEventListener("open", () => {
      opened = true;
      this.connects++;
    });
    ws.addEventListener("message", (event) => {
      const data = String(event.data);
      if (data === "pong") return;
      let message: LiveMessage;
      try {
        message = JSON.parse(data) as LiveMessage;
      } catch {
        return;
      }
      if (message.type === "snapshot") {
        this.snapshots++;
        this.#failuresInRow = 0;
        for (const job of message.jobs) this.#learn(job);
        const at = Date.now();
        this.lastSnapshotAt = at;
        clearInterval(this.#ping);
        this.#ping = setInterval(() => {
          try {
            ws.send("ping");
          } catch {}
        }, PING_MS);
        if (this.snapshots > 1) void this.#catchUp();
        this.onSnapshot?.(at);
      } else if (message.type === "job") {
        this.messages++;
        this.#learn(message.job);
      }
    });
    const down = () => {
      if (reconnecting) return;
      reconnecting = true;
      if (this.#socket === ws) this.#socket = null;
      this.lastDownAt = Date.now();
      clearInterval(this.#ping);
      if (opened) this.closes++;
      else this.connectFailures++;
      this.#retryLater();
    };
    ws.addEventListener("close", down);
    ws.addEventListener("error", down);
  }

  #learn(job: Job): void {
    if (!this.inScope(job.project_id)) return;
    if (!this.keep(job)) this.staleMessages++;
    this.onJob?.(job);
  }

  #retryLater(): void {
    if (this.#stopped) return;
    const delay = RECONNECT_MS[Math.min(this.#failuresInRow, RECONNECT_MS.length - 1)] ?? 3000;
    this.#failuresInRow++;
    clearTimeout(this.#reconnect);
    this.#reconnect = setTimeout(() => void this.#connect(), delay);
  }

  /** The scope's whole listing, newest first: what changed while the socket was down. */
  async #catchUp(): Promise<void> {
    this.catchUps++;
    const base = this.scope.all
      ? "/admin/jobs?limit=100"
      : `/exports?${this.scope.projectIds.map((id) => `project_id=${id}`).join("&")}&limit=100`;
    let cursor: string | null = null;
    for (let page = 0; page < 10_000; page++) {
      let answer: { jobs: Job[]; next_cursor: string | null };
      try {
        const url: string = cursor ? `${base}&cursor=${encodeURIComponent(cursor)}` : base;
        answer = await this.#api.read(url, this.scope.all ? "admin" : "api", 5);
      } catch {
        await sleep(1000);
        continue;
      }
      for (const job of answer.jobs) {
        if (this.inScope(job.project_id) && this.keep(job)) this.repairedByCatchUp++;
      }
      cursor = answer.next_cursor;
      if (!cursor || this.#stopped) return;
    }
  }
}
