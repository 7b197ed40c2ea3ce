// The browser's side of an export: create → live progress → download.
//
//   1. POST /api/exports       our backend creates the job (it holds API_TOKEN; this page never does)
//   2. POST /api/live-ticket   our backend mints a ticket (good for about a minute) for the project
//   3. new WebSocket(live_url) straight to the producer's GET /live?ticket=…: first a snapshot of the
//                              project's jobs, then one message per change of any of them
//   4. complete                GET /api/exports/:id/events (the timeline) and a Download link to
//                              /api/exports/:id/output, both through our backend
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

$("#export").addEventListener("click", startExport);

async function startExport() {
  $("#export").disabled = true;
  job = null;
  clearView();
  let created;
  try {
    // 1. Create. What to render comes from the editor; whose project it is, the backend decides.
    //    One Idempotency-Key per click: if this request is retried, no second job is made.
    ({ job: created } = await postJson(
      "/api/exports",
      { type: "overlay", params: { highlight_regions: [{ start_time: 1, end_time: 3 }] } },
      { "Idempotency-Key": crypto.randomUUID() },
    ));
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
  const { live_url } = await postJson("/api/live-ticket", {});
  if (job && FINISHED.has(job.status)) return; // finished while we asked (then we know already)
  const ws = new WebSocket(live_url);
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
  ws.addEventListener("close", () => {
    clearInterval(ping);
    if (socket !== ws) return; // we closed it ourselves
    socket = null;
    if (!FINISHED.has(job.status)) reconnectSoon();
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
  if (job.status === "complete") {
    const link = $("#download");
    link.href = `/api/exports/${encodeURIComponent(job.id)}/output`;
    link.download = `export-${job.id.slice(0, 8)}.mp4`; // same origin: the browser saves it
    link.hidden = false;
  } else {
    showError(job.error ?? "the export failed");
  }
  const id = job.id;
  const { events } = await getJson(`/api/exports/${encodeURIComponent(id)}/events`);
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

async function postJson(url, body, headers = {}) {
  const res = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  return answer(res);
}

async function getJson(url) {
  return answer(await fetch(url));
}

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
