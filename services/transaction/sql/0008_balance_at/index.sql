-- Postings by account and time: a balance at an instant is one lookup. Built CONCURRENTLY,
-- outside the migration's transaction (the revision runs it so): a plain CREATE INDEX would
-- hold back every write to postings, that is every movement of money, for the whole build.
CREATE INDEX CONCURRENTLY IF NOT EXISTS postings_account_created_idx
ON postings (account_id, created_at, account_version);
