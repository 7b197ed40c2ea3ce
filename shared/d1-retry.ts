// D1 can fail a statement transiently (Cloudflare documents retrying "Network connection lost",
// object resets and the like; local dev adds SQLITE_BUSY when two `wrangler dev` processes share
// one SQLite file). The guarded transitions are safe to run again — one that did commit matches no
// row the second time — so they are retried a few times with a short, jittered backoff.
//
// Some of those errors can come *after* the commit: the statement ran, only its answer was lost.
// A retry then matches no row and would report "nothing changed". `retryTransientOutcome` says
// whether a failed try was such an ambiguous one, so the caller can read back what happened
// (shared/sql/jobs/row.ts `guardedRow`).

const TRANSIENT =
  /SQLITE_BUSY|database is locked|Network connection lost|object to be reset|transient|internal error/i;
/** Refused before anything ran: the statement surely did not commit. */
const NOT_RUN = /SQLITE_BUSY|database is locked/i;

/** Whether `error` is one a retry may get past. */
export function isTransient(error: unknown): boolean {
  return TRANSIENT.test(String(error));
}

/** Whether a statement that failed with `error` may have committed all the same. */
export function mayHaveCommitted(error: unknown): boolean {
  return isTransient(error) && !NOT_RUN.test(String(error));
}

// Six attempts wait 0.8 to 1.5 s in all (50 ms doubling, jittered); four (under 0.4 s) were too few
// for the local SQLITE_BUSY under npm run chaos's load, where a progress report answered 500 in
// 2 of 6 runs of 1,000 jobs.
export async function retryTransient<T>(operation: () => Promise<T>, attempts = 6): Promise<T> {
  return (await retryTransientOutcome(operation, attempts)).value;
}

/** retryTransient, telling also whether a failed try may have committed (`ambiguous`). */
export async function retryTransientOutcome<T>(
  operation: () => Promise<T>,
  attempts = 6,
): Promise<{ value: T; ambiguous: boolean }> {
  let ambiguous = false;
  for (let attempt = 1; ; attempt++) {
    try {
      return { value: await operation(), ambiguous };
    } catch (error) {
      if (attempt >= attempts || !isTransient(error)) throw error;
      ambiguous ||= mayHaveCommitted(error);
      const backoffMs = 25 * 2 ** attempt * (0.5 + Math.random() / 2);
      await new Promise((resolve) => setTimeout(resolve, backoffMs));
    }
  }
}
