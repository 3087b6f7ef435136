-- Dropped without holding back writes to postings, as it was built.
DROP INDEX CONCURRENTLY IF EXISTS postings_account_created_idx;
