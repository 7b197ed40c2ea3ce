// RunPod's calls back into the producer: the completion webhook and the progress reports.
// RunPod signs nothing, so the URL carries `attempt` and an HMAC of "<kind>:<id>:<attempt>".

import { z } from "zod";
import { applyRunStatus, recordProgress } from "../../shared/job-state.ts";
import { log } from "../../shared/log.ts";
import { progressReport, runpodStatusObject } from "../../shared/schemas.ts";
import { type SignedUrlKind, verifyAttempt } from "../../shared/signing.ts";
import * as repo from "../../shared/sql/jobs/reads.ts";
import { jobDeps } from "../deps.ts";
import { type AppContext, apiError, readJsonBody } from "../http.ts";

export const attemptParam = z.coerce.number().int().min(0).max(1_000_000);

/** The verified attempt number, or null when the URL's signature does not hold. */
async function verifiedAttempt(c: AppContext, kind: SignedUrlKind): Promise<number | null> {
  const attempt = attemptParam.safeParse(c.req.query("attempt"));
  const sig = c.req.query("sig");
  const secret = c.env.WEBHOOK_SECRET;
  if (!attempt.success || !sig || !secret) return null;
  const ok = await verifyAttempt(secret, kind, c.req.param("id") ?? "", attempt.data, sig);
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
  const attempt = await verifiedAttempt(c, "webhook");
  if (attempt === null) return badSignature(c);
  const body = await readJsonBody(c, runpodStatusObject, { requireJsonContentType: false });
  if (!body.ok) return body.response;

  const job = await repo.getJob(c.env.DB, c.req.param("id") ?? "");
  if (!job) return c.json({ applied: false, outcome: "unknown_job" });
  const outcome = await applyRunStatus(jobDeps(c), job, attempt, body.value);
  log("info", "runpod webhook", { job_id: job.id, attempt, status: body.value.status, outcome });
  return c.json({ applied: outcome !== "unchanged", outcome });
}

/**
 * `POST /runpod/progress/{id}?attempt=N&sig=HEX` body `{"progress": 0..100, "runpod_job_id"?}` →
 * 204.
 */
export async function runpodProgress(c: AppContext): Promise<Response> {
  const attempt = await verifiedAttempt(c, "progress");
  if (attempt === null) return badSignature(c);
  const body = await readJsonBody(c, progressReport, { requireJsonContentType: false });
  if (!body.ok) return body.response;
  await recordProgress(
    jobDeps(c),
    c.req.param("id") ?? "",
    attempt,
    Math.floor(body.value.progress),
    body.value.runpod_job_id,
  );
  return c.body(null, 204);
}
