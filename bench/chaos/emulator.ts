// The RunPod emulator's admin API (emulator/README.md), as the harness uses it.
import type { EmulatorRun } from "./types.ts";
import { sleep } from "./util.ts";

export class EmulatorAdmin {
  readonly url: string;
  readonly endpoint: string;

  constructor(url: string, endpoint: string) {
    this.url = url;
    this.endpoint = endpoint;
  }

  async #json<T>(method: string, route: string, body?: unknown): Promise<T> {
    for (let i = 0; ; i++) {
      try {
        const res = await fetch(`${this.url}${route}`, {
          method,
          headers: body === undefined ? {} : { "content-type": "application/json" },
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(60_000),
        });
        const text = await res.text();
        if (res.ok) return JSON.parse(text) as T;
        if (res.status < 500 || i >= 5)
          throw new Error(`${method} ${route}: ${res.status} ${text}`);
      } catch (error) {
        if (i >= 5) throw error;
      }
      await sleep(200 * (i + 1));
    }
  }

  configure(config: Record<string, unknown>): Promise<unknown> {
    return this.#json("PUT", `/__emulator/endpoints/${this.endpoint}/config`, config);
  }

  async runAnswers(): Promise<Record<string, number>> {
    const stats = await this.#json<{ run_answers: Record<string, number> }>(
      "GET",
      `/__emulator/endpoints/${this.endpoint}/stats`,
    );
    return stats.run_answers;
  }

  async runs(): Promise<EmulatorRun[]> {
    return (
      await this.#json<{ jobs: EmulatorRun[] }>("GET", `/__emulator/jobs?endpoint=${this.endpoint}`)
    ).jobs;
  }

  async run(id: string): Promise<EmulatorRun | null> {
    try {
      return await this.#json<EmulatorRun>("GET", `/__emulator/jobs/${encodeURIComponent(id)}`);
    } catch {
      return null;
    }
  }
}
