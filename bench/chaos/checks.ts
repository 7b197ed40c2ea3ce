// The chaos run's verdict: what D1, the emulator, R2 (through GET /exports/{id}/output), the live
// clients and the captured output say once the jobs have drained. Every check that must hold is a
// violation when it does not, with evidence (job ids, timelines, log lines).
import { RUN_DELAY_MS } from "./config.ts";
import type { LiveClient } from "./live.ts";
import type { ChaosRun, CreatedJob } from "./run.ts";
import { attemptOfUrl, type EmulatorRun, type Job, type JobEvent, TERMINAL } from "./types.ts";
import { bump, type Counts, forEachBounded, pct, secs, showCounts, sleep, total } from "./util.ts";

export interface Violation {
  check: string;
  detail: string;
  evidence: string[];
}

export interface Report {
  rows: [string, string][];
  violations: Violation[];
  /** Wall time of the whole run (stack start → checks done), ms. */
  wallMs: number;
  /** First POST → no job pending or processing, ms; null when it did not drain. */
  drainMs: number | null;
}

/** Genuine failures, by the start of the error text they leave (see classify). */
type ErrorKind =
  | "RunPod FAILED"
  | "RunPod TIMED_OUT"
  | "output missing"
  | "run not found (expired)"
  | "submission 500 (seed CASE)"
  | "cancelled"
  | "rate limited (429)"
  | "outage (503)"
  | "claim timeout (no run recorded)"
  | "submission timed out"
  | "expired"
  | "superseded"
  | "other";

const GENUINE: ReadonlySet<ErrorKind> = new Set<ErrorKind>([
  "RunPod FAILED",
  "RunPod TIMED_OUT",
  "output missing",
  "run not found (expired)",
  "submission 500 (seed CASE)",
  "cancelled",
  "superseded",
]);

export function classify(error: string | null | undefined): ErrorKind {
  const text = error ?? "";
  if (text === "cancelled") return "cancelled";
  if (text.startsWith("superseded by ")) return "superseded";
  if (text.startsWith("RunPod FAILED")) return "RunPod FAILED";
  if (text.startsWith("RunPod TIMED_OUT")) return "RunPod TIMED_OUT";
  if (text.startsWith("output missing")) return "output missing";
  if (/not found \(expired\)/.test(text)) return "run not found (expired)";
  if (/answered HTTP 500\b/.test(text)) return "submission 500 (seed CASE)";
  if (/HTTP 429\b/.test(text)) return "rate limited (429)";
  if (/HTTP 503\b|service unavailable/.test(text)) return "outage (503)";
  if (/no RunPod run recorded/.test(text)) return "claim timeout (no run recorded)";
  if (/timed out/.test(text)) return "submission timed out";
  if (text.startsWith("expired")) return "expired";
  return "other";
}

/** JSON with sorted keys, to compare two answers of the same job. */
function stable(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stable).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.entries(value)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([k, v]) => `${JSON.stringify(k)}:${stable(v)}`)
      .join(",")}}`;
  }
  return JSON.stringify(value);
}

/**
 * A job as its versions define it: without `queue`, the API's estimate, which is not part of the
 * row (live `job` messages leave it out; `queue` messages carry it).
 */
function versioned(job: Job): Record<string, unknown> {
  const { queue: _queue, ...rest } = job as unknown as Record<string, unknown>;
  return rest;
}

function differingFields(job: Job, other: Job): string[] {
  const [a, b] = [versioned(job), versioned(other)];
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys].filter((key) => stable(a[key]) !== stable(b[key]));
}

const summary = (job: Job | undefined) =>
  job
    ? `${job.id} project ${job.project_id} ${job.status} attempt ${job.attempt} retry_count ` +
      `${job.retry_count} v${job.version} run ${job.runpod_job_id ?? "-"} error ${JSON.stringify(job.error)}`
    : "(no job)";

async function listAll(run: ChaosRun): Promise<Map<string, Job>> {
  const projects = Array.from({ length: run.projects }, (_, i) => i + 1);
  const jobs = new Map<string, Job>();
  for (let i = 0; i < projects.length; i += 100) {
    const query = projects
      .slice(i, i + 100)
      .map((id) => `project_id=${id}`)
      .join("&");
    let cursor: string | null = null;
    do {
      const url: string = `/exports?${query}&limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
      const page = await run.api.read<{ jobs: Job[]; next_cursor: string | null }>(url);
      for (const job of page.jobs) jobs.set(job.id, job);
      cursor = page.next_cursor;
    } while (cursor);
  }
  return jobs;
}

/** GET /exports/{id}: the job, or null for a 404 (5xx and network errors are tried again). */
async function readJob(run: ChaosRun, id: string): Promise<Job | null> {
  for (let i = 0; ; i++) {
    const answer = await run.api.request("GET", `/exports/${id}`);
    if (answer.status === 200) return (answer.json as { job: Job }).job;
    if ((answer.status !== 0 && answer.status < 500) || i >= 5) return null;
    await sleep(500 * (i + 1));
  }
}

export async function verify(run: ChaosRun): Promise<Report> {
  const { api, emulator, scan, options } = run;
  const violations: Violation[] = [];
  const rows: [string, string][] = [];
  const timelines = new Map<string, JobEvent[]>();
  const d1 = await listAll(run);
  // Filled once D1 has been read: a run is at the emulator before D1 hears of its end.
  const runsByJob = new Map<string, EmulatorRun[]>();
  const created = run.created.filter((job): job is CreatedJob & { id: string } => job.id !== null);
  const createdIds = new Set(created.map((job) => job.id));
  const cancelledByUs = new Set(
    created.filter((job) => job.cancel?.status === 200).map((job) => job.id),
  );

  const timeline = async (id: string): Promise<JobEvent[]> => {
    const had = timelines.get(id);
    if (had) return had;
    const answer = await api.request("GET", `/exports/${id}/events`);
    const events = answer.status === 200 ? (answer.json as { events: JobEvent[] }).events : [];
    timelines.set(id, events);
    return events;
  };
  const evidenceOf = async (ids: string[], note?: (id: string) => string): Promise<string[]> => {
    const out: string[] = [];
    for (const id of ids.slice(0, 3)) {
      out.push(`job ${summary(d1.get(id))}${note ? ` — ${note(id)}` : ""}`);
      const runsOf = runsByJob.get(id) ?? [];
      for (const r of runsOf) {
        out.push(
          `    run ${r.id} attempt ${attemptOfUrl(r.webhook)} ${r.status} submitted ${r.submittedAt}` +
            ` webhook ${r.webhookDropped ? "dropped" : `${r.webhookDeliveries.length} deliveries`}`,
        );
      }
      for (const e of await timeline(id)) {
        const detail = e.detail ? ` ${e.detail}` : "";
        const runId = e.runpod_job_id ? ` run ${e.runpod_job_id}` : "";
        out.push(`    ${e.at}  attempt ${e.attempt}  ${e.type}${runId}${detail}`);
      }
      for (const line of scan.mentioning(id, 5)) out.push(`    log: ${line.slice(0, 300)}`);
    }
    if (ids.length > 3) out.push(`  … and ${ids.length - 3} more: ${ids.slice(3, 20).join(", ")}`);
    return out;
  };
  const fail = async (
    check: string,
    detail: string,
    ids: string[] = [],
    note?: (id: string) => string,
  ) => {
    violations.push({ check, detail, evidence: await evidenceOf(ids, note) });
  };

  // ---- jobs lost, extra, not terminal: every created job read with GET /exports/{id} ----
  const lost: string[] = [];
  const listed = new Set(d1.keys());
  await forEachBounded([...createdIds], 16, async (id) => {
    const job = await readJob(run, id);
    if (job) d1.set(id, job);
    else {
      lost.push(id);
      d1.delete(id);
    }
  });
  const runs = await emulator.runs();
  const runAnswers = await emulator.runAnswers();
  for (const r of runs) {
    const id = r.input.export_job_id;
    if (typeof id !== "string") continue;
    const list = runsByJob.get(id) ?? [];
    list.push(r);
    runsByJob.set(id, list);
  }
  const unlisted = [...createdIds].filter((id) => d1.has(id) && !listed.has(id));
  if (unlisted.length > 0) {
    await fail("jobs missing from GET /exports", `${unlisted.length} job(s)`, unlisted);
  }
  const extra = [...d1.keys()].filter((id) => !createdIds.has(id));
  const neverCreated = run.created.filter((job) => job.id === null);
  const notTerminal = created.filter((job) => {
    const status = d1.get(job.id)?.status;
    return status === "pending" || status === "processing";
  });
  if (lost.length > 0)
    await fail("jobs lost", `${lost.length} created job(s) no longer exist`, lost);
  if (extra.length > 0) {
    await fail("jobs not asked for", `${extra.length} job(s) in D1 that no POST answered`, extra);
  }
  if (neverCreated.length > 0) {
    violations.push({
      check: "POST /exports failed",
      detail: `${neverCreated.length} job(s) never got an id after 8 tries`,
      evidence: neverCreated.slice(0, 5).map((job) => `key ${job.key}`),
    });
  }
  if (notTerminal.length > 0) {
    await fail(
      "jobs not terminal",
      `${notTerminal.length} job(s) still pending or processing after the drain deadline`,
      notTerminal.map((job) => job.id),
    );
  }

  // ---- complete: a COMPLETED run of the current attempt, output in R2 ----
  const complete = created.filter((job) => d1.get(job.id)?.status === "complete");
  const badComplete: string[] = [];
  const noOutput: string[] = [];
  const why = new Map<string, string>();
  let reused = 0;
  await forEachBounded(complete, 16, async ({ id }) => {
    const job = d1.get(id) as Job;
    const runsOf = runsByJob.get(id) ?? [];
    const done = runsOf.find(
      (r) => r.status === "COMPLETED" && attemptOfUrl(r.webhook) === job.attempt,
    );
    if (job.reused_from !== null) {
      // A reuse: no run of its own; the job it copied is a complete one of the same project,
      // identical to it, and the copy is checked below with the other outputs.
      reused += 1;
      const source = d1.get(job.reused_from) ?? (await readJob(run, job.reused_from));
      const identical =
        source?.status === "complete" &&
        source.project_id === job.project_id &&
        source.type === job.type &&
        source.input_video_key === job.input_video_key &&
        source.input_etag === job.input_etag &&
        stable(source.params) === stable(job.params);
      if (!identical) {
        badComplete.push(id);
        why.set(id, `reused from ${job.reused_from}, which is not an identical complete job`);
      }
    } else if (!done) {
      badComplete.push(id);
      why.set(id, "no COMPLETED run of its current attempt at the emulator");
    } else if (done.id !== job.runpod_job_id) {
      badComplete.push(id);
      why.set(
        id,
        `the current attempt's COMPLETED run is ${done.id}, D1 names ${job.runpod_job_id}`,
      );
    }
    const output = await api.request("GET", `/exports/${id}/output`);
    if (output.status !== 200) {
      noOutput.push(id);
      why.set(
        id,
        `GET /exports/${id}/output answered ${output.status}: ${output.text.slice(0, 120)}`,
      );
    }
  });
  if (badComplete.length > 0) {
    await fail(
      "complete without a COMPLETED run of its attempt (or an identical job's output)",
      `${badComplete.length} job(s)`,
      badComplete,
      (id) => why.get(id) ?? "",
    );
  }
  if (noOutput.length > 0) {
    await fail(
      "complete without its output",
      `${noOutput.length} job(s)`,
      noOutput,
      (id) => why.get(id) ?? "",
    );
  }

  // ---- retry_count ----
  const retryCounts: Counts = {};
  const overRetried: string[] = [];
  for (const { id } of created) {
    const job = d1.get(id);
    if (!job) continue;
    bump(retryCounts, String(job.retry_count));
    if (job.retry_count > 4) overRetried.push(id);
  }
  if (overRetried.length > 0) {
    await fail("retry_count > 4", `${overRetried.length} job(s)`, overRetried);
  }

  // ---- timelines: every job that did anything but one clean attempt ----
  const needsTimeline = created
    .map((job) => job.id)
    .filter((id) => {
      const job = d1.get(id);
      const runsOf = runsByJob.get(id) ?? [];
      return (
        job?.status !== "complete" ||
        job.attempt !== 1 ||
        runsOf.length !== 1 ||
        runsOf[0]?.id !== job.runpod_job_id
      );
    });
  await forEachBounded(needsTimeline, 12, async (id) => {
    await timeline(id);
  });

  // ---- jobs in error, and what each counted failure was ----
  const errorKinds: Counts = {};
  const notGenuine: string[] = [];
  const notViaCase: string[] = [];
  const cancelledNotByUs: string[] = [];
  const supersededWrongly: string[] = [];
  const failureEvents: Counts = {};
  const helpedAlong: Counts = {};
  const helpedAlongIds: string[] = [];
  for (const events of timelines.values()) {
    for (const e of events) {
      if (e.type === "submit_failed" || e.type === "failed")
        bump(failureEvents, classify(e.detail));
    }
  }
  for (const { id } of created) {
    const job = d1.get(id);
    if (job?.status !== "error") continue;
    const kind = classify(job.error);
    bump(errorKinds, kind);
    if (kind === "cancelled") {
      if (!cancelledByUs.has(id)) cancelledNotByUs.push(id);
      continue;
    }
    if (kind === "superseded") {
      // By a job we posted later under the same supersede key, which is not identical to it.
      const by = d1.get((job.error ?? "").slice("superseded by ".length));
      if (
        !by ||
        by.supersede_key !== job.supersede_key ||
        by.created_at < job.created_at ||
        (stable(by.params) === stable(job.params) && by.type === job.type && by.reuse)
      ) {
        supersededWrongly.push(id);
      }
      continue;
    }
    if (!GENUINE.has(kind)) notGenuine.push(id);
    else if (job.retry_count !== 4) notViaCase.push(id);
    // The failures that brought it there: those since its last operator retry or replay.
    const events = await timeline(id);
    const lastReset = events.findLastIndex((e) => e.type === "retried" || e.type === "replayed");
    for (const e of events.slice(lastReset + 1)) {
      if (e.type !== "submit_failed" && e.type !== "failed") continue;
      const cause = classify(e.detail);
      if (!GENUINE.has(cause)) {
        bump(helpedAlong, cause);
        if (!helpedAlongIds.includes(id)) helpedAlongIds.push(id);
      }
    }
  }
  if (notGenuine.length > 0) {
    await fail(
      "error without a genuine failure",
      `${notGenuine.length} job(s) ended in error on: ${showCounts(
        Object.fromEntries(
          Object.entries(errorKinds).filter(([kind]) => !GENUINE.has(kind as ErrorKind)),
        ),
      )}`,
      notGenuine,
    );
  }
  if (notViaCase.length > 0) {
    await fail(
      "error without the seed's CASE",
      `${notViaCase.length} job(s) in error with a failure's text but retry_count ≠ 4`,
      notViaCase,
    );
  }
  if (cancelledNotByUs.length > 0) {
    await fail("cancelled by nobody", `${cancelledNotByUs.length} job(s)`, cancelledNotByUs);
  }
  if (supersededWrongly.length > 0) {
    await fail(
      "superseded by no newer job under its key (or by an identical one)",
      `${supersededWrongly.length} job(s)`,
      supersededWrongly,
    );
  }
  const cancelNotKept = created.filter(
    (job) => job.cancel?.status === 200 && d1.get(job.id)?.error !== "cancelled",
  );
  if (cancelNotKept.length > 0) {
    await fail(
      "cancel not kept",
      `${cancelNotKept.length} job(s) answered 200 to cancel but did not end 'cancelled'`,
      cancelNotKept.map((job) => job.id),
    );
  }

  // ---- RunPod runs per job ----
  const inWindow = (at: number) =>
    run.delayWindows.some((w) => at >= w.start - 50 && at <= (w.end || Date.now()) + 50);
  const crash = run.crash;
  const nearCrash = (at: number) => crash !== null && at >= crash.at - 5000 && at <= crash.at + 500;
  let runsTotal = 0;
  let attemptsTotal = 0;
  let maxRuns = 0;
  let delayedRuns = 0;
  const doubleSubmitted: string[] = [];
  const overRun: string[] = [];
  const orphans: Counts = {};
  const orphanGpuMs: Counts = {};
  const runStatuses: Counts = {};
  let gpuMs = 0;
  /**
   * GPU time by what became of the run's result: the job's output, a failure, or discarded —
   * wasted: the job was superseded or cancelled, the run was a duplicate nobody recorded, or it
   * belonged to an attempt that was no longer current (stale).
   */
  const gpuByUse: Counts = {};
  const useOf = (job: Job | undefined, r: (typeof runs)[number], events?: JobEvent[]) => {
    if (r.status === "FAILED" || r.status === "TIMED_OUT") return "failed run";
    if (job?.status === "complete" && r.id === job.runpod_job_id) return "output";
    const kind = classify(job?.error);
    if (job?.status === "error" && (kind === "superseded" || kind === "cancelled")) {
      return `wasted: ${kind}`;
    }
    const known =
      r.id === job?.runpod_job_id || (events ?? []).some((e) => e.runpod_job_id === r.id);
    return known ? "wasted: stale" : "wasted: duplicate";
  };
  let cancelledRunsGpuMs = 0;
  let runsAfterCancel = 0;
  for (const { id } of created) {
    const job = d1.get(id);
    const runsOf = runsByJob.get(id) ?? [];
    runsTotal += runsOf.length;
    attemptsTotal += job?.attempt ?? 0;
    maxRuns = Math.max(maxRuns, runsOf.length);
    const byAttempt = new Map<number, number>();
    const events = timelines.get(id);
    const recorded = new Set(
      (events ?? []).filter((e) => e.type === "submitted").map((e) => e.runpod_job_id),
    );
    let timeoutDuplicates = 0;
    for (const r of runsOf) {
      const attempt = attemptOfUrl(r.webhook) ?? -1;
      byAttempt.set(attempt, (byAttempt.get(attempt) ?? 0) + 1);
      bump(runStatuses, r.status);
      gpuMs += r.executionTime ?? 0;
      bump(gpuByUse, useOf(job, r, events), r.executionTime ?? 0);
      const submitted = Date.parse(r.submittedAt);
      if (inWindow(submitted)) delayedRuns++;
      if (cancelledByUs.has(id)) {
        const cancelAt = run.created.find((c) => c.id === id)?.cancel?.at ?? 0;
        if (r.finishedAt && Date.parse(r.finishedAt) > cancelAt && r.status !== "CANCELLED") {
          runsAfterCancel++;
        }
        cancelledRunsGpuMs += r.executionTime ?? 0;
      }
      // Recorded by the consumer, or adopted from its news (a webhook or a poll of its attempt).
      const adopted =
        events === undefined ||
        recorded.has(r.id) ||
        r.id === job?.runpod_job_id ||
        events.some(
          (e) =>
            e.runpod_job_id === r.id ||
            (e.attempt === attempt &&
              !e.runpod_job_id &&
              ["completed", "failed", "cancelled"].includes(e.type) &&
              (e.detail ?? "").startsWith(`RunPod ${r.status}`)),
        );
      if (adopted) continue;
      const cause = inWindow(submitted)
        ? "client timeout (delayed /run)"
        : nearCrash(submitted)
          ? "consumer crash"
          : "other";
      if (cause === "client timeout (delayed /run)") timeoutDuplicates++;
      bump(orphans, cause);
      bump(orphanGpuMs, cause, r.executionTime ?? 0);
    }
    if ([...byAttempt.values()].some((n) => n > 1)) doubleSubmitted.push(id);
    if (job && runsOf.length > job.attempt + timeoutDuplicates) overRun.push(id);
  }
  if (doubleSubmitted.length > 0) {
    await fail(
      "more than one RunPod run for one attempt",
      `${doubleSubmitted.length} job(s)`,
      doubleSubmitted,
    );
  }
  if (overRun.length > 0) {
    await fail(
      "RunPod runs > attempts + client-timeout duplicates",
      `${overRun.length} job(s)`,
      overRun,
    );
  }

  // ---- producer 5xx: every request it answered (wrangler's request log), ours or RunPod's ----
  const downFrom = crash?.at ?? Number.POSITIVE_INFINITY;
  const downTo = (crash?.reachableAt ?? run.timings.endAt) || Date.now();
  const expected5xx: Counts = {};
  const unexpected5xx: Counts = {};
  for (const error of scan.producer5xx) {
    const key = `${error.route} ${error.status}`;
    // GET /live's Durable Object lives in the consumer: down with it, and until the producer
    // finds the restarted consumer again.
    const duringCrash = error.at >= downFrom && error.at <= downTo + 5000;
    bump(duringCrash && error.route === "GET /live" ? expected5xx : unexpected5xx, key);
  }
  if (total(unexpected5xx) > 0) {
    const samples = api.serverErrors
      .filter((e) => e.status !== "network")
      .slice(0, 8)
      .map(
        (e) => `${new Date(e.at).toISOString().slice(11, 23)} ${e.route} ${e.status}: ${e.detail}`,
      );
    const logged = scan.warnings.filter(
      (line) => /unhandled error/.test(line) && !/"path":"\/live"/.test(line),
    );
    violations.push({
      check: "producer 5xx",
      detail: showCounts(unexpected5xx),
      evidence: [...samples, ...logged.slice(0, 8).map((line) => `log: ${line.slice(0, 300)}`)],
    });
  }
  const unanswered = api.serverErrors.filter((e) => e.status === "network");
  const unansweredCounts: Counts = {};
  for (const e of unanswered) bump(unansweredCounts, e.route);
  if (unanswered.length > 0) {
    violations.push({
      check: "producer requests without an answer",
      detail: showCounts(unansweredCounts),
      evidence: unanswered
        .slice(0, 8)
        .map((e) => `${new Date(e.at).toISOString().slice(11, 23)} ${e.route}: ${e.detail}`),
    });
  }
  const webhookDeliveries: Counts = {};
  const progressCalls: Counts = {};
  for (const r of runs) {
    for (const d of r.webhookDeliveries) bump(webhookDeliveries, String(d.status ?? "failed"));
    for (const c of r.progressCalls ?? []) bump(progressCalls, String(c.status ?? "failed"));
  }

  // ---- live clients against D1 ----
  const liveRows: string[] = [];
  const liveDiffs = new Map<LiveClient, { id: string; why: string }[]>();
  for (let round = 0; round < 4; round++) {
    let any = false;
    for (const client of run.live) {
      const diffs: { id: string; why: string }[] = [];
      for (const { id, projectId } of created) {
        if (!client.inScope(projectId)) continue;
        const truth = d1.get(id);
        if (!truth) continue;
        // A job still running (a run that did not drain) moves on while it is compared.
        if (!TERMINAL.has(truth.status)) continue;
        const seen = client.view.get(id);
        if (!seen) diffs.push({ id, why: "never seen" });
        else if (stable(versioned(seen)) !== stable(versioned(truth))) {
          const relation =
            seen.version < truth.version
              ? `behind (v${seen.version} < v${truth.version})`
              : seen.version > truth.version
                ? `ahead (v${seen.version} > v${truth.version})`
                : `same version v${seen.version}`;
          diffs.push({
            id,
            why: `${relation}; differs in ${differingFields(seen, truth).join(", ")}`,
          });
        }
      }
      liveDiffs.set(client, diffs);
      if (diffs.length > 0) any = true;
    }
    if (!any || round === 3) break;
    // A message may still be on its way: wait, then read the differing jobs again.
    await sleep(2000);
    for (const diffs of liveDiffs.values()) {
      for (const { id } of diffs) {
        const job = await readJob(run, id);
        if (job) d1.set(id, job);
      }
    }
  }
  for (const client of run.live) {
    const diffs = liveDiffs.get(client) ?? [];
    const inScope = created.filter(
      (job) => client.inScope(job.projectId) && TERMINAL.has(d1.get(job.id)?.status ?? ""),
    ).length;
    liveRows.push(
      `${client.name}: ${inScope} finished jobs compared, ${client.messages} messages, ${client.snapshots} snapshots, ` +
        `${client.closes} drops, ${client.connectFailures} failed connects (GET /live not 101), catch-up repaired ` +
        `${client.repairedByCatchUp}, ${diffs.length} differ from D1`,
    );
    if (diffs.length > 0) {
      const kinds: Counts = {};
      for (const d of diffs) bump(kinds, d.why.replace(/v\d+/g, "v…"));
      await fail(
        "live view differs from D1",
        `${client.name}: ${diffs.length} of ${inScope} jobs (${showCounts(kinds)})`,
        diffs.map((d) => d.id),
        (id) => diffs.find((d) => d.id === id)?.why ?? "",
      );
    }
  }

  // ---- output scan ----
  if (scan.workerHitCount > 0) {
    violations.push({
      check: "secret in the Workers' output",
      detail: `${scan.workerHitCount} line(s)`,
      evidence: scan.workerHits.map((hit) => `[${hit.source}] ${hit.what}: ${hit.line}`),
    });
  }

  // ---- webhooks the harness re-posted, idempotency, cancels ----
  const probeCounts: Counts = {};
  const probeViolations = run.probes.filter((probe) => probe.violation !== null);
  for (const probe of run.probes) {
    bump(
      probeCounts,
      `${probe.kind} ${probe.status}${probe.applied === null ? "" : ` applied=${probe.applied}`}`,
    );
  }
  if (probeViolations.length > 0) {
    await fail(
      "webhook probe changed a job or was not refused",
      `${probeViolations.length} probe(s): ${showCounts(
        Object.fromEntries(
          [...new Set(probeViolations.map((p) => p.kind))].map((kind) => [
            kind,
            probeViolations.filter((p) => p.kind === kind).length,
          ]),
        ),
      )}`,
      [...new Set(probeViolations.map((p) => p.jobId))],
      (id) => {
        const p = probeViolations.find((probe) => probe.jobId === id);
        return p ? `${p.kind}: ${p.violation} (before: ${p.before})` : "";
      },
    );
  }
  if (run.dedupe.violations.length > 0) {
    violations.push({
      check: "Idempotency-Key duplicates not deduplicated",
      detail: `${run.dedupe.violations.length}`,
      evidence: run.dedupe.violations.slice(0, 10),
    });
  }
  const cancelOther = Object.entries(run.cancels).filter(([s]) => s !== "200" && s !== "409");
  if (cancelOther.length > 0) {
    violations.push({
      check: "cancel answered neither 200 nor 409",
      detail: showCounts(Object.fromEntries(cancelOther)),
      evidence: [],
    });
  }
  const drainMs =
    run.timings.drainedAt === null ? null : run.timings.drainedAt - run.timings.firstPostAt;
  if (drainMs === null) {
    violations.push({
      check: "not drained",
      detail: `jobs still active ${secs(options.drainTimeoutMs)} after the faults ended`,
      evidence: [],
    });
  }

  // ---- the table ----
  const wastedMs = Object.entries(gpuByUse)
    .filter(([use]) => use.startsWith("wasted"))
    .reduce((n, [, v]) => n + v, 0);
  const superseded = created.filter(
    (job) => classify(d1.get(job.id)?.error) === "superseded",
  ).length;
  const runCalls = total(runAnswers);
  const timedOut = scan.counts["submission timed out"] ?? 0;
  const finished = runs.filter((r) => ["COMPLETED", "FAILED", "TIMED_OUT"].includes(r.status));
  const failedRuns = finished.filter((r) => r.status !== "COMPLETED").length;
  const dropped = runs.filter((r) => r.webhookDropped).length;
  const webhooksSent = runs.filter(
    (r) => r.webhook && r.status !== "CANCELLED" && r.finishedAt,
  ).length;
  const byStatus: Counts = {};
  for (const { id } of created) bump(byStatus, d1.get(id)?.status ?? "missing");
  const wallMs = Date.now() - run.timings.startedAt;
  const ms = (n: number) => `${(n / 1000).toFixed(1)} GPU-s`;
  const jobsN = created.length;
  rows.push(
    ["jobs (CHAOS_N)", `${options.n} asked, ${jobsN} created over ${run.projects} projects`],
    ["final status", showCounts(byStatus)],
    ["time to drain (first POST → none active)", secs(drainMs)],
    ["POST phase", secs(run.timings.postsDoneAt - run.timings.firstPostAt)],
    ["wall time (stack start → checks done)", secs(wallMs)],
    [
      "jobs lost / not asked for / not terminal",
      `${lost.length} / ${extra.length} / ${notTerminal.length}`,
    ],
    [
      "complete: no COMPLETED run of its attempt / no output",
      `${badComplete.length} / ${noOutput.length} (of ${complete.length}; ${complete.length} GET /output)`,
    ],
    ["retry_count (final)", `${showCounts(retryCounts)}; > 4: ${overRetried.length}`],
    ["error by final text", showCounts(errorKinds)],
    ["error without a genuine failure", String(notGenuine.length)],
    [
      "error jobs with non-genuine failures among their counted ones",
      `${helpedAlongIds.length} (${showCounts(helpedAlong)})`,
    ],
    ["counted failures (timeline submit_failed/failed)", showCounts(failureEvents)],
    ["RunPod /run answers", `${showCounts(runAnswers)} (${runCalls} calls)`],
    ["/run answered 500", pct(runAnswers["500"] ?? 0, runCalls)],
    [
      "/run answered after the client timeout",
      `${timedOut} client timeouts (${pct(timedOut, runCalls)}); ${delayedRuns} runs created in ` +
        `${run.delayWindows.length} windows of ${RUN_DELAY_MS} ms delay`,
    ],
    [
      "/run rate limited (429) / outage (503)",
      `${runAnswers["429"] ?? 0} / ${runAnswers["503"] ?? 0}`,
    ],
    [
      "outage",
      run.outage
        ? `${secs(run.outage.end - run.outage.start)} at +${secs(run.outage.start - run.timings.firstPostAt)}`
        : "none",
    ],
    ["runs by status", showCounts(runStatuses)],
    [
      "runs FAILED or TIMED_OUT",
      `${failedRuns} of ${finished.length} finished (${pct(failedRuns, finished.length)})`,
    ],
    ["webhooks dropped by RunPod", `${dropped} of ${webhooksSent} (${pct(dropped, webhooksSent)})`],
    [
      "RunPod runs per job",
      `${(runsTotal / Math.max(1, jobsN)).toFixed(2)} (max ${maxRuns}); attempts ${attemptsTotal}; ` +
        `runs ${runsTotal}; > one run for an attempt: ${doubleSubmitted.length}; over the bound: ${overRun.length}`,
    ],
    [
      "runs never recorded nor adopted",
      `${showCounts(orphans)}; GPU time wasted: ${
        Object.entries(orphanGpuMs)
          .map(([k, v]) => `${k} ${ms(v)}`)
          .join(", ") || "none"
      } of ${ms(gpuMs)} in all`,
    ],
    [
      "GPU seconds wasted (results discarded) ÷ all",
      `${ms(wastedMs)} of ${ms(gpuMs)} (${pct(wastedMs, gpuMs)}): ${
        Object.entries(gpuByUse)
          .map(([k, v]) => `${k} ${ms(v)}`)
          .join(", ") || "none"
      }; ${reused} job(s) complete by reuse, ${superseded} superseded`,
    ],
    [
      "runs of cancelled jobs",
      `${ms(cancelledRunsGpuMs)}; ${runsAfterCancel} ran on after the cancel`,
    ],
    [
      "Idempotency-Key repeats",
      `${run.dedupe.concurrent} racing, ${run.dedupe.later} later: ${showCounts(run.dedupe.answers)}`,
    ],
    [
      "duplicate queue messages",
      `${total(run.queueDuplicates)} sent: ${showCounts(run.queueDuplicates)}`,
    ],
    ["cancels", `${total(run.cancels)} sent: ${showCounts(run.cancels)}`],
    ["webhooks re-posted by the harness", showCounts(probeCounts)],
    ["probes skipped", showCounts(run.probeSkips)],
    [
      "operators' retries",
      `${run.retries.calls} calls (${showCounts(run.retries.answers)}), ${run.retries.jobsRetried} jobs retried`,
    ],
    [
      "dead letters",
      `${run.deadLetters.seen} seen; replays: ${showCounts(run.deadLetters.replayAnswers)}`,
    ],
    [
      "consumer crash",
      crash
        ? `SIGKILL at +${secs(crash.at - run.timings.firstPostAt)}, up again after ` +
          `${secs((crash.restartedAt ?? crash.at) - crash.at)}; the producer reached its Durable ` +
          `Objects again ${crash.reachableAt ? secs(Math.max(0, crash.reachableAt - (crash.restartedAt ?? crash.at))) : "never"} after the restart`
        : "none",
    ],
    ["reconciler calls", `${run.cron.calls}: ${showCounts(run.cron.answers)}`],
    [
      "gate states seen (GET /stats each second)",
      `${showCounts(run.gate.states)}; ${showCounts(run.gate.transitions)}`,
    ],
    ["producer 5xx (all its requests; violations)", showCounts(unexpected5xx)],
    ["producer 5xx on GET /live while it could not reach the consumer", showCounts(expected5xx)],
    ["producer requests without an answer (30 s)", showCounts(unansweredCounts)],
    [
      "RunPod's webhook deliveries / progress calls, by answer",
      `${showCounts(webhookDeliveries)} / ${showCounts(progressCalls)}`,
    ],
    ...liveRows.map((row): [string, string] => ["live client", row]),
    [
      "secrets / tickets / sig= in Workers' output",
      `${scan.workerHitCount} hits in ${total(scan.linesBySource)} lines (${showCounts(scan.linesBySource)})`,
    ],
    ["… in the emulator's output (RunPod's side, not a Worker)", String(scan.emulatorHitCount)],
    ["Worker log lines of note", showCounts(scan.counts)],
  );
  return { rows, violations, wallMs, drainMs };
}
