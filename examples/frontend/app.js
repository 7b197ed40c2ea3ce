// The browser's side of an export: create → live progress → download.
//
//   0. POST /api/session       our backend (the only holder of API_TOKEN) mints a client token for
//                              the signed-in user's project; everything else goes to the producer's
//                              API directly with that token as the bearer:
//   1. POST /exports           create the job (the token decides whose it is; another project: 403)
//   2. POST /live-tickets      a ticket (good for about a minute) for the project
//   3. new WebSocket(/live?ticket=…) first a snapshot of the project's jobs, then one message per
//                              change of any of them
//   4. complete                GET /exports/:id/events (the timeline), and POST
//                              /exports/:id/download-url: a signed URL the Download link points at,
//                              so the file comes from the edge, not through our backend
//
// Messages can arrive in any order (the snapshot may even be newer than a message after it), so the
// page keeps, per job, the one with the highest `version`: every change raises it. Nothing polls.

const $ = (selector) => document.querySelector(selector);

/** A job ends in one of these; then the socket is no longer needed. */
const FINISHED = new Set(["complete", "error"]);
/** The producer answers "ping" with "pong"; a ping now and then keeps proxies from closing an idle socket. */
const PING_MS = 30_000;
/** Waits before reconnecting after the socket closed early (each attempt gets a fresh ticket). */
const RECONNECT_MS = [1000, 2000, 5000, 10_000];

/** The newest version of our job seen so far (from the create answer, the snapshot or a message). */
let job = null;
/** The open socket, or null. */
let socket = null;
let failures = 0;
/** Our backend's answer: {token, expires_at, api_url, project_id, input_video_key}. */
let session = null;

/** A session whose token is good for at least another minute (a fresh one otherwise). */
async function currentSession() {
  if (!session || Date.parse(session.expires_at) - Date.now() < 60_000) {
    session = await answer(await fetch("/api/session", { method: "POST" }));
  }
  return session;
}

/** A call to the producer's API with the client token. */
async function api(path, { method = "GET", body, headers = {} } = {}) {
  const { api_url, token } = await currentSession();
  const res = await fetch(`${api_url}${path}`, {
    method,
    headers: {
      Authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      ...headers,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return answer(res);
}

$("#export").addEventListener("click", startExport);

async function startExport() {
  $("#export").disabled = true;
  job = null;
  clearView();
  let created;
  try {
    // 1. Create. What to render comes from the editor; whose project it is, the token decides.
    //    One Idempotency-Key per click: if this request is retried, no second job is made.
    const { project_id, input_video_key } = await currentSession();
    ({ job: created } = await api("/exports", {
      method: "POST",
      body: {
        project_id,
        input_video_key,
        type: "overlay",
        params: { highlight_regions: [{ start_time: 1, end_time: 3 }] },
      },
      headers: { "Idempotency-Key": crypto.randomUUID() },
    }));
  } catch (error) {
    showError(error.message);
    $("#export").disabled = false;
    return;
  }
  show(created);
  // 2 + 3. Watch it live (the job runs whether or not we watch: keep trying).
  failures = 0;
  connectLive().catch(reconnectSoon);
}

async function connectLive() {
  const { project_id, api_url } = await currentSession();
  const { ticket } = await api("/live-tickets", {
    method: "POST",
    body: { project_ids: [project_id] },
  });
  if (job && FINISHED.has(job.status)) return; // finished while we asked (then we know already)
  const live = new URL("/live", api_url);
  live.protocol = live.protocol === "https:" ? "wss:" : "ws:";
  live.searchParams.set("ticket", ticket);
  const ws = new WebSocket(live.href);
  socket = ws;
  setLiveState("connecting");
  let ping = null;

  ws.addEventListener("open", () => {
    ping = setInterval(() => ws.send("ping"), PING_MS);
  });
  ws.addEventListener("message", (event) => {
    if (event.data === "pong") return;
    const message = JSON.parse(event.data);
    if (message.type === "snapshot") {
      // The project's active jobs and its most recently finished ones: ours is among them.
      failures = 0;
      setLiveState("live");
      for (const each of message.jobs) if (each.id === job.id) show(each);
    } else if (message.type === "job" && message.job.id === job.id) {
      show(message.job); // the job exactly as GET /exports/{id} would answer it
    } else if (message.type === "queue") {
      // Where a pending job stands: not a change of the job (no version), the newest estimate.
      const ours = message.jobs.find((each) => each.id === job.id);
      if (ours) showQueue(ours.queue);
    } else if (message.type === "progress" && message.job_id === job.id) {
      // Progress D1 did not record (it records one report per 25 points or per minute): it
      // applies to the version we show, and only raises the bar.
      const same = message.version === job.version && message.attempt === job.attempt;
      if (same && job.status === "processing" && message.progress > job.progress) {
        job = { ...job, progress: message.progress };
        $("#progress").value = job.progress;
        $("#percent").textContent = `${job.progress}%`;
      }
    }
  });
  // An error event is always followed by close.
  ws.addEventListener("close", (event) => {
    clearInterval(ping);
    if (socket !== ws) return; // we closed it ourselves
    socket = null;
    if (FINISHED.has(job.status)) return;
    // 4001: the session reached LIVE_SESSION_MAX_S, nothing failed: reconnect now.
    if (event.code === 4001) {
      failures = 0;
      connectLive().catch(reconnectSoon);
    } else {
      reconnectSoon();
    }
  });
}

/**
 * The socket closed before the job finished (network change, a deploy…), or could not be opened:
 * try again with a fresh ticket, waiting a little longer each time. The new snapshot brings
 * whatever changed meanwhile, so nothing is missed.
 */
function reconnectSoon() {
  setLiveState("reconnecting");
  const delay = RECONNECT_MS[Math.min(failures, RECONNECT_MS.length - 1)];
  failures += 1;
  setTimeout(() => connectLive().catch(reconnectSoon), delay);
}

/** "starts in ~N min" while the job is pending and an estimate is known. */
function showQueue(queue) {
  const eta = $("#eta");
  if (!queue || !job || job.status !== "pending") {
    eta.hidden = true;
    return;
  }
  const minutes = Math.round(queue.eta_s / 60);
  eta.textContent = minutes < 1 ? "starts in <1 min" : `starts in ~${minutes} min`;
  eta.title = `${queue.position} exports start before it (estimated ${queue.at})`;
  eta.hidden = false;
}

/** Takes `next` if it is newer than what we have, and renders it. */
function show(next) {
  if (job && job.id === next.id && next.version <= job.version) return; // old news
  job = next;
  // Answers of the API carry `queue` (live job messages leave it out: it is not versioned).
  if (next.queue !== undefined || next.status !== "pending") showQueue(next.queue ?? null);
  $("#job").hidden = false;
  $("#job-id").textContent = job.id;
  $("#status").textContent = job.status;
  $("#status").dataset.status = job.status;
  $("#version").textContent = String(job.version);
  $("#progress").value = job.progress;
  $("#percent").textContent = `${job.progress}%`;
  if (FINISHED.has(job.status)) finish().catch((error) => showError(error.message));
}

/** The job is complete or failed: close the socket, show the timeline and the download. */
async function finish() {
  const ws = socket;
  socket = null;
  ws?.close(1000, "job finished");
  setLiveState("closed (job finished)");
  $("#export").disabled = false;
  const id = job.id;
  if (job.status === "complete") {
    // A signed URL (DOWNLOAD_URL_TTL_S, 15 min): the bytes come straight from the producer, the
    // answer says "attachment", so the link saves the file even across origins.
    const { url } = await api(`/exports/${encodeURIComponent(id)}/download-url`, {
      method: "POST",
    });
    if (job.id !== id) return; // another export started meanwhile
    const link = $("#download");
    link.href = url;
    link.hidden = false;
  } else {
    showError(job.error ?? "the export failed");
  }
  const { events } = await api(`/exports/${encodeURIComponent(id)}/events`);
  if (job.id !== id) return; // another export started meanwhile
  $("#timeline").replaceChildren(...events.map(timelineItem));
  $("#timeline-box").hidden = false;
}

/** One event of the timeline: when, what, and its details. */
function timelineItem(event) {
  const li = document.createElement("li");
  const at = document.createElement("time");
  at.textContent = event.at;
  const parts = [event.type, `attempt ${event.attempt}`];
  if (event.detail) parts.push(event.type === "progress" ? `${event.detail}%` : event.detail);
  li.append(at, ` ${parts.join(" · ")}`);
  return li;
}

// ---- small helpers ----

/** The JSON of a successful answer; otherwise an Error with the API's message. */
async function answer(res) {
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error?.message ?? `HTTP ${res.status}`);
  return body;
}

function setLiveState(text) {
  $("#live-state").textContent = text;
}

function showError(message) {
  $("#job").hidden = false;
  $("#error").textContent = message;
  $("#error").hidden = false;
}

function clearView() {
  $("#error").hidden = true;
  $("#download").hidden = true;
  $("#timeline-box").hidden = true;
  $("#timeline").replaceChildren();
}
