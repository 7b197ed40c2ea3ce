/**
 * One JSON line per event, so `wrangler tail` and Workers Logs can filter on fields: `level`, the
 * human `message`, `event` (the message as a stable snake_case name, e.g. `rate_limited_released`)
 * and the fields, among them `job_id` and `attempt` for a job's lines.
 */
export function log(
  level: "info" | "warn" | "error",
  message: string,
  fields: Record<string, unknown> = {},
): void {
  const line = JSON.stringify({ level, event: eventName(message), message, ...fields });
  if (level === "error") console.error(line);
  else if (level === "warn") console.warn(line);
  else console.log(line);
}

/** "RunPod cancel failed; the reconciler tries again" → "runpod_cancel_failed_the_reconciler_tries_again". */
export function eventName(message: string): string {
  return message
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "_")
    .replace(/^_+|_+$/g, "");
}
