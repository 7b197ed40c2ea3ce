// The producer Worker: wiring only. One file per endpoint under routes/.
import { Hono } from "hono";
import { cors } from "hono/cors";
import { log } from "../shared/log.ts";
import { type AppEnv, apiError, apiOrAdminAuth, bearerAuth } from "./http.ts";
import { listJobsForOperators } from "./routes/admin-jobs.ts";
import { cancelExport } from "./routes/cancel-export.ts";
import { createExport } from "./routes/create-export.ts";
import {
  deleteDeadLetter,
  getDeadLetter,
  listDeadLetters,
  replayDeadLetter,
} from "./routes/dead-letters.ts";
import { getExportOutput } from "./routes/export-output.ts";
import { getExport } from "./routes/get-export.ts";
import { health } from "./routes/health.ts";
import { getExportEvents } from "./routes/job-events.ts";
import { listExports } from "./routes/list-exports.ts";
import { createLiveTicket, openLive } from "./routes/live.ts";
import { openapi } from "./routes/openapi.ts";
import { retryErrorJobs } from "./routes/retry-jobs.ts";
import { runpodProgress, runpodWebhook } from "./routes/runpod-callbacks.ts";
import { stats } from "./routes/stats.ts";

const app = new Hono<AppEnv>();

app.use("*", async (c, next) => {
  const origin = c.env.CORS_ORIGIN;
  if (!origin) return next();
  return cors({ origin, allowHeaders: ["Authorization", "Content-Type", "Idempotency-Key"] })(
    c,
    next,
  );
});

app.get("/health", health);
app.get("/openapi.json", openapi);

const exportsApi = bearerAuth("API_TOKEN");
app.post("/exports", exportsApi, createExport);
app.get("/exports", exportsApi, listExports);
app.get("/exports/:id", exportsApi, getExport);
app.post("/exports/:id/cancel", exportsApi, cancelExport);
// The dashboard, which holds only ADMIN_TOKEN, shows timelines and mints operators' tickets.
const apiOrAdmin = apiOrAdminAuth();
app.get("/exports/:id/events", apiOrAdmin, getExportEvents);
app.get("/exports/:id/output", exportsApi, getExportOutput);

app.post("/live-tickets", apiOrAdmin, createLiveTicket);
app.get("/live", openLive);

app.post("/runpod/webhook/:id", runpodWebhook);
app.post("/runpod/progress/:id", runpodProgress);

const adminApi = bearerAuth("ADMIN_TOKEN");
app.get("/dead-letters", adminApi, listDeadLetters);
app.get("/dead-letters/:id", adminApi, getDeadLetter);
app.post("/dead-letters/:id/replay", adminApi, replayDeadLetter);
app.delete("/dead-letters/:id", adminApi, deleteDeadLetter);
app.get("/stats", adminApi, stats);
app.get("/admin/jobs", adminApi, listJobsForOperators);
app.post("/admin/jobs/retry", adminApi, retryErrorJobs);

app.notFound((c) => apiError(c, 404, "not_found", `no route for ${c.req.method} ${c.req.path}`));
app.onError((error, c) => {
  log("error", "unhandled error", { path: c.req.path, error: String(error) });
  return apiError(c, 500, "internal_error", "something went wrong; the request may be retried");
});

export default app;
