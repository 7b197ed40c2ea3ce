// Reads from D1's replicas (the Sessions API): every request runs in a D1 session, reads may be
// served by a replica, every answer carries the session's bookmark, and a client that sends it
// back reads its own writes. Miniflare has no replicas: the session's constraint is observed
// through a wrapper of the real binding, and a lagging replica is played by a session that does
// not see one job yet.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { READ_SQL } from "../../shared/sql/jobs/reads.ts";
import {
  callbackPath,
  countJobs,
  freshProjectId,
  overlayRequest,
  postJson,
  processingJob,
  producerFetch,
  putInput,
  readJob,
} from "./helpers.ts";

const BOOKMARK = "x-d1-bookmark";

/** The real binding, noting the constraint or bookmark of every session opened on it. */
function sessionSpy(lagging?: string) {
  const opened: (string | undefined)[] = [];
  const db = new Proxy(env.DB, {
    get(target, prop) {
      if (prop === "withSession") {
        return (constraint?: string) => {
          opened.push(constraint);
          const session = target.withSession(constraint);
          if (!lagging) return session;
          // A replica that has not received job `lagging` yet.
          return {
            prepare: (sql: string) =>
              sql === READ_SQL.byId
                ? session.prepare(`${sql} AND id <> '${lagging}'`)
                : session.prepare(sql),
            batch: (statements: D1PreparedStatement[]) => session.batch(statements),
            getBookmark: () => session.getBookmark(),
          };
        };
      }
      const value = Reflect.get(target, prop);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { db, opened };
}

async function createJob(projectId = freshProjectId()) {
  const key = `uploads/${projectId}/in.mp4`;
  await putInput(key);
  const res = await postJson("/exports", overlayRequest(projectId, key));
  expect(res.status).toBe(202);
  const { job } = (await res.json()) as { job: { id: string } };
  return { id: job.id, bookmark: res.headers.get(BOOKMARK), projectId };
}

describe("D1 sessions", () => {
  it("answers carry the session's bookmark; a client that sends it back reads its own write", async () => {
    const created = await createJob();
    expect(created.bookmark).toEqual(expect.any(String));
    expect(created.bookmark).not.toBe("");

    const res = await producerFetch(`/exports/${created.id}`, {
      headers: { [BOOKMARK]: created.bookmark ?? "" },
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { job: { id: string } }).job.id).toBe(created.id);
    expect(res.headers.get(BOOKMARK)).toEqual(expect.any(String));
  });

  it("reads start anywhere, or at the bookmark given; writes start at the primary", async () => {
    const created = await createJob();
    const spy = sessionSpy();
    const bindings = { DB: spy.db };

    expect((await producerFetch(`/exports/${created.id}`, { bindings })).status).toBe(200);
    const given = created.bookmark ?? "";
    const withBookmark = await producerFetch(`/exports/${created.id}`, {
      bindings,
      headers: { [BOOKMARK]: given },
    });
    expect(withBookmark.status).toBe(200);
    const projectId = freshProjectId();
    await putInput(`uploads/${projectId}/in.mp4`);
    const write = await postJson(
      "/exports",
      overlayRequest(projectId, `uploads/${projectId}/in.mp4`),
      { bindings },
    );
    expect(write.status).toBe(202);
    expect(spy.opened).toEqual(["first-unconstrained", given, "first-primary"]);
  });

  it("a GET of a job the replica does not have yet asks the primary before answering 404", async () => {
    const created = await createJob();
    const spy = sessionSpy(created.id);

    const res = await producerFetch(`/exports/${created.id}`, { bindings: { DB: spy.db } });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { job: { id: string } }).job.id).toBe(created.id);
    const events = await producerFetch(`/exports/${created.id}/events`, {
      bindings: { DB: spy.db },
    });
    expect(events.status).toBe(200);

    // Both reads went to the lagging replica first.
    expect(spy.opened).toEqual(["first-unconstrained", "first-unconstrained"]);

    const missing = await producerFetch(`/exports/${crypto.randomUUID()}`, {
      bindings: { DB: spy.db },
    });
    expect(missing.status).toBe(404);
  });

  it("lets the allowed origin's script read the bookmark (CORS)", async () => {
    const created = await createJob();
    const res = await producerFetch(`/exports/${created.id}`, {
      headers: { origin: "https://editor.test" },
      vars: { CORS_ORIGIN: "https://editor.test" },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("access-control-expose-headers")).toContain(BOOKMARK);
    expect(res.headers.get(BOOKMARK)).toEqual(expect.any(String));
  });

  it("RunPod's callbacks run on the primary without a session: no client reads their bookmark", async () => {
    const job = await processingJob({ runId: "run-no-session" });
    const spy = sessionSpy();
    const res = await postJson(
      await callbackPath("progress", job.id, job.attempt),
      { progress: 30 },
      { token: null, bindings: { DB: spy.db } },
    );
    expect(res.status).toBe(204);
    const hook = await postJson(
      await callbackPath("webhook", job.id, job.attempt),
      { id: "run-no-session", status: "IN_PROGRESS" },
      { token: null, bindings: { DB: spy.db } },
    );
    expect(hook.status).toBe(200);
    expect(spy.opened).toEqual([]);
    expect((await readJob(job.id))?.progress).toBe(30);
  });

  it("a malformed bookmark is 400 invalid_bookmark and writes nothing", async () => {
    const projectId = freshProjectId();
    const key = `uploads/${projectId}/in.mp4`;
    await putInput(key);
    const res = await postJson("/exports", overlayRequest(projectId, key), {
      headers: { [BOOKMARK]: "<not a bookmark>" },
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("invalid_bookmark");
    expect(await countJobs(projectId)).toBe(0);
  });
});
