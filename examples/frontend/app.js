// The browser's side of an export: create → live progress → download.
//
//   0. POST /api/session       our backend (the only holder of API_TOKEN) mints a client token for
//                              the signed-in user's project; everything else goes to the producer's
//                              API directly with that token as the bearer, through reel-exports'
//                              typed client (reel-exports-client.js, the bundle of client/):
//   1. POST /exports           create the job (the token decides whose it is; another project: 403)
//   2. POST /live-tickets      a ticket (good for about a minute) for the project
//   3. new WebSocket(/live?ticket=…) first a snapshot of the project's jobs, then one message per
//                              change of any of them
//   4. complete                GET /exports/:id/events (the timeline), and POST
//                              /exports/:id/download-url: a signed URL the Download link points at,
//                              so the file comes from the edge, not through our backend
//
// Messages can arrive in any order (the snapshot may even be newer than a message after it): the
// client's watch() hands on, per job, only versions higher than the last. It reconnects by itself
// (a fresh ticket each time, at once after a session's 4001 end). Nothing polls.
import { createReelExportsClient } from "./reel-exports-client.js";

const $ = (selector) => document.querySelector(selector);

/** A job ends in one of these; then the socket is no longer needed. */
const FINISHED = new Set(["complete", "error"]);

/** The newest version of our job seen so far (from the create answer, the snapshot or a message). */
let job = null;
/** The live watch of the project (client.watch), or null. */
let watching = null;
/** Our backend's answer: {token, expires_at, api_url, project_id, input_video_key}. */
let session = null;
/** The typed client, made with the first session (its API URL); its token renews itself. */
let client = null;

/** A session whose token is good for at least another minute (a fresh one otherwise). */
async function currentSession() {
  if (!session || Date.parse(session.expires_at) - Date.now() < 60_000) {
    session = await answer(await fetch("/api/session", { method: "POST" }));
  }
  return session;
}

/** The client, with a token that is renewed from our backend before it expires. */
async function api() {
  const { api_url } = await currentSession();
  client ??= createReelExportsClient({
    baseUrl: api_url,
    token: async () => (await currentSession()).token,
  });
  return client;
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
    created = await (await api()).createExport(
      {
        project_id,
        input_video_key,
        type: "overlay",
        params: { highlight_regions: [{ start_time: 1, end_time: 3 }] },
      },
      { idempotencyKey: crypto.randomUUID() },
    );
  } catch (error) {
    showError(error.message);
    $("#export").disabled = false;
    return;
  }
  show(created);
  // 2 + 3. Watch it live (the job runs whether or not we watch).
  watchLive().catch((error) => showError(error.message));
}

/** Follows the project's live messages: our job's changes, its place in the queue, progress. */
async function watchLive() {
  const { project_id } = await currentSession();
  watching?.close();
  watching = (await api()).watch(
    { projectIds: [project_id] },
    {
      // The job exactly as GET /exports/{id} would answer it (from a snapshot or a change).
      job: (next) => {
        if (job && next.id === job.id) show(next);
      },
      // Where a pending job stands: not a change of the job (no version), the newest estimate.
      queue: (message) => {
        const ours = job && message.jobs.find((each) => each.id === job.id);
        if (ours) showQueue(ours.queue);
      },
      // Progress D1 did not record (one report per 25 points or per minute is): it applies to
      // the version we show, and only raises the bar.
      progress: (message) => {
        if (!job || message.job_id !== job.id) return;
        const same = message.version === job.version && message.attempt === job.attempt;
        if (same && job.status === "processing" && message.progress > job.progress) {
          job = { ...job, progress: message.progress };
          $("#progress").value = job.progress;
          $("#percent").textContent = `${job.progress}%`;
        }
      },
      state: (state) => {
        if (watching === null) return; // we closed it ourselves
        setLiveState(state === "open" ? "live" : state === "closed" ? "reconnecting" : state);
      },
    },
  );
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

/** The job is complete or failed: stop watching, show the timeline and the download. */
async function finish() {
  const done = watching;
  watching = null;
  done?.close();
  setLiveState("closed (job finished)");
  $("#export").disabled = false;
  const id = job.id;
  if (job.status === "complete") {
    // A signed URL (DOWNLOAD_URL_TTL_S, 15 min): the bytes come straight from the producer, the
    // answer says "attachment", so the link saves the file even across origins.
    const { url } = await (await api()).downloadUrl(id);
    if (job.id !== id) return; // another export started meanwhile
    const link = $("#download");
    link.href = url;
    link.hidden = false;
  } else {
    showError(job.error ?? "the export failed");
  }
  const events = await (await api()).events(id);
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
