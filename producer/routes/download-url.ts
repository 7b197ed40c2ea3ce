// `POST /exports/{id}/download-url`: a URL of `GET /exports/{id}/output` that needs no bearer, good
// for DOWNLOAD_URL_TTL_S (shared/download-url.ts), so the browser fetches the video from the edge
// itself and the frontend's backend never relays its bytes.
import { createRoute, type RouteHandler } from "@hono/zod-openapi";
import { findJob } from "../../shared/archive.ts";
import { downloadQuery } from "../../shared/download-url.ts";
import { signingKey } from "../../shared/keys.ts";
import { tenancySettings } from "../../shared/settings.ts";
import { auth, errorReplies, jobIdParams, projectsOf, reply } from "../api.ts";
import { DownloadUrl } from "../api-schemas.ts";
import { type AppEnv, apiError } from "../http.ts";

export const createDownloadUrlRoute = createRoute({
  method: "post",
  path: "/exports/{id}/download-url",
  operationId: "createDownloadUrl",
  summary:
    "A signed URL of a complete job's output, good for DOWNLOAD_URL_TTL_S (900 s), needing no " +
    "bearer: for <video src> or a download link in the browser",
  tags: ["exports"],
  ...auth("frontend"),
  request: { params: jobIdParams },
  responses: {
    200: reply("the signed URL", DownloadUrl),
    ...errorReplies("frontend", { 404: ["not_found"], 409: ["not_complete"] }),
  },
});

/** `POST /exports/{id}/download-url` → 200 `{url, expires_at}`; 404, 409 not_complete. */
export const createDownloadUrl: RouteHandler<typeof createDownloadUrlRoute, AppEnv> = async (c) => {
  const { id } = c.req.valid("param");
  const key = signingKey(c.env, "download-url");
  if (!key) return apiError(c, 500, "not_configured", "WEBHOOK_SECRET is not set on this Worker");
  const job = await findJob(c.env.DB, c.env.VIDEOS, id, c.var.primaryDb, projectsOf(c));
  if (!job) return apiError(c, 404, "not_found", "no such export job");
  if (job.status !== "complete") {
    return apiError(c, 409, "not_complete", `the job is ${job.status}; there is no output yet`);
  }
  const expiresAt = Date.now() + tenancySettings(c.env).downloadUrlTtlS * 1000;
  const origin = new URL(c.req.url).origin;
  const query = await downloadQuery(await key, job.id, expiresAt);
  return c.json(
    {
      url: `${origin}/exports/${encodeURIComponent(job.id)}/output?${query}`,
      expires_at: new Date(Math.floor(expiresAt / 1000) * 1000).toISOString(),
    },
    200,
  );
};
