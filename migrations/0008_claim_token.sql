-- Migration: the claim's own mark. D1 can lose the answer of a statement that committed; the
-- consumer's claim of a batch is then retried, matches no row, and would leave the jobs it did
-- claim `processing` without a run until the claim timeout spent a retry of theirs. Each claim
-- now writes a fresh token, and after an ambiguous error the batch reads its jobs back by id and
-- token (primary-key reads: the token needs no index, and writing it costs no extra row: the claim
-- rewrites the row anyway).
ALTER TABLE export_jobs ADD COLUMN claim_token TEXT;
