// Tenancy: what a scoped client token can do, quotas (MAX_ACTIVE_PER_USER, kept by triggers and
// checked in the insert; CREATE_LIMITER, the real Rate Limiting binding Miniflare simulates),
// signed download URLs, INPUT_KEY_PREFIX, and a secret rotation that keeps runs in flight, tokens
// and URLs working. (Every route × credential is in auth-matrix.test.ts.)
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { Job } from "../../shared/sql/jobs/row.ts";
import {
  configureEndpoint,
  countJobs,
  deliver,
  emulatorRequests,
  type FetchInit,
  freshProjectId,
  freshUserId,
  overlayRequest,
  postJson,
  producerFetch,
  putInput,
  putOutput,
  readJob,
  runCalls,
  sentMessagesFor,
  uniqueEndpoint,
  waitFor,
} from "./helpers.ts";

async function inputFor(projectId: number): Promise<string> {
  const key = `uploads/${projectId}/tenancy.mp4`;
  await putInput(key);
  return key;
}

async function clientToken(body: Record<string, unknown>, init: FetchInit = {}): Promise<string> {
  const res = await postJson("/client-tokens", body, init);
  expect(res.status).toBe(201);
  const answer = (await res.json()) as { token: string; expires_at: string };
  expect(Date.parse(answer.expires_at)).toBeGreaterThan(Date.now());
  return answer.token;
}

/** POST /exports of a distinct overlay for `projectId` (distinct params: never reused). */
async function create(
  projectId: number,
  extra: Record<string, unknown> = {},
  init: FetchInit = {},
): Promise<Response> {
  const body = {
    ...overlayRequest(projectId, await inputFor(projectId)),
    params: { highlight_regions: [{ start_time: 0, end_time: 1, n: crypto.randomUUID() }] },
    ...extra,
  };
  return postJson("/exports", body, init);
}

async function errorOf(res: Response): Promise<string> {
  return ((await res.json()) as { error: { code: string } }).error.code;
}

async function activeCount(key: string): Promise<number | null> {
  const row = await env.DB.prepare("SELECT n FROM active_jobs WHERE fair_key = ?")
    .bind(key)
    .first<{ n: number }>();
  return row?.n ?? null;
}

describe("a scoped client token", () => {
  it("creates in its projects only, as its user; lists and mints tickets for its projects only", async () => {
    const [mine, theirs] = [freshProjectId(), freshProjectId()];
    const userId = freshUserId();
    const token = await clientToken({ project_ids: [mine], user_id: userId });

    // Its user_id is the job's, whatever the body says.
    const created = await create(mine, { user_id: userId + 1 }, { token });
    expect(created.status).toBe(202);
    const { job } = (await created.json()) as { job: Job };
    expect(job.user_id).toBe(userId);

    // A token that names no user makes jobs of no user: the browser does not pick the key.
    const userless = await clientToken({ project_ids: [mine] });
    const picked = await create(mine, { user_id: freshUserId() }, { token: userless });
    expect(picked.status).toBe(202);
    expect(((await picked.json()) as { job: Job }).job.user_id).toBeNull();

    // Another project: 403, nothing written, nothing sent.
    const refused = await create(theirs, {}, { token });
    expect(refused.status).toBe(403);
    expect(await errorOf(refused)).toBe("project_not_allowed");
    expect(await countJobs(theirs)).toBe(0);

    // Listing: its projects by project_id; another project or a user listing is 403.
    const listed = await producerFetch(`/exports?project_id=${mine}`, { token });
    expect(listed.status).toBe(200);
    expect(((await listed.json()) as { jobs: Job[] }).jobs.map((j) => j.id)).toContain(job.id);
    for (const query of [`project_id=${mine}&project_id=${theirs}`, `user_id=${userId}`]) {
      const res = await producerFetch(`/exports?${query}`, { token });
      expect({ query, status: res.status }).toEqual({ query, status: 403 });
      expect(await errorOf(res)).toBe("project_not_allowed");
    }

    // Live tickets: its projects; another project 403; all projects 401.
    expect((await postJson("/live-tickets", { project_ids: [mine] }, { token })).status).toBe(201);
    const other = await postJson("/live-tickets", { project_ids: [mine, theirs] }, { token });
    expect(other.status).toBe(403);
    expect(await errorOf(other)).toBe("project_not_allowed");
    const all = await postJson("/live-tickets", { all_projects: true }, { token });
    expect(all.status).toBe(401);

    // It mints no token, and a lifetime past CLIENT_TOKEN_MAX_TTL_S is refused.
    expect((await postJson("/client-tokens", { project_ids: [mine] }, { token })).status).toBe(401);
    const tooLong = await postJson("/client-tokens", { project_ids: [mine], ttl_s: 3601 });
    expect(tooLong.status).toBe(400);
    expect(await errorOf(tooLong)).toBe("invalid_request");
    const shorter = await postJson(
      "/client-tokens",
      { project_ids: [mine], ttl_s: 60 },
      { vars: { CLIENT_TOKEN_MAX_TTL_S: "60" } },
    );
    expect(shorter.status).toBe(201);
  });

  it("sees another project's job as not found, and cannot cancel it", async () => {
    const [mine, theirs] = [freshProjectId(), freshProjectId()];
    const theirJob = ((await (await create(theirs)).json()) as { job: Job }).job;
    const token = await clientToken({ project_ids: [mine] });
    for (const [path, method] of [
      [`/exports/${theirJob.id}`, "GET"],
      [`/exports/${theirJob.id}/events`, "GET"],
      [`/exports/${theirJob.id}/cancel`, "POST"],
      [`/exports/${theirJob.id}/download-url`, "POST"],
      [`/exports/${theirJob.id}/output`, "GET"],
    ] as const) {
      const res = await producerFetch(path, { method, token });
      expect({ path, status: res.status }).toEqual({ path, status: 404 });
      expect(await errorOf(res)).toBe("not_found");
    }
    expect((await readJob(theirJob.id))?.status).toBe("pending");
    // Its own project's token cancels it.
    const theirToken = await clientToken({ project_ids: [theirs] });
    const cancel = await producerFetch(`/exports/${theirJob.id}/cancel`, {
      method: "POST",
      token: theirToken,
    });
    expect(cancel.status).toBe(200);
  });
});

describe("quotas", () => {
  it("MAX_ACTIVE_PER_USER: past it 429 quota_exceeded with Retry-After, nothing written or sent; a finished job frees a place", async () => {
    const projectId = freshProjectId();
    const userId = freshUserId();
    const vars = { MAX_ACTIVE_PER_USER: "2" };
    const jobs: Job[] = [];
    for (let i = 0; i < 2; i++) {
      const res = await create(projectId, { user_id: userId }, { vars });
      expect(res.status).toBe(202);
      jobs.push(((await res.json()) as { job: Job }).job);
    }
    expect(await activeCount(`user:${userId}`)).toBe(2);

    const before = await countJobs(projectId);
    const refused = await create(projectId, { user_id: userId }, { vars });
    expect(refused.status).toBe(429);
    expect(refused.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(await errorOf(refused)).toBe("quota_exceeded");
    expect(await countJobs(projectId)).toBe(before);
    expect(await activeCount(`user:${userId}`)).toBe(2);

    // The same user in another project shares the key; another user of the project does not.
    const otherProject = await create(freshProjectId(), { user_id: userId }, { vars });
    expect(otherProject.status).toBe(429);
    const otherUser = await create(projectId, { user_id: freshUserId() }, { vars });
    expect(otherUser.status).toBe(202);

    // An Idempotency-Key repeat of an accepted job still answers it (200), even at the quota.
    const keyed = await create(
      projectId,
      { user_id: freshUserId() },
      { vars: { MAX_ACTIVE_PER_USER: "1" }, headers: { "idempotency-key": "quota-repeat" } },
    );
    expect(keyed.status).toBe(202);
    const keyedJob = ((await keyed.json()) as { job: Job }).job;
    const repeat = await postJson(
      "/exports",
      {
        project_id: keyedJob.project_id,
        type: keyedJob.type,
        input_video_key: keyedJob.input_video_key,
        params: keyedJob.params,
        user_id: keyedJob.user_id,
      },
      { vars: { MAX_ACTIVE_PER_USER: "1" }, headers: { "idempotency-key": "quota-repeat" } },
    );
    expect(repeat.status).toBe(200);
    expect(((await repeat.json()) as { job: Job }).job.id).toBe(keyedJob.id);

    // A cancel ends one: the counter follows (the trigger), and a create fits again.
    const [first] = jobs;
    if (!first) throw new Error("no job");
    expect((await producerFetch(`/exports/${first.id}/cancel`, { method: "POST" })).status).toBe(
      200,
    );
    expect(await activeCount(`user:${userId}`)).toBe(1);
    const again = await create(projectId, { user_id: userId }, { vars });
    expect(again.status).toBe(202);
    const againJob = ((await again.json()) as { job: Job }).job;
    await waitFor(
      async () => ((await sentMessagesFor(againJob.id)).length > 0 ? true : undefined),
      "its message",
    );
    expect(await activeCount(`user:${userId}`)).toBe(2);
  });

  it("a job without a user counts against its project", async () => {
    const projectId = freshProjectId();
    const vars = { MAX_ACTIVE_PER_USER: "1" };
    expect((await create(projectId, {}, { vars })).status).toBe(202);
    const refused = await create(projectId, {}, { vars });
    expect(refused.status).toBe(429);
    expect(await errorOf(refused)).toBe("quota_exceeded");
    expect(await activeCount(`project:${projectId}`)).toBe(1);
  });

  it("CREATE_LIMITER (the Rate Limiting binding): past its limit 429 rate_limited with Retry-After, nothing written; other keys go on", async () => {
    // The strict binding (3 per 60 s, vitest.config.ts) in the producer's CREATE_LIMITER.
    const bindings = { CREATE_LIMITER: env.TEST_STRICT_LIMITER };
    const projectId = freshProjectId();
    const userId = freshUserId();
    for (let i = 0; i < 3; i++) {
      const res = await create(projectId, { user_id: userId }, { bindings });
      expect(res.status).toBe(202);
    }
    const before = await countJobs(projectId);
    const refused = await create(projectId, { user_id: userId }, { bindings });
    expect(refused.status).toBe(429);
    expect(refused.headers.get("retry-after")).toBe("60");
    expect(await errorOf(refused)).toBe("rate_limited");
    expect(await countJobs(projectId)).toBe(before);
    // Another user (another key) is not limited by this one's creates.
    expect((await create(projectId, { user_id: freshUserId() }, { bindings })).status).toBe(202);
  });
});

/** A job completed with a 20-byte output in R2. */
async function completeJob(projectId = freshProjectId()): Promise<Job> {
  const res = await create(projectId);
  const { job } = (await res.json()) as { job: Job };
  const key = await putOutput(job, undefined, "0123456789abcdefghij");
  await env.DB.prepare(
    `UPDATE export_jobs SET status = 'complete', progress = 100, attempt = 1,
       runpod_job_id = 'run-download', output_video_key = ? WHERE id = ?`,
  )
    .bind(key, job.id)
    .run();
  return job;
}

async function downloadUrl(jobId: string, init: FetchInit = {}) {
  const res = await producerFetch(`/exports/${jobId}/download-url`, { method: "POST", ...init });
  expect(res.status).toBe(200);
  const answer = (await res.json()) as { url: string; expires_at: string };
  const url = new URL(answer.url);
  return { path: `${url.pathname}${url.search}`, url, expiresAt: answer.expires_at };
}

describe("signed download URLs", () => {
  it("serves the file without a bearer: whole, a Range, and 304 for its ETag", async () => {
    const job = await completeJob();
    const token = await clientToken({ project_ids: [job.project_id] });
    const { path, url, expiresAt } = await downloadUrl(job.id, { token });
    expect(url.pathname).toBe(`/exports/${job.id}/output`);
    expect(Date.parse(expiresAt)).toBeGreaterThan(Date.now());

    const whole = await producerFetch(path, { token: null });
    expect(whole.status).toBe(200);
    expect(await whole.text()).toBe("0123456789abcdefghij");
    const etag = whole.headers.get("etag") as string;
    expect(etag).toBeTruthy();

    const range = await producerFetch(path, { token: null, headers: { range: "bytes=2-5" } });
    expect(range.status).toBe(206);
    expect(range.headers.get("content-range")).toBe("bytes 2-5/20");
    expect(await range.text()).toBe("2345");

    const cached = await producerFetch(path, { token: null, headers: { "if-none-match": etag } });
    expect(cached.status).toBe(304);
  });

  it("401 bad_signature when tampered with, for another job, or expired; 409 before the job completes", async () => {
    const job = await completeJob();
    const other = await completeJob();
    const { url } = await downloadUrl(job.id);
    const q = url.searchParams;
    const sig = q.get("sig") as string;
    const flip = (text: string) => `${text.slice(0, -1)}${text.endsWith("0") ? "1" : "0"}`;
    const expired = await downloadUrl(job.id, { vars: { DOWNLOAD_URL_TTL_S: "0" } });
    const refused: Record<string, string> = {
      flippedSig: `/exports/${job.id}/output?expires=${q.get("expires")}&kid=${q.get("kid")}&sig=${flip(sig)}`,
      laterExpiry: `/exports/${job.id}/output?expires=${Number(q.get("expires")) + 3600}&kid=${q.get("kid")}&sig=${sig}`,
      otherKid: `/exports/${job.id}/output?expires=${q.get("expires")}&kid=00000000&sig=${sig}`,
      otherJob: `/exports/${other.id}/output?${q}`,
      expired: `${expired.url.pathname}${expired.url.search}`,
      truncatedSig: `/exports/${job.id}/output?expires=${q.get("expires")}&kid=${q.get("kid")}&sig=${sig.slice(0, 32)}`,
    };
    for (const [name, path] of Object.entries(refused)) {
      const res = await producerFetch(path, { token: null });
      expect({ name, status: res.status }).toEqual({ name, status: 401 });
      expect(await errorOf(res)).toBe("bad_signature");
    }
    const pending = ((await (await create(freshProjectId())).json()) as { job: Job }).job;
    const early = await producerFetch(`/exports/${pending.id}/download-url`, { method: "POST" });
    expect(early.status).toBe(409);
    expect(await errorOf(early)).toBe("not_complete");
  });
});

describe("INPUT_KEY_PREFIX", () => {
  it("refuses an input key outside the project's prefix with 400 input_key_outside_project, writing nothing", async () => {
    const projectId = freshProjectId();
    const vars = { INPUT_KEY_PREFIX: "uploads/{project_id}/" };
    const otherKey = `uploads/${projectId + 1}/tenancy.mp4`;
    await putInput(otherKey);
    const refused = await postJson("/exports", overlayRequest(projectId, otherKey), { vars });
    expect(refused.status).toBe(400);
    expect(await errorOf(refused)).toBe("input_key_outside_project");
    expect(await countJobs(projectId)).toBe(0);
    expect((await create(projectId, {}, { vars })).status).toBe(202);
  });
});

describe("secret rotation", () => {
  const ROTATED = { WEBHOOK_SECRET: "rotated-webhook-secret" };
  const previous = env.WEBHOOK_SECRET as string;

  it("a run submitted before WEBHOOK_SECRET rotated completes through its webhook while WEBHOOK_SECRET_PREVIOUS is set", async () => {
    const endpoint = uniqueEndpoint("rotation");
    await configureEndpoint(endpoint, { runMs: 60_000 });
    const projectId = freshProjectId();
    const { job } = (await (await create(projectId)).json()) as { job: Job };
    const delivered = await deliver(
      [
        {
          id: `rotation-${crypto.randomUUID()}`,
          timestamp: new Date(),
          attempts: 1,
          body: { job_id: job.id },
        },
      ],
      { env: { ...env, RUNPOD_ENDPOINT_ID: endpoint } },
    );
    expect(delivered.outcome).toBe("ok");
    const claimed = await waitFor(async () => {
      const row = await readJob(job.id);
      return row?.runpod_job_id ? row : undefined;
    }, "the run");
    const run = runCalls(await emulatorRequests(endpoint)).at(-1);
    if (!run) throw new Error("no /run call");
    const webhook = new URL((run.body as { webhook: string }).webhook);
    const path = `${webhook.pathname}${webhook.search}`;
    await putOutput(claimed);
    const body = { id: claimed.runpod_job_id, status: "COMPLETED", output: {} };

    // Rotated without the previous secret: the run's URL no longer verifies.
    const lost = await postJson(path, body, { token: null, vars: ROTATED });
    expect(lost.status).toBe(401);
    // Rotated with it: the webhook applies.
    const applied = await postJson(path, body, {
      token: null,
      vars: { ...ROTATED, WEBHOOK_SECRET_PREVIOUS: previous },
    });
    expect(applied.status).toBe(200);
    expect((await readJob(job.id))?.status).toBe("complete");
  });

  it("client tokens, download URLs and live tickets minted before a rotation stay good with WEBHOOK_SECRET_PREVIOUS, and new ones carry the new key id", async () => {
    const projectId = freshProjectId();
    const token = await clientToken({ project_ids: [projectId] });
    const ticketRes = await postJson("/live-tickets", { project_ids: [projectId] });
    const { ticket } = (await ticketRes.json()) as { ticket: string };
    const rotated = { vars: { ...ROTATED, WEBHOOK_SECRET_PREVIOUS: previous } };
    const dropped = { vars: ROTATED };

    const list = `/exports?project_id=${projectId}`;
    expect((await producerFetch(list, { token, ...rotated })).status).toBe(200);
    expect((await producerFetch(list, { token, ...dropped })).status).toBe(401);

    const live = (init: FetchInit) =>
      producerFetch(`/live?ticket=${encodeURIComponent(ticket)}`, { token: null, ...init });
    expect((await live(rotated)).status).toBe(426); // accepted (no upgrade asked)
    expect((await live(dropped)).status).toBe(401);

    const fresh = await clientToken({ project_ids: [projectId] }, rotated);
    expect(fresh.split(".")[0]).not.toBe(token.split(".")[0]);
    expect((await producerFetch(list, { token: fresh, ...dropped })).status).toBe(200);
    expect((await producerFetch(list, { token: fresh })).status).toBe(401);

    const done = await completeJob(projectId);
    const { path } = await downloadUrl(done.id);
    expect((await producerFetch(path, { token: null, ...rotated })).status).toBe(200);
    expect((await producerFetch(path, { token: null, ...dropped })).status).toBe(401);
  });
});
