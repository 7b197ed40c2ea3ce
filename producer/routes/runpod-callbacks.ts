// RunPod's calls back into the producer: the completion webhook and the progress reports.
// RunPod signs nothing, so the URL carries `attempt` and an HMAC of "<id>:<attempt>".

import { z } from "zod";
import * as repo from "../../shared/job-repository.ts";
import { applyRunStatus } from "../../shared/job-state.ts";
import { log } from "../../shared/log.ts";
import { progressReport, runpodStatusObject } from "../../shared/schemas.ts";
import { pollAfterSeconds, retrySettings } from "../../shared/settings.ts";
import { verifyAttempt } from "../../shared/signing.ts";
import { type AppContext, apiError, readJsonBody } from "../http.ts";

export const attemptParam = z.coerce.number().int().min(0).max(1_000_000);

/** The verified attempt number, or null when the URL's signature does not hold. */
async function verifiedAttempt(c: AppContext): Promise<number | null> {
  const attempt = attemptParam.safeParse(c.req.query("attempt"));
  const sig = c.req.query("sig");
  const secret = c.env.WEBHOOK_SECRET;
  if (!attempt.success || !sig || !secret) return null;
  const ok = await verifyAttempt(secret, c.req.param("id") ?? "", attempt.data, sig);
  return ok ? attempt.data : null;
}

function badSignature(c: AppContext): Response {
  return apiError(c, 401, "bad_signature", "the URL's signature does not match");
}

/**
 * `POST /runpod/webhook/{id}?attempt=N&sig=HEX`: RunPod's status object for one run. Anything
 * valid answers 200 — applied, or ignored as a duplicate, stale or finished — because RunPod
 * retries every non-200.
 */
export async function runpodWebhook(c: AppContext): Promise<Response> {
  const attempt = await verifiedAttempt(c);
  if (attempt === null) return badSignature(c);
  const body = await readJsonBody(c, runpodStatusObject, { requireJsonContentType: false });
  if (!body.ok) return body.response;

  const job = await repo.getJob(c.env.DB, c.req.param("id") ?? "");
  if (!job) return c.json({ applied: false, outcome: "unknown_job" });
  const outcome = await applyRunStatus(
    {
      db: c.env.DB,
      queue: c.env.EXPORT_QUEUE,
      retry: retrySettings(c.env),
      pollAfterS: pollAfterSeconds(c.env),
    },
    job,
    attempt,
    body.value,
  );
  log("info", "runpod webhook", { job_id: job.id, attempt, status: body.value.status, outcome });
  return c.json({ applied: outcome !== "unchanged", outcome });
}

/** `POST /runpod/progress/{id}?attempt=N&sig=HEX` body `{"progress": 0..100}` → 204. */
export async function runpodProgress(c: AppContext): Promise<Response> {
  const attempt = await verifiedAttempt(c);
  if (attempt === null) return badSignature(c);
  const body = await readJsonBody(c, progressReport, { requireJsonContentType: false });
  if (!body.ok) return body.response;
  await repo.recordProgress(
    c.env.DB,
    c.req.param("id") ?? "",
    attempt,
    Math.floor(body.value.progress),
    pollAfterSeconds(c.env),
  );
  return c.body(null, 204);
}
