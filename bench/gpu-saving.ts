// `npm run gpu-saving`: GPU seconds per export for a realistic mix of exports, with and without
// what saves them (supersede keys, reuse, single flight), side by side in one run on the local
// stack (Workers + the RunPod emulator, whose executionTime is the time a run spent in progress).
//
// The mix (GPU_SAVING_N exports, 1,000 by default, over 50 projects, seeded): 80 % originals
// (distinct params), 10 % repeats (an earlier export of the same project sent again unchanged,
// 0–120 s after it: a double click, a second tab, a teammate), 10 % re-exports (an earlier export
// edited and exported again under its supersede key, 1–60 s after it). The same schedule is
// posted twice on fresh stacks:
//   saving: every export carries its supersede key, reuse on (the default);
//   plain:  no supersede key, `"reuse": false`: every export renders.
// A fixed fleet of 100 workers, 20 s runs (a third of the minute an L4 takes for a one-minute
// export, so that the bench ends in minutes). Prints the figures and writes bench/gpu-saving.json.
// About 8 minutes on a 2-CPU machine.
import path from "node:path";
import { figure, printTable, results } from "./figures/results.ts";
import { ENDPOINT, Fleet, say } from "./fleet-stack.ts";
import { machine, prng, readJson, root, round, sleep, writeResults } from "./support.ts";

const N = Number(process.env.GPU_SAVING_N ?? 1000);
const PROJECTS = 50;
const POST_RATE_PER_S = 20;
const RUN_MS = 20_000;
const WORKERS = 100;
const REPEAT_SHARE = 0.1;
const REEXPORT_SHARE = 0.1;
const REPEAT_WITHIN_MS = 120_000;
const REEXPORT_WITHIN_MS = 60_000;
const EMULATOR: Record<string, string> = {
  RUNPOD_EMULATOR_MAX_WORKERS: String(WORKERS),
  RUNPOD_EMULATOR_RUN_MS: String(RUN_MS),
  RUNPOD_EMULATOR_QUEUE_MS: "0",
  RUNPOD_EMULATOR_PROGRESS_STEPS: "50",
};
const SETTINGS = { RUNPOD_MAX_IN_FLIGHT: "auto", FLEET_POLL_S: "1" };

type Kind = "original" | "repeat" | "reexport";
interface Planned {
  at: number;
  kind: Kind;
  project: number;
  /** The original this export repeats or edits (its own index for an original). */
  of: number;
  index: number;
}

/** The seeded schedule: originals at POST_RATE, repeats and re-exports after their original. */
function schedule(seed = 7): Planned[] {
  const random = prng(seed);
  const originals = Math.round(N * (1 - REPEAT_SHARE - REEXPORT_SHARE));
  const plan: Planned[] = [];
  for (let i = 0; i < originals; i++) {
    plan.push({
      at: (i * 1000) / POST_RATE_PER_S,
      kind: "original",
      project: 1 + (i % PROJECTS),
      of: i,
      index: i,
    });
  }
  for (let i = originals; i < N; i++) {
    const kind: Kind = i < originals + Math.round(N * REPEAT_SHARE) ? "repeat" : "reexport";
    const of = Math.floor(random() * originals);
    const base = plan[of] as Planned;
    const after =
      kind === "repeat"
        ? random() * REPEAT_WITHIN_MS
        : 1000 + random() * (REEXPORT_WITHIN_MS - 1000);
    plan.push({ at: base.at + after, kind, project: base.project, of, index: i });
  }
  return plan.sort((a, b) => a.at - b.at);
}

function bodyOf(p: Planned, saving: boolean): Record<string, unknown> {
  const params: Record<string, unknown> = {
    highlight_regions: [{ start_time: 1 + (p.of % 5), end_time: 9 }],
    take: p.of,
  };
  if (p.kind === "reexport") params.edit = p.index;
  return {
    project_id: p.project,
    user_id: p.project,
    type: "overlay",
    input_video_key: "uploads/demo/sample.mp4",
    params,
    ...(saving ? { supersede_key: `clip-${p.of}` } : { reuse: false }),
  };
}

interface Pass {
  name: string;
  gpuMs: number;
  runs: number;
  cancelledRuns: number;
  cancelledGpuMs: number;
  complete: number;
  error: number;
  reused: number;
  superseded: number;
  drainS: number;
}

interface JobAnswer {
  id: string;
  status: string;
  error: string | null;
  reused_from: string | null;
}

async function pass(fleet: Fleet, name: string, plan: readonly Planned[], saving: boolean) {
  await fleet.start(name, SETTINGS, EMULATOR);
  const s = fleet.s;
  const auth = { authorization: `Bearer ${s.settings.API_TOKEN}` };
  const t0 = Date.now();
  const ids: string[] = [];
  const inflight = new Set<Promise<void>>();
  say(`${name}: posting ${plan.length} exports over ${(plan.at(-1)?.at ?? 0) / 1000} s`);
  for (const p of plan) {
    const wait = t0 + p.at - Date.now();
    if (wait > 0) await sleep(wait);
    while (inflight.size >= 16) await Promise.race(inflight);
    const posting = (async () => {
      for (let attempt = 0; attempt < 10; attempt++) {
        try {
          const res = await fetch(`${s.producerUrl}/exports`, {
            method: "POST",
            headers: {
              ...auth,
              "content-type": "application/json",
              "idempotency-key": `${name}-${p.index}`,
            },
            body: JSON.stringify(bodyOf(p, saving)),
          });
          if (res.status === 202 || res.status === 200) {
            ids.push(((await res.json()) as { job: { id: string } }).job.id);
            return;
          }
          await res.arrayBuffer();
        } catch {}
        await sleep(300);
      }
      throw new Error("POST /exports kept failing");
    })();
    inflight.add(posting);
    void posting.finally(() => inflight.delete(posting));
  }
  await Promise.all(inflight);
  await fleet.drain(ids.length, t0, 600_000);
  const drainS = (Date.now() - t0) / 1000;
  const runs = await fleet.runs();
  const jobs: JobAnswer[] = [];
  for (const id of ids) {
    jobs.push(
      (await readJson<{ job: JobAnswer }>(`${s.producerUrl}/exports/${id}`, { headers: auth })).job,
    );
  }
  const exec = (r: (typeof runs)[number]) =>
    (r as { executionTime?: number | null }).executionTime ?? 0;
  const cancelled = runs.filter((r) => r.status === "CANCELLED");
  const result: Pass = {
    name,
    gpuMs: runs.reduce((n, r) => n + exec(r), 0),
    runs: runs.length,
    cancelledRuns: cancelled.length,
    cancelledGpuMs: cancelled.reduce((n, r) => n + exec(r), 0),
    complete: jobs.filter((j) => j.status === "complete").length,
    error: jobs.filter((j) => j.status === "error").length,
    reused: jobs.filter((j) => j.reused_from !== null).length,
    superseded: jobs.filter((j) => (j.error ?? "").startsWith("superseded by ")).length,
    drainS,
  };
  say(`${name}: ${JSON.stringify(result)}`);
  await fleet.stop();
  return result;
}

const fleet = new Fleet();
try {
  const plan = schedule();
  const saving = await pass(fleet, "saving", plan, true);
  const plain = await pass(fleet, "plain", plan, false);
  const perExport = (p: Pass) => p.gpuMs / 1000 / N;
  figure("gpu_s_per_export_saving", "GPU seconds per export, with supersede and reuse", {
    value: perExport(saving),
    unit: "GPU-s",
    target: "below plain",
    pass: perExport(saving) < perExport(plain),
    note: `${saving.runs} runs for ${N} exports; ${saving.reused} reused, ${saving.superseded} superseded`,
  });
  figure("gpu_s_per_export_plain", "GPU seconds per export, every export rendered", {
    value: perExport(plain),
    unit: "GPU-s",
    target: "info",
    pass: null,
    note: `${plain.runs} runs for ${N} exports`,
  });
  figure("gpu_saving_ratio", "GPU seconds, saving ÷ plain (same mix, same run)", {
    value: round(saving.gpuMs / Math.max(1, plain.gpuMs), 3),
    unit: "×",
    target: `≤ ${round(1 - REPEAT_SHARE, 2)} (repeats cost nothing)`,
    pass: saving.gpuMs / Math.max(1, plain.gpuMs) <= 1 - REPEAT_SHARE,
    note: `superseded runs cancelled at RunPod: ${saving.cancelledRuns} (${round(saving.cancelledGpuMs / 1000, 1)} GPU-s spent before the cancel)`,
  });
  figure("gpu_saving_wasted", "GPU seconds in cancelled (superseded) runs ÷ all, saving", {
    value: round((100 * saving.cancelledGpuMs) / Math.max(1, saving.gpuMs), 2),
    unit: "%",
    target: "info",
    pass: null,
    note: "a superseded run renders until RunPod's /cancel lands",
  });
  printTable();
  Object.assign(results, {
    mix: {
      n: N,
      projects: PROJECTS,
      repeat_share: REPEAT_SHARE,
      reexport_share: REEXPORT_SHARE,
      run_ms: RUN_MS,
      workers: WORKERS,
      endpoint: ENDPOINT,
    },
    passes: { saving, plain },
    machine: machine(),
  });
  writeResults(path.join(root, "bench/gpu-saving.json"), results);
} finally {
  await fleet.close();
}
