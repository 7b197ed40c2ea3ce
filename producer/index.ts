// The producer Worker: wiring only. Each route is declared once, in its file under routes/
// (createRoute: it validates, types the handler's answers and documents both); here they are
// mounted, and GET /openapi.json serves the document of exactly what is mounted.
import { OpenAPIHono } from "@hono/zod-openapi";
import { cors } from "hono/cors";
import { log } from "../shared/log.ts";
import { mount } from "./api.ts";
import { BOOKMARK_HEADER, d1Session } from "./d1-session.ts";
import { type AppEnv, apiError, defaultHook } from "./http.ts";
import { listJobsForOperators, listJobsForOperatorsRoute } from "./routes/admin-jobs.ts";
import { cancelExport, cancelExportRoute } from "./routes/cancel-export.ts";
import { createClientToken, createClientTokenRoute } from "./routes/client-tokens.ts";
import { createBatch, createBatchRoute } from "./routes/create-batch.ts";
import { createExport, createExportRoute } from "./routes/create-export.ts";
import {
  deleteDeadLetter,
  deleteDeadLetterRoute,
  getDeadLetter,
  getDeadLetterRoute,
  listDeadLetters,
  listDeadLettersRoute,
  replayDeadLetter,
  replayDeadLetterRoute,
} from "./routes/dead-letters.ts";
import { createDownloadUrl, createDownloadUrlRoute } from "./routes/download-url.ts";
import { getExportOutput, getExportOutputRoute } from "./routes/export-output.ts";
import { getExport, getExportRoute } from "./routes/get-export.ts";
import { health, healthRoute } from "./routes/health.ts";
import { getExportEvents, getExportEventsRoute } from "./routes/job-events.ts";
import { listExports, listExportsRoute } from "./routes/list-exports.ts";
import { createLiveTicket, createLiveTicketRoute, openLive, openLiveRoute } from "./routes/live.ts";
import { metrics, metricsRoute } from "./routes/metrics.ts";
import {
  listNotifications,
  listNotificationsRoute,
  redeliver,
  redeliverNotificationRoute,
} from "./routes/notifications.ts";
import { openapiRoute, serveOpenapi } from "./routes/openapi.ts";
import { retryErrorJobs, retryErrorJobsRoute } from "./routes/retry-jobs.ts";
import {
  runpodProgress,
  runpodProgressRoute,
  runpodWebhook,
  runpodWebhookRoute,
} from "./routes/runpod-callbacks.ts";
import { stats, statsRoute } from "./routes/stats.ts";
import { getUsage, usageRoute } from "./routes/usage.ts";

const app = new OpenAPIHono<AppEnv>({ defaultHook });

app.use("*", async (c, next) => {
  const origin = c.env.CORS_ORIGIN;
  if (!origin) return next();
  const preflight = await cors({
    origin,
    allowHeaders: ["Authorization", "Content-Type", "Idempotency-Key", BOOKMARK_HEADER],
  })(c, next);
  if (preflight) return preflight;
  // The frontend's script may read the bookmark and Location; said only to the allowed origin
  // (hono's `exposeHeaders` would say it to any).
  if (c.res.headers.get("access-control-allow-origin")) {
    c.res.headers.set("Access-Control-Expose-Headers", `${BOOKMARK_HEADER}, Location`);
  }
});
app.use("*", d1Session);

mount(app, healthRoute, health);
mount(app, openapiRoute, serveOpenapi(app));

mount(app, createExportRoute, createExport);
mount(app, createBatchRoute, createBatch);
mount(app, listExportsRoute, listExports);
mount(app, getExportRoute, getExport);
mount(app, cancelExportRoute, cancelExport);
mount(app, getExportEventsRoute, getExportEvents);
mount(app, getExportOutputRoute, getExportOutput);
mount(app, createDownloadUrlRoute, createDownloadUrl);
mount(app, createClientTokenRoute, createClientToken);

mount(app, createLiveTicketRoute, createLiveTicket);
mount(app, openLiveRoute, openLive);

mount(app, runpodWebhookRoute, runpodWebhook);
mount(app, runpodProgressRoute, runpodProgress);

mount(app, listDeadLettersRoute, listDeadLetters);
mount(app, getDeadLetterRoute, getDeadLetter);
mount(app, replayDeadLetterRoute, replayDeadLetter);
mount(app, deleteDeadLetterRoute, deleteDeadLetter);
mount(app, statsRoute, stats);
mount(app, metricsRoute, metrics);
mount(app, listNotificationsRoute, listNotifications);
mount(app, redeliverNotificationRoute, redeliver);
mount(app, listJobsForOperatorsRoute, listJobsForOperators);
mount(app, retryErrorJobsRoute, retryErrorJobs);
mount(app, usageRoute, getUsage);

app.notFound((c) => apiError(c, 404, "not_found", `no route for ${c.req.method} ${c.req.path}`));
app.onError((error, c) => {
  log("error", "unhandled error", { path: c.req.path, error: String(error) });
  return apiError(c, 500, "internal_error", "something went wrong; the request may be retried");
});

export default app;
