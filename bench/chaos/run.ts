// What a chaos run is asked for (ChaosOptions) and what it records while it runs (ChaosRun): the
// harness (harness.ts) fills it in, the checks (checks.ts) read it.
import type { LocalStack } from "../../scripts/local-stack.ts";
import type { Api } from "./api.ts";
import type { ChaosPorts } from "./config.ts";
import type { EmulatorAdmin } from "./emulator.ts";
import type { LiveClient } from "./live.ts";
import type { OutputScan } from "./scan.ts";
import type { Counts } from "./util.ts";

export interface ChaosOptions {
  n: number;
  ports: ChaosPorts;
  seed?: number;
  /** POST /exports a second (paced); default 20. */
  postRatePerS?: number;
  /** How long after the last fault the jobs may take to end; default max(240 s, n × 100 ms). */
  drainTimeoutMs?: number;
  /** Progress lines; default none. */
  log?: (line: string) => void;
  /** Every line the stack's children print goes here too (for digging into a run). */
  outputFile?: string;
  /** Settings of the Workers over config.ts's SETTINGS (e.g. a fixed RUNPOD_MAX_IN_FLIGHT). */
  settings?: Record<string, string>;
}

export interface CreatedJob {
  index: number;
  key: string;
  projectId: number;
  body: Record<string, unknown>;
  id: string | null;
  postedAt: number;
  duplicate: "concurrent" | "later" | null;
  cancel: { at: number; status: number; error: string | null } | null;
}

export type ProbeKind =
  | "duplicate"
  | "late duplicate"
  | "out-of-order IN_PROGRESS"
  | "progress replay"
  | "stale attempt COMPLETED"
  | "stale attempt replay"
  | "forged: random sig"
  | "forged: no sig"
  | "forged: progress sig"
  | "forged: other attempt";

export interface Probe {
  kind: ProbeKind;
  jobId: string;
  status: number;
  applied: boolean | null;
  /** What the job was just before (status, attempt), and the URL's attempt. */
  before: string;
  violation: string | null;
}

export interface ChaosRun {
  options: Required<Omit<ChaosOptions, "log" | "outputFile" | "settings">> & {
    log: (line: string) => void;
  };
  settings: Record<string, string>;
  stack: LocalStack;
  api: Api;
  emulator: EmulatorAdmin;
  scan: OutputScan;
  live: LiveClient[];
  created: CreatedJob[];
  byId: Map<string, CreatedJob>;
  projects: number;
  dedupe: { concurrent: number; later: number; answers: Counts; violations: string[] };
  /** Duplicate job messages put on the real queue (the local tools Worker), by its answer. */
  queueDuplicates: Counts;
  cancels: Counts;
  probes: Probe[];
  probeSkips: Counts;
  retries: { calls: number; answers: Counts; jobsRetried: number };
  deadLetters: { seen: number; replayAnswers: Counts };
  cron: { calls: number; answers: Counts };
  gate: { states: Counts; transitions: Counts; last: string | null };
  delayWindows: { start: number; end: number }[];
  outage: { start: number; end: number } | null;
  crash: { at: number; restartedAt: number | null; reachableAt: number | null } | null;
  stats: { jobs: Record<string, number>; at: number } | null;
  timings: {
    startedAt: number;
    stackUpAt: number;
    firstPostAt: number;
    postsDoneAt: number;
    activeEndAt: number;
    drainedAt: number | null;
    endAt: number;
  };
}
