// Figure 3, producer overhead (phase D): POST /exports on the producer against a bare producer
// (bench/worker/bare.toml: the producer's own insert into the same D1 file and one send to the
// same queue) and its variants, 32 clients, rounds of 2 s per variant, interleaved.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { devServerFlags, type LocalStack } from "../../scripts/local-stack.ts";
import {
  guarded,
  median,
  quantile,
  root,
  sleep,
  waitUntilUp,
  wranglerEnv,
  wranglerJs,
} from "../support.ts";
import { figure } from "./results.ts";
import {
  CLIENTS,
  consumers,
  countBy,
  elapsed,
  load,
  note,
  onLine,
  PORTS,
  type Posted,
  postExport,
  producer,
  type Run,
  tmp,
} from "./stack.ts";

const OVERHEAD_ROUNDS = 4;
const OVERHEAD_ROUND_MS = 2000;

/** The bare producer (bench/worker/bare.toml) on the stack's state and registry. */
export async function startBare(s: LocalStack): Promise<string> {
  const product = readFileSync(path.join(root, "wrangler.toml"), "utf8");
  const id = /\[\[env\.producer\.d1_databases\]\][^[]*?database_id\s*=\s*"([^"]+)"/.exec(
    product,
  )?.[1];
  if (!id) throw new Error("wrangler.toml: no database_id for the producer's D1");
  const text = readFileSync(path.join(root, "bench/worker/bare.toml"), "utf8")
    .replace(/^database_id\s*=\s*"[^"]*"/m, `database_id = ${JSON.stringify(id)}`)
    .replace(
      /^main\s*=\s*"([^"]+)"/m,
      (_, p: string) => `main = ${JSON.stringify(path.join(root, "bench/worker", p))}`,
    );
  const dir = path.join(tmp, "bare");
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, "wrangler.toml"), text);
  const proc = guarded(
    "bare",
    [
      wranglerJs,
      "dev",
      "--config",
      path.join(dir, "wrangler.toml"),
      ...devServerFlags(PORTS.bare, PORTS.bareInspector),
      "--persist-to",
      s.persistTo,
    ],
    wranglerEnv(path.join(s.persistTo, "..", "registry")),
    onLine,
  );
  consumers.push(proc);
  const url = `http://127.0.0.1:${PORTS.bare}`;
  await waitUntilUp(`${url}/health`, "the bare producer", proc);
  return url;
}

/** The variants of figure 3, each measured in every round, one after the other. */
const OVERHEAD_VARIANTS = [
  { key: "bare", label: "bare (insert + send)", path: "/exports" },
  { key: "bare_r2", label: "bare + R2 HEAD", path: "/exports?with=r2" },
  {
    key: "bare_r2_live",
    label: "bare + R2 HEAD + the live publication",
    path: "/exports?with=r2,live",
  },
  { key: "producer", label: "the producer", path: "" },
] as const;

export interface OverheadSummary {
  requests: number;
  answers: Record<string, number>;
  per_s: number;
  p50_ms: number;
  p99_ms: number;
}

/**
 * Figure 3: the producer against the bare producer and its variants, round after round, the same
 * clients and body; both write the stack's D1 and send to its queue.
 */
async function producerOverhead(s: LocalStack, bareUrl: string, projectBase: number) {
  const posts = new Map<string, { posts: Posted[]; ms: number }>();
  for (let round = 0; round < OVERHEAD_ROUNDS; round++) {
    for (const [v, variant] of OVERHEAD_VARIANTS.entries()) {
      const r = await postForVariant(
        variant.key === "producer" ? producer.url : bareUrl,
        variant.key === "producer" ? "" : variant.path.replace("/exports", ""),
        s.settings.API_TOKEN as string,
        OVERHEAD_ROUND_MS,
        (i) => projectBase + v * 100 + (i % 50),
      );
      const acc = posts.get(variant.key) ?? { posts: [], ms: 0 };
      acc.posts.push(...r.posts);
      acc.ms += r.ms;
      posts.set(variant.key, acc);
      await sleep(300);
    }
  }
  const out: Record<string, OverheadSummary> = {};
  for (const [key, { posts: list, ms }] of posts) {
    const ok = list.filter((p) => p.status === 202);
    const lat = ok.map((p) => p.answeredAt - p.sentAt);
    out[key] = {
      requests: list.length,
      answers: countBy(list.map((p) => p.status)),
      per_s: (ok.length / ms) * 1000,
      p50_ms: median(lat),
      p99_ms: quantile(lat, 0.99),
    };
  }
  return out;
}

/** Like postFor, against `${base}/exports${query}`. */
async function postForVariant(
  base: string,
  query: string,
  token: string,
  ms: number,
  project: (i: number) => number,
): Promise<{ posts: Posted[]; ms: number }> {
  const posts: Posted[] = [];
  let i = 0;
  const t0 = Date.now();
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      while (Date.now() - t0 < ms) posts.push(await postExport(base, token, project(i++), query));
    }),
  );
  return { posts, ms: Date.now() - t0 };
}
export type ProducerOverhead = Awaited<ReturnType<typeof producerOverhead>>;

/** Phase D's second figure, once the bare producer is up (`startBare`) at `bareUrl`. */
export async function measureProducerOverhead(
  run: Run,
  bareUrl: string,
): Promise<ProducerOverhead> {
  load("producer_overhead");
  note("producer vs bare producer: ");
  const overhead = await producerOverhead(run.s, bareUrl, 750_000);
  console.log(
    `${overhead.producer?.per_s.toFixed(0)}/s vs ${overhead.bare?.per_s.toFixed(0)}/s (${elapsed()})`,
  );
  return overhead;
}

/** The rows of figure 3. */
export function reportProducerOverhead(ov: ProducerOverhead): void {
  const real = ov.producer;
  const bare = ov.bare;
  const ratio = (real?.per_s ?? Number.NaN) / (bare?.per_s ?? Number.NaN);
  const variants = OVERHEAD_VARIANTS.map((v) => {
    const o = ov[v.key];
    return `${v.label} ${o?.per_s.toFixed(0)}/s (p50 ${o?.p50_ms} ms, p99 ${o?.p99_ms} ms)`;
  }).join("; ");
  figure("producer_throughput_ratio", "3. POST /exports throughput ÷ bare producer", {
    value: ratio,
    unit: "×",
    target: "≥ 0.8",
    pass: ratio >= 0.8,
    note:
      `${CLIENTS} clients, ${OVERHEAD_ROUNDS} rounds of ${OVERHEAD_ROUND_MS / 1000} s per variant, interleaved: ${variants}. ` +
      "The bare producer (bench/worker/, bare.toml) runs as a third Worker on the stack's state: " +
      "the producer's own insert into the same D1 file and one send to the same queue, whose " +
      "consumer (its one slot taken) only offers the jobs to the dispatcher, for both",
  });
  figure("producer_latency", "3. POST /exports p50 / p99 (32 clients)", {
    value: `${real?.p50_ms} / ${real?.p99_ms} ms`,
    unit: "",
    target: `(bare ${bare?.p50_ms} / ${bare?.p99_ms} ms)`,
    pass: null,
    note: `answers: producer ${JSON.stringify(real?.answers)}, bare ${JSON.stringify(bare?.answers)}`,
  });
}
