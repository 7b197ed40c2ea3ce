-- Migration: all-or-nothing quotas for POST /exports/batch. A batch's D1 transaction starts by
-- inserting one row here whose `ok` says whether every fairness key of the batch stays within
-- MAX_ACTIVE_PER_USER with all of its new jobs (active_jobs, migration 0014); `ok = 0` fails the
-- CHECK, and the whole transaction (every insert of the batch) is rolled back. The row is deleted
-- at the end of the same transaction: the table is empty between batches.
CREATE TABLE IF NOT EXISTS quota_checks (
    batch TEXT PRIMARY KEY,
    ok INTEGER NOT NULL CHECK (ok = 1)
) WITHOUT ROWID;
