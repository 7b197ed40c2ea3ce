import { plannedOutputKey } from "../shared/job-state.ts";
import type { RunRequest } from "../shared/runpod-client.ts";
import type { ConsumerSettings } from "../shared/settings.ts";
import { attemptUrls } from "../shared/signing.ts";
import type { JobRow } from "../shared/sql/jobs/row.ts";

/** The body of `POST /run` for attempt `job.attempt` of a claimed job. */
export async function buildRunRequest(
  job: JobRow,
  settings: ConsumerSettings,
  options: { warm?: boolean } = {},
): Promise<RunRequest> {
  const attempt = job.attempt;
  const urls = await attemptUrls(settings.publicUrl, settings.webhookSecret, job.id, attempt);
  return {
    input: {
      export_job_id: job.id,
      project_id: job.project_id,
      type: job.type,
      input_video_key: job.input_video_key,
      output_video_key: plannedOutputKey(job),
      params: JSON.parse(job.params) as Record<string, unknown>,
      progress_url: urls.progress,
    },
    webhook: urls.webhook,
    policy: {
      executionTimeout: settings.executionTimeoutMs,
      ttl: settings.ttlMs,
      // A batch run never makes RunPod add workers — unless the endpoint has none ready or
      // running: then it goes without the flag, so a batch-only backlog still starts.
      ...(job.priority === "batch" && options.warm ? { lowPriority: true } : {}),
    },
  };
}
