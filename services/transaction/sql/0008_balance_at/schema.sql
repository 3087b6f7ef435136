-- Balances at an instant (issue 16): a wallet's balance at time t is the balance_after of
-- its last posting made at or before t, one lookup of the index below.
--
-- For "last by time" to be "last by version", a posting's time must follow its account's
-- versions. now() does not: it is when its transaction began, and a transaction that began
-- earlier may take an account's next version after one that began later (it waited for
-- the row lock). clock_timestamp() at insert does: every posting is written after its
-- account is locked (ledger_lock_accounts, or the UPDATE of ledger_book_legs), so the next
-- version of an account is always written later. (Postings from before this revision keep
-- their now(); a lock wait could misorder two of them by a few milliseconds.)
ALTER TABLE postings ALTER COLUMN created_at SET DEFAULT clock_timestamp();

CREATE INDEX postings_account_created_idx ON postings (account_id, created_at, account_version);
