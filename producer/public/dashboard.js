// The operators' dashboard: plain DOM, no framework. It calls the producer's admin API with the
// admin token kept in sessionStorage (this tab only).
const TOKEN_KEY = "reel-exports-admin-token";
const REFRESH_MS = 2000;
/** The error of a job its owner cancelled: such jobs are never retried. */
const CANCELLED = "cancelled";
const $ = (selector) => document.querySelector(selector);

let timer = null;

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function say(message) {
  $("#status").textContent = message;
}

async function api(path, init = {}) {
  const res = await fetch(path, {
    ...init,
    headers: { ...(init.headers ?? {}), authorization: `Bearer ${token()}` },
  });
  if (res.status === 401) {
    signOut("That token was not accepted.");
    throw new Error("unauthorized");
  }
  if (res.status === 204) return null;
  const body = await res.json();
  if (!res.ok) {
    const issues = (body.error?.issues ?? []).map((issue) => `; ${issue.message}`).join("");
    throw new Error(`${body.error?.code ?? res.status}: ${body.error?.message ?? ""}${issues}`);
  }
  return body;
}

function postJson(path, data) {
  return api(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(data),
  });
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

function renderJobs(jobs) {
  $("#jobs tbody").replaceChildren(
    ...jobs.map((job) => {
      const tr = document.createElement("tr");
      tr.dataset.jobId = job.id;
      const id = cell("");
      const code = document.createElement("code");
      code.textContent = short(job.id);
      code.title = job.id;
      id.append(code);
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
        cell(job.status, `job-status status-${job.status}`),
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

async function refresh() {
  const params = new URLSearchParams();
  const project = $("#filter-project").value.trim();
  const status = $("#filter-status").value;
  if (project) params.set("project_id", project);
  if (status) params.set("status", status);
  try {
    const [stats, jobs, letters] = await Promise.all([
      api("/stats"),
      api(`/admin/jobs?${params}`),
      api("/dead-letters?limit=50"),
    ]);
    renderStats(stats);
    renderJobs(jobs.jobs);
    renderDeadLetters(letters.dead_letters);
    document.body.dataset.refreshedAt = String(Date.now());
  } catch (error) {
    if (error.message !== "unauthorized") say(`Refresh failed: ${error.message}`);
  }
}

async function showDeadLetter(id) {
  const detail = await api(`/dead-letters/${encodeURIComponent(id)}`);
  $("#dl-detail-body").textContent = JSON.stringify(detail, null, 2);
  $("#dl-detail").hidden = false;
  $("#dl-detail-close").focus();
}

async function replay(id) {
  try {
    const result = await api(`/dead-letters/${encodeURIComponent(id)}/replay`, { method: "POST" });
    say(`Replayed ${short(id)}: job ${short(result.job.id)} is pending again.`);
  } catch (error) {
    say(`Replay failed: ${error.message}`);
  }
  await refresh();
}

async function retryJob(id, button) {
  button.disabled = true;
  try {
    const result = await postJson("/admin/jobs/retry", { job_ids: [id] });
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
    const result = await postJson("/admin/jobs/retry", filter);
    const ids = result.job_ids.map(short).join(", ");
    say(`Retried ${plural(result.retried, "job")}${ids ? `: ${ids}` : ""}.`);
  } catch (error) {
    say(`Retry failed: ${error.message}`);
  }
  await refresh();
}

async function remove(id) {
  if (!confirm(`Delete dead letter ${short(id)}?`)) return;
  try {
    await api(`/dead-letters/${encodeURIComponent(id)}`, { method: "DELETE" });
    say(`Deleted ${short(id)}.`);
  } catch (error) {
    say(`Delete failed: ${error.message}`);
  }
  await refresh();
}

function schedule() {
  clearInterval(timer);
  if ($("#auto-refresh").checked) timer = setInterval(refresh, REFRESH_MS);
}

function signIn() {
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#sign-out").hidden = false;
  refresh();
  schedule();
}

function signOut(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  clearInterval(timer);
  $("#login").hidden = false;
  $("#app").hidden = true;
  $("#sign-out").hidden = true;
  say(message);
}

$("#login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("#admin-token").value.trim());
  try {
    await api("/stats");
    say("");
    signIn();
  } catch {}
});
$("#sign-out").addEventListener("click", () => signOut("Signed out."));
$("#filters").addEventListener("submit", (event) => {
  event.preventDefault();
  refresh();
});
$("#retry-form").addEventListener("submit", retryFailed);
$("#auto-refresh").addEventListener("change", schedule);
$("#dl-detail-close").addEventListener("click", () => {
  $("#dl-detail").hidden = true;
});

if (token()) signIn();
