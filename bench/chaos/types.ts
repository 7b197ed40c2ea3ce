// The shapes the harness reads: the producer's job and timeline, the emulator's run state.

export type JobStatus = "pending" | "processing" | "complete" | "error";

/** A job as `GET /exports/{id}` answers it. */
export interface Job {
  id: string;
  project_id: number;
  user_id: number | null;
  type: string;
  status: JobStatus;
  progress: number;
  input_video_key: string;
  output_video_key: string | null;
  params: Record<string, unknown>;
  error: string | null;
  retry_count: number;
  runpod_job_id: string | null;
  created_at: string;
  started_at: string | null;
  completed_at: string | null;
  due_at: string | null;
  idempotency_key: string | null;
  attempt: number;
  version: number;
  gpu_ms: number;
  supersede_key: string | null;
  input_etag: string | null;
  reuse: boolean;
  follows: string | null;
  reused_from: string | null;
  archived?: true;
}

export interface JobEvent {
  at: string;
  attempt: number;
  type: string;
  runpod_job_id?: string | null;
  detail?: string | null;
}

export type LiveMessage = { type: "snapshot"; jobs: Job[] } | { type: "job"; job: Job };

export type RunStatus =
  | "IN_QUEUE"
  | "IN_PROGRESS"
  | "COMPLETED"
  | "FAILED"
  | "TIMED_OUT"
  | "CANCELLED";

/** `GET /__emulator/jobs/{id}`: everything the emulator knows about one run. */
export interface EmulatorRun {
  id: string;
  endpointId: string;
  status: RunStatus;
  input: {
    export_job_id?: string;
    output_video_key?: string;
    progress_url?: string;
    [key: string]: unknown;
  };
  webhook: string | null;
  plannedOutcome: string;
  progress: number | null;
  output?: unknown;
  error?: string;
  delayTime: number | null;
  executionTime: number | null;
  submittedAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  webhookDropped: boolean;
  webhookDeliveries: { url: string; attempt: number; status: number | null; at: string }[];
  progressCalls: { progress: number; status: number | null; error: string | null }[];
}

/** RunPod's status object as the emulator posts it to a webhook. */
export function statusObjectOf(run: EmulatorRun): Record<string, unknown> {
  const object: Record<string, unknown> = { id: run.id, status: run.status };
  if (run.delayTime !== null) object.delayTime = run.delayTime;
  if (run.executionTime !== null) object.executionTime = run.executionTime;
  if (run.output !== undefined) object.output = run.output;
  if (run.error !== undefined) object.error = run.error;
  return object;
}

/** The `attempt` query parameter of a signed webhook or progress URL, or null. */
export function attemptOfUrl(url: string | null | undefined): number | null {
  if (!url) return null;
  const value = new URL(url).searchParams.get("attempt");
  return value === null ? null : Number(value);
}

export const TERMINAL: ReadonlySet<string> = new Set(["complete", "error"]);
