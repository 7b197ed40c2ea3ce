// The operators' dashboard: plain DOM, no framework. It calls the producer's admin API through
// reel-exports' typed client (client/index.ts, bundled as reel-exports-client.js), made at sign-in
// with the admin token kept in sessionStorage (this tab only) and forgotten at sign-out.
//
// Jobs are live: the client's watch() follows GET /live for all projects (an operators' ticket,
// fresh for every connection; it pings, and reconnects with a growing wait after a failure), and
// every job message moves its row; the highest `version` of each job wins, whichever came first
// (the snapshot, a listing, a message). While the socket is down the dashboard polls. When the
// server ends a session that was up (4001, LIVE_SESSION_MAX_S after it opened) it is no failure:
// the dashboard watches again at once (a fresh watch, whose first connection does not wait).
import { createReelExportsClient, LIVE_SESSION_ENDED } from "./reel-exports-client.js";

const TOKEN_KEY = "reel-exports-admin-token";
const REFRESH_MS = 2000;
/** Jobs shown, newest first, of those matching the filter. */
const SHOWN_JOBS = 50;
/** Jobs kept in memory (newest first); older ones come back from a listing when needed. */
const KEPT_JOBS = 2000;
/** Stats, dead letters and webhooks follow job changes, at most this often. */
const SIDE_REFRESH_MS = 1000;
/** The error of a job its owner cancelled: such jobs are never retried. */
const CANCELLED = "cancelled";
/** Outbound webhooks shown, newest first, of those matching the Webhooks filter. */
const SHOWN_NOTIFICATIONS = 20;
/** After a redelivery, the Webhooks panel is read again this much later: the try's outcome. */
const REDELIVERY_CHECK_MS = 2000;
/** What the Webhooks panel says when its filter selects nothing, by status ("" = all). */
const NO_NOTIFICATIONS = {
  failed: "No failed deliveries",
  pending: "No pending deliveries",
  delivered: "No delivered notifications",
  "": "No notifications",
};
const $ = (selector) => document.querySelector(selector);

let timer = null;
/**
 * Pending jobs' queue positions by id, from `queue` messages and listings: outside the jobs'
 * versions (a queue message is not a change of the job), the newest estimate wins.
 */
const queues = new Map();

/** "starts in ~N min" for a pending job whose estimate is known, else "". */
function startsIn(job) {
  const queue = job.status === "pending" ? (queues.get(job.id) ?? job.queue) : null;
  if (!queue) return "";
  const minutes = Math.round(queue.eta_s / 60);
  return minutes < 1 ? "starts in <1 min" : `starts in ~${minutes} min`;
}

/** Keeps a queue estimate unless a newer one (by its `at`) is known. */
function keepQueue(id, queue) {
  const seen = queues.get(id);
  if (!queue || (seen && seen.at > queue.at)) return;
  queues.set(id, queue);
}

/** Every job seen, by id: the highest version of each. */
const jobs = new Map();
/** The API's client while signed in, else null. */
let client = null;
/**
 * The live watch (client.watch) while signed in. `up` once its connection's snapshot arrived;
 * `failures` since the last snapshot; `state` the last one the watch reported.
 */
const live = { watch: null, up: false, failures: 0, state: null };
/** The job whose timeline is open. */
let openJobId = null;
let renderQueued = false;
let sideTimer = null;
let timelineTimer = null;
/** The latest listing of the Webhooks panel asked for: an older answer is not shown. */
let notificationsAsked = 0;
let redeliveryTimer = null;

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function say(message) {
  $("#status").textContent = message;
}

/** The typed API (openapi-fetch, client.api); signed out: an "unauthorized" error. */
function api() {
  if (!client) throw new Error("unauthorized");
  return client.api;
}

/**
 * The data of an API call (`{ data, error, response }`), or an Error with the API's code, message
 * and issues; a refused token signs out.
 */
async function ok(call) {
  const { data, error, response } = await call;
  if (response.status === 401) {
    signOut("That token was not accepted.");
    throw new Error("unauthorized");
  }
  if (!response.ok) {
    const issues = (error?.error?.issues ?? []).map((issue) => `; ${issue.message}`).join("");
    throw new Error(
      `${error?.error?.code ?? response.status}: ${error?.error?.message ?? ""}${issues}`,
    );
  }
  return data ?? null;
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/** An ISO time as the job table shows times: "2026-11-24 10:30:00.000" (UTC). */
function utc(iso) {
  return iso ? iso.replace("T", " ").replace(/Z$/, "") : "";
}

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text ?? "";
  return td;
}

function short(id) {
  return id ? id.slice(0, 8) : "";
}

/** The dispatch gate: a badge with its state, why it paused, since when. */
function dispatchNode(dispatch) {
  const wrap = document.createElement("span");
  wrap.className = "dispatch";
  const badge = document.createElement("span");
  badge.id = "dispatch-state";
  const state = dispatch?.state ?? "unknown";
  badge.className = `badge dispatch-${state}`;
  badge.dataset.state = state;
  badge.textContent = state;
  wrap.append(badge);
  const detail = document.createElement("span");
  detail.className = "dispatch-detail";
  if (dispatch) {
    if (dispatch.reason) {
      const reason = document.createElement("span");
      reason.className = "dispatch-reason";
      reason.textContent = dispatch.reason;
      detail.append(reason);
    }
    const since = document.createElement("span");
    since.className = "dispatch-since";
    since.title = dispatch.since;
    since.textContent = `since ${utc(dispatch.since)}`;
    detail.append(since);
  } else {
    detail.textContent = "the dispatch gate could not be reached";
  }
  wrap.append(detail);
  return wrap;
}

function renderStats(stats) {
  const items = [
    ["Dispatch", dispatchNode(stats.dispatch)],
    ["Runs in the last 10 s", stats.dispatch ? stats.dispatch.runs_last_10s : "—"],
    [
      "In flight / cap",
      stats.dispatch ? `${stats.dispatch.in_flight} / ${stats.dispatch.max_in_flight}` : "—",
    ],
    [
      "Waiting for a slot",
      stats.dispatch
        ? `${stats.dispatch.waiting} (${stats.dispatch.waiting_keys} users or projects)`
        : "—",
    ],
    ["Cap", stats.dispatch ? `${stats.dispatch.mode}: ${stats.dispatch.cap_reason}` : "—"],
    [
      "Fleet (RunPod /health)",
      stats.dispatch?.fleet
        ? `${stats.dispatch.fleet.ready} ready, ${stats.dispatch.fleet.running} running, ` +
          `${stats.dispatch.fleet.initializing} starting, ${stats.dispatch.fleet.throttled} throttled, ` +
          `${stats.dispatch.fleet.in_queue} queued`
        : "—",
    ],
    // With several endpoints (RUNPOD_ENDPOINTS): one row per endpoint, the default's first.
    ...Object.entries(stats.dispatch_by_endpoint ?? {})
      .filter(() => Object.keys(stats.dispatch_by_endpoint ?? {}).length > 1)
      .map(([id, d]) => [
        `Endpoint ${id}`,
        d
          ? `${d.state}${d.reason ? ` (${d.reason})` : ""}; ${d.in_flight} / ${d.max_in_flight} in flight, ${d.waiting} waiting`
          : "could not be reached",
      ]),
    ["Archived", stats.archived ?? "—"],
    ["Pending", stats.jobs.pending],
    ["Processing", stats.jobs.processing],
    ["Complete", stats.jobs.complete],
    ["Error", stats.jobs.error],
    ["Oldest pending", stats.oldest_pending_age_s == null ? "—" : `${stats.oldest_pending_age_s}s`],
    ["Processing without run", stats.processing_without_run],
    [
      "Dead letters (not replayed)",
      `${stats.dead_letters.not_replayed} / ${stats.dead_letters.total}`,
    ],
  ];
  $("#stats").replaceChildren(
    ...items.map(([label, value]) => {
      const div = document.createElement("div");
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = label;
      dd.append(value instanceof Node ? value : String(value));
      div.append(dt, dd);
      return div;
    }),
  );
}

/** Keeps `job` unless a newer version of it is known; true when it changed what is known. */
function keep(job) {
  if (job.queue) keepQueue(job.id, job.queue);
  const seen = jobs.get(job.id);
  if (seen && seen.version >= job.version) return false;
  jobs.set(job.id, job);
  return true;
}

const newestFirst = (a, b) =>
  a.created_at === b.created_at ? (a.id < b.id ? 1 : -1) : a.created_at < b.created_at ? 1 : -1;

function forgetOldJobs() {
  if (jobs.size <= KEPT_JOBS) return;
  const old = [...jobs.values()].sort(newestFirst).slice(KEPT_JOBS);
  for (const job of old) if (job.id !== openJobId) jobs.delete(job.id);
}

/** The jobs the filter selects, newest first. */
function shownJobs() {
  const project = $("#filter-project").value.trim();
  const status = $("#filter-status").value;
  return [...jobs.values()]
    .filter(
      (job) =>
        (!project || String(job.project_id) === project) && (!status || job.status === status),
    )
    .sort(newestFirst)
    .slice(0, SHOWN_JOBS);
}

/** Renders the job table once per burst of messages. */
function queueRender() {
  if (renderQueued) return;
  renderQueued = true;
  setTimeout(() => {
    renderQueued = false;
    renderJobs();
  }, 50);
}

/** The status, and for a pending job with an estimate, when it should start. */
function statusCell(job) {
  const td = document.createElement("td");
  const status = document.createElement("span");
  status.className = `job-status status-${job.status}`;
  status.textContent = job.status;
  td.append(status);
  const eta = startsIn(job);
  if (eta) {
    const small = document.createElement("small");
    small.className = "eta";
    const queue = queues.get(job.id) ?? job.queue;
    small.title = `position ${queue.position} in the ${queue.lane} lane (estimated ${queue.at})`;
    small.textContent = eta;
    td.append(" ", small);
  }
  return td;
}

function renderJobs() {
  $("#jobs tbody").replaceChildren(
    ...shownJobs().map((job) => {
      const tr = document.createElement("tr");
      tr.dataset.jobId = job.id;
      tr.dataset.version = String(job.version);
      if (job.id === openJobId) tr.classList.add("selected");
      tr.addEventListener("click", (event) => {
        if (!event.target.closest("button, a")) openTimeline(job.id);
      });
      const id = cell("");
      const link = document.createElement("a");
      link.href = `#job-${job.id}`;
      link.className = "job-link";
      link.title = `${job.id}: show its timeline`;
      link.addEventListener("click", (event) => {
        event.preventDefault();
        openTimeline(job.id);
      });
      const code = document.createElement("code");
      code.textContent = short(job.id);
      link.append(code);
      id.append(link);
      const progress = cell("");
      const bar = document.createElement("progress");
      bar.max = 100;
      bar.value = job.progress;
      bar.setAttribute("aria-label", `progress of job ${short(job.id)}`);
      bar.textContent = `${job.progress}%`;
      progress.append(bar, ` ${job.progress}%`);
      const actions = cell("");
      if (job.status === "error" && job.error !== CANCELLED) {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = "Retry";
        button.setAttribute("aria-label", `Retry job ${short(job.id)}`);
        button.addEventListener("click", () => retryJob(job.id, button));
        actions.append(button);
      }
      tr.append(
        id,
        cell(String(job.project_id)),
        cell(job.type),
        statusCell(job),
        progress,
        cell(String(job.retry_count)),
        cell(job.error, "error"),
        cell(job.runpod_job_id),
        cell(job.created_at),
        actions,
      );
      return tr;
    }),
  );
}

function renderDeadLetters(letters) {
  $("#dead-letters tbody").replaceChildren(
    ...letters.map((letter) => {
      const tr = document.createElement("tr");
      tr.dataset.deadLetterId = letter.id;
      const actions = cell("");
      const label = short(letter.id);
      for (const [name, handler, disabled] of [
        ["Show", () => showDeadLetter(letter.id), false],
        ["Replay", () => replay(letter.id), Boolean(letter.replayed_at) || !letter.job_id],
        ["Delete", () => remove(letter.id), false],
      ]) {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = name;
        button.setAttribute("aria-label", `${name} dead letter ${label}`);
        button.disabled = disabled;
        button.addEventListener("click", handler);
        actions.append(button, " ");
      }
      tr.append(
        cell(label),
        cell(letter.received_at),
        cell(letter.reason),
        cell(short(letter.job_id)),
        cell(letter.job_status),
        cell(letter.replayed_at ?? "no", "replayed"),
        actions,
      );
      return tr;
    }),
  );
}

/**
 * The Webhooks panel's listing, as its filter asks; renderNotifications shows it unless a newer
 * one was asked meanwhile.
 */
async function fetchNotifications() {
  const asked = ++notificationsAsked;
  const status = $("#wh-status").value;
  const query = { limit: SHOWN_NOTIFICATIONS, status: status || undefined };
  const page = await ok(api().GET("/admin/notifications", { params: { query } }));
  return { asked, status, page };
}

/** A job's short id, a link that opens its timeline (in the Jobs panel). */
function jobLink(id) {
  const link = document.createElement("a");
  link.href = `#job-${id}`;
  link.className = "job-link";
  link.title = `${id}: show its timeline`;
  link.addEventListener("click", (event) => {
    event.preventDefault();
    openTimeline(id).then(() => $("#job-detail").scrollIntoView({ block: "nearest" }));
  });
  const code = document.createElement("code");
  code.textContent = short(id);
  link.append(code);
  return link;
}

/** The receiver's last answer: its HTTP status, and the error unless it only repeats it. */
function lastAnswer(notification) {
  const status = notification.last_status == null ? "" : `HTTP ${notification.last_status}`;
  const error = notification.last_error ?? "";
  if (!error || error === status) return status;
  return status ? `${status}: ${error}` : error;
}

function renderNotifications({ asked, status, page }) {
  if (asked !== notificationsAsked) return;
  const notifications = page.notifications;
  $("#notifications tbody").replaceChildren(
    ...notifications.map((notification) => {
      const tr = document.createElement("tr");
      tr.dataset.notificationId = notification.id;
      tr.dataset.jobId = notification.job_id;
      tr.dataset.status = notification.status;
      const job = cell("");
      job.append(jobLink(notification.job_id));
      const state = cell("");
      const badge = document.createElement("span");
      badge.className = `notification-status notification-${notification.status}`;
      badge.textContent = notification.status;
      state.append(badge);
      if (notification.status === "pending" && notification.next_attempt_at) {
        const small = document.createElement("small");
        small.className = "eta";
        small.textContent = `next try ${utc(notification.next_attempt_at)}`;
        state.append(" ", small);
      }
      if (notification.status === "delivered" && notification.delivered_at) {
        state.title = `delivered ${utc(notification.delivered_at)}`;
      }
      const actions = cell("");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = "Redeliver";
      button.setAttribute(
        "aria-label",
        `Redeliver notification of job ${short(notification.job_id)}`,
      );
      button.addEventListener("click", () => redeliver(notification, button));
      actions.append(button);
      const id = cell("");
      const code = document.createElement("code");
      code.textContent = notification.id;
      id.append(code);
      tr.append(
        id,
        job,
        cell(notification.type),
        state,
        cell(String(notification.attempts)),
        cell(lastAnswer(notification), "error"),
        cell(utc(notification.ended_at)),
        actions,
      );
      return tr;
    }),
  );
  $("#wh-empty").textContent = NO_NOTIFICATIONS[status] ?? NO_NOTIFICATIONS[""];
  $("#wh-empty").hidden = notifications.length > 0;
  $("#wh-more").textContent = `Showing the newest ${SHOWN_NOTIFICATIONS}; older ones exist.`;
  $("#wh-more").hidden = !page.next_cursor;
}

/** The Webhooks panel alone: its filter changed, or a redelivery was asked. */
async function refreshNotifications() {
  try {
    renderNotifications(await fetchNotifications());
  } catch (error) {
    if (error.message !== "unauthorized") say(`Webhooks failed: ${error.message}`);
  }
}

/** The newest dead letters. */
function deadLetters() {
  return ok(api().GET("/dead-letters", { params: { query: { limit: 50 } } }));
}

/**
 * Stats, the filter's listing, dead letters and webhooks (the listing merges into what is known).
 */
async function refresh() {
  const query = {
    project_id: $("#filter-project").value.trim() || undefined,
    status: $("#filter-status").value || undefined,
  };
  try {
    const [stats, page, letters, notifications] = await Promise.all([
      ok(api().GET("/stats")),
      ok(api().GET("/admin/jobs", { params: { query } })),
      deadLetters(),
      fetchNotifications(),
    ]);
    renderStats(stats);
    for (const job of page.jobs) keep(job);
    forgetOldJobs();
    renderJobs();
    renderDeadLetters(letters.dead_letters);
    renderNotifications(notifications);
    document.body.dataset.refreshedAt = String(Date.now());
  } catch (error) {
    if (error.message !== "unauthorized") say(`Refresh failed: ${error.message}`);
  }
}

/** While live: stats, dead letters and webhooks after job changes (no polling). */
function queueSideRefresh() {
  if (sideTimer) return;
  sideTimer = setTimeout(async () => {
    sideTimer = null;
    if (!token()) return;
    try {
      const [stats, letters, notifications] = await Promise.all([
        ok(api().GET("/stats")),
        deadLetters(),
        fetchNotifications(),
      ]);
      renderStats(stats);
      renderDeadLetters(letters.dead_letters);
      renderNotifications(notifications);
    } catch (error) {
      if (error.message !== "unauthorized") say(`Refresh failed: ${error.message}`);
    }
  }, SIDE_REFRESH_MS);
}

// ---- live status ----

function showLiveState(state) {
  if (document.body.dataset.live === state) return;
  const badge = $("#live-state");
  badge.textContent = state;
  badge.dataset.state = state;
  badge.className = `badge live-${state}`;
  document.body.dataset.live = state;
}

/** Follows GET /live for all projects (the admin token's ticket) until signed out. */
function startLive() {
  if (!client || live.watch) return;
  const watch = client.watch(
    { allProjects: true },
    {
      // The messages of a watch that was replaced or closed are not ours any more.
      state: (state, detail) => live.watch === watch && onLiveState(state, detail),
      snapshot: (snapshot) => live.watch === watch && onSnapshot(snapshot),
      job: (job) => live.watch === watch && onJob(job),
      queue: (message) => live.watch === watch && onQueue(message),
      progress: (message) => live.watch === watch && onProgress(message),
    },
  );
  live.watch = watch;
  live.state = null;
}

function onLiveState(state, detail) {
  live.state = state;
  if (state === "connecting") {
    showLiveState(live.failures === 0 ? "connecting" : "reconnecting");
  } else if (state === "closed") {
    liveDown(detail?.code === LIVE_SESSION_ENDED);
  }
}

function onSnapshot(snapshot) {
  live.up = true;
  live.failures = 0;
  showLiveState("live");
  schedule(); // polling stops
  for (const job of snapshot) keep(job);
  // What changed while the socket was down and lies outside the snapshot: one listing.
  refresh();
}

function onQueue(message) {
  for (const { id, queue } of message.jobs) keepQueue(id, queue);
  queueRender();
}

/** Progress D1 did not record: for the version we know, it only raises the bar. */
function onProgress(message) {
  const seen = jobs.get(message.job_id);
  if (!seen || seen.version !== message.version || seen.attempt !== message.attempt) return;
  if (seen.status !== "processing" || message.progress <= seen.progress) return;
  jobs.set(seen.id, { ...seen, progress: message.progress });
  queueRender();
}

function onJob(job) {
  if (!keep(job)) return;
  forgetOldJobs();
  queueRender();
  queueSideRefresh();
  if (job.id === openJobId) queueTimeline();
}

/**
 * The socket closed (or never opened): poll meanwhile. The watch reconnects by itself with a fresh
 * ticket after a wait that grows with each failure, or at once when the server ended the session
 * (`sessionEnded`, close code 4001): no failure is counted then.
 */
function liveDown(sessionEnded) {
  live.up = false;
  schedule();
  if (sessionEnded) {
    showLiveState("connecting");
    return;
  }
  showLiveState("polling");
  live.failures += 1;
}

function stopLive() {
  const watch = live.watch;
  Object.assign(live, { watch: null, up: false, failures: 0, state: null });
  watch?.close();
}

// ---- a job's timeline ----

async function openTimeline(id) {
  openJobId = id;
  for (const tr of document.querySelectorAll("#jobs tbody tr")) {
    tr.classList.toggle("selected", tr.dataset.jobId === id);
  }
  $("#job-detail-title").textContent = `Timeline of job ${short(id)}`;
  $("#job-detail").hidden = false;
  await loadTimeline(id);
}

function queueTimeline() {
  clearTimeout(timelineTimer);
  timelineTimer = setTimeout(() => {
    if (openJobId) loadTimeline(openJobId);
  }, 300);
}

async function loadTimeline(id) {
  let body;
  try {
    body = await ok(api().GET("/exports/{id}/events", { params: { path: { id } } }));
  } catch (error) {
    if (error.message !== "unauthorized") say(`Timeline failed: ${error.message}`);
    return;
  }
  if (openJobId !== id) return;
  const job = jobs.get(id);
  $("#job-detail-summary").textContent = job
    ? `${job.id} · project ${job.project_id} · ${job.type} · ${job.status} ${job.progress}% · attempt ${job.attempt} · version ${job.version}`
    : id;
  $("#job-timeline").replaceChildren(
    ...body.events.map((event) => {
      const li = document.createElement("li");
      li.dataset.type = event.type;
      const at = document.createElement("time");
      at.textContent = event.at;
      const type = document.createElement("strong");
      type.textContent = event.type;
      const parts = [`attempt ${event.attempt}`];
      if (event.detail) parts.push(event.detail);
      if (event.runpod_job_id) parts.push(`run ${event.runpod_job_id}`);
      li.append(at, " ", type, ` · ${parts.join(" · ")}`);
      return li;
    }),
  );
}

function closeTimeline() {
  openJobId = null;
  $("#job-detail").hidden = true;
  for (const tr of document.querySelectorAll("#jobs tbody tr.selected")) {
    tr.classList.remove("selected");
  }
}

async function showDeadLetter(id) {
  const detail = await ok(api().GET("/dead-letters/{id}", { params: { path: { id } } }));
  $("#dl-detail-body").textContent = JSON.stringify(detail, null, 2);
  $("#dl-detail").hidden = false;
  $("#dl-detail-close").focus();
}

async function replay(id) {
  try {
    const result = await ok(api().POST("/dead-letters/{id}/replay", { params: { path: { id } } }));
    say(`Replayed ${short(id)}: job ${short(result.job.id)} is pending again.`);
  } catch (error) {
    say(`Replay failed: ${error.message}`);
  }
  await refresh();
}

async function retryJob(id, button) {
  button.disabled = true;
  try {
    const result = await ok(api().POST("/admin/jobs/retry", { body: { job_ids: [id] } }));
    say(
      result.retried === 1
        ? `Retried ${short(id)}: the job is pending again (retry budget restored).`
        : `Did not retry ${short(id)}: it is no longer a failed job.`,
    );
  } catch (error) {
    say(`Retry failed: ${error.message}`);
  }
  await refresh();
}

async function retryFailed(event) {
  event.preventDefault();
  const prefix = $("#retry-prefix").value;
  const after = $("#retry-created-after").value;
  const limit = Number($("#retry-limit").value);
  if (!prefix && !after) {
    say("Retry failed: give an error prefix, a created-after time, or both.");
    return;
  }
  const filter = { limit };
  const what = [];
  if (prefix) {
    filter.error_prefix = prefix;
    what.push(`whose error starts with "${prefix}"`);
  }
  if (after) {
    // datetime-local is the browser's local time; the API wants UTC.
    filter.created_after = new Date(after).toISOString();
    what.push(`created after ${after.replace("T", " ")}`);
  }
  if (!confirm(`Retry up to ${plural(limit, "failed job")} ${what.join(" and ")}?`)) return;
  try {
    const result = await ok(api().POST("/admin/jobs/retry", { body: filter }));
    const ids = result.job_ids.map(short).join(", ");
    say(`Retried ${plural(result.retried, "job")}${ids ? `: ${ids}` : ""}.`);
  } catch (error) {
    say(`Retry failed: ${error.message}`);
  }
  await refresh();
}

/**
 * A new series of tries of one notification (the consumer tries it at once): it leaves the failed
 * list; the panel is read again a little later to show how the try went.
 */
async function redeliver(notification, button) {
  button.disabled = true;
  const label = `${notification.type} of job ${short(notification.job_id)}`;
  try {
    const result = await ok(
      api().POST("/admin/notifications/{id}/redeliver", {
        params: { path: { id: notification.id } },
      }),
    );
    say(`Redelivering ${label}: it is ${result.notification.status} again, tried at once.`);
  } catch (error) {
    say(`Redeliver failed: ${error.message}`);
  }
  await refreshNotifications();
  clearTimeout(redeliveryTimer);
  redeliveryTimer = setTimeout(() => {
    redeliveryTimer = null;
    if (token()) refreshNotifications();
  }, REDELIVERY_CHECK_MS);
}

async function remove(id) {
  if (!confirm(`Delete dead letter ${short(id)}?`)) return;
  try {
    await ok(api().DELETE("/dead-letters/{id}", { params: { path: { id } } }));
    say(`Deleted ${short(id)}.`);
  } catch (error) {
    say(`Delete failed: ${error.message}`);
  }
  await refresh();
}

/** Polling: only while the live socket is down (and auto-refresh is on). */
function schedule() {
  clearInterval(timer);
  timer = null;
  if ($("#auto-refresh").checked && !live.up) timer = setInterval(refresh, REFRESH_MS);
}

/** The API's client for the admin token in sessionStorage (same origin as the dashboard). */
function makeClient() {
  client = createReelExportsClient({ baseUrl: location.origin, token: token() });
}

function signIn() {
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#sign-out").hidden = false;
  refresh();
  schedule();
  startLive();
}

function signOut(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  clearInterval(timer);
  clearTimeout(redeliveryTimer);
  stopLive();
  client = null;
  jobs.clear();
  closeTimeline();
  $("#login").hidden = false;
  $("#app").hidden = true;
  $("#sign-out").hidden = true;
  say(message);
}

$("#login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("#admin-token").value.trim());
  makeClient();
  try {
    await ok(api().GET("/stats"));
    say("");
    signIn();
  } catch {}
});
$("#sign-out").addEventListener("click", () => signOut("Signed out."));
$("#filters").addEventListener("submit", (event) => {
  event.preventDefault();
  renderJobs();
  refresh();
});
$("#job-detail-close").addEventListener("click", closeTimeline);
$("#retry-form").addEventListener("submit", retryFailed);
$("#auto-refresh").addEventListener("change", schedule);
$("#wh-filters").addEventListener("submit", (event) => {
  event.preventDefault();
  refreshNotifications();
});
$("#wh-status").addEventListener("change", refreshNotifications);
$("#dl-detail-close").addEventListener("click", () => {
  $("#dl-detail").hidden = true;
});

if (token()) {
  makeClient();
  signIn();
}
