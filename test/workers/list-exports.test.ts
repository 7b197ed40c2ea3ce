import { describe, expect, it } from "vitest";
import { freshProjectId, overlayRequest, postJson, producerFetch, putInput } from "./helpers.ts";

interface ListPage {
  jobs: { id: string; project_id: number; status: string }[];
  next_cursor: string | null;
}

async function createJobs(projectId: number, n: number): Promise<string[]> {
  await putInput("uploads/list.mp4");
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const res = await postJson("/exports", overlayRequest(projectId, "uploads/list.mp4"));
    ids.push(((await res.json()) as { job: { id: string } }).job.id);
  }
  return ids;
}

describe("GET /exports", () => {
  it("lists several projects newest first and pages with a cursor until next_cursor is null", async () => {
    const a = freshProjectId();
    const b = freshProjectId();
    const idsA = await createJobs(a, 3);
    const idsB = await createJobs(b, 2);
    const newestFirst = [...idsA, ...idsB].reverse();

    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const query: string = `/exports?project_id=${a}&project_id=${b}&limit=2${cursor ? `&cursor=${cursor}` : ""}`;
      const res = await producerFetch(query);
      expect(res.status).toBe(200);
      const page = (await res.json()) as ListPage;
      seen.push(...page.jobs.map((job) => job.id));
      cursor = page.next_cursor;
      pages += 1;
    } while (cursor);
    expect(seen).toEqual(newestFirst);
    expect(pages).toBe(3);
  });

  it("filters active jobs", async () => {
    const projectId = freshProjectId();
    const [first, second] = await createJobs(projectId, 2);
    const { env } = await import("cloudflare:workers");
    await env.DB.prepare("UPDATE export_jobs SET status = 'complete' WHERE id = ?")
      .bind(first)
      .run();
    const res = await producerFetch(`/exports?project_id=${projectId}&active=true`);
    const page = (await res.json()) as ListPage;
    expect(page.jobs.map((job) => job.id)).toEqual([second]);
    expect(page.next_cursor).toBeNull();
  });

  it("rejects a missing project_id, more than 100, a bad limit or cursor with 400", async () => {
    const many = Array.from({ length: 101 }, (_, i) => `project_id=${i + 1}`).join("&");
    for (const query of [
      "",
      "?limit=5",
      `?${many}`,
      "?project_id=1&limit=0",
      "?project_id=1&limit=101",
      "?project_id=1&limit=abc",
      "?project_id=abc",
      "?project_id=1&cursor=not-a-cursor",
      "?project_id=1&active=maybe",
    ]) {
      const res = await producerFetch(`/exports${query}`);
      expect(res.status, query).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe(
        "invalid_request",
      );
    }
    expect((await producerFetch("/exports?project_id=1", { token: null })).status).toBe(401);
  });
});
