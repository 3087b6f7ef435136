-- Undoes 0008.
DROP INDEX postings_account_created_idx;
ALTER TABLE postings ALTER COLUMN created_at SET DEFAULT now();
