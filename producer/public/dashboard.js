// The operators' dashboard: plain DOM, no framework. It calls the producer's admin API with the
// admin token kept in sessionStorage (this tab only).
const TOKEN_KEY = "reel-exports-admin-token";
const REFRESH_MS = 2000;
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
  if (!res.ok) throw new Error(`${body.error?.code ?? res.status}: ${body.error?.message ?? ""}`);
  return body;
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

function renderStats(stats) {
  const items = [
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
      dd.textContent = String(value);
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
$("#auto-refresh").addEventListener("change", schedule);
$("#dl-detail-close").addEventListener("click", () => {
  $("#dl-detail").hidden = true;
});

if (token()) signIn();
