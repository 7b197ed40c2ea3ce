// D1 can fail a statement transiently (Cloudflare documents retrying "Network connection lost",
// object resets and the like; local dev adds SQLITE_BUSY when two `wrangler dev` processes share
// one SQLite file). The guarded transitions are safe to run again — one that did commit matches no
// row the second time — so they are retried a few times with a short, jittered backoff.

const TRANSIENT =
  /SQLITE_BUSY|database is locked|Network connection lost|object to be reset|transient|internal error/i;

// Six attempts wait 0.8 to 1.5 s in all (50 ms doubling, jittered); four (under 0.4 s) were too few
// for the local SQLITE_BUSY under npm run chaos's load, where a progress report answered 500 in
// 2 of 6 runs of 1,000 jobs.
export async function retryTransient<T>(operation: () => Promise<T>, attempts = 6): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await operation();
    } catch (error) {
      if (attempt >= attempts || !TRANSIENT.test(String(error))) throw error;
      const backoffMs = 25 * 2 ** attempt * (0.5 + Math.random() / 2);
      await new Promise((resolve) => setTimeout(resolve, backoffMs));
    }
  }
}
