-- Undoes 0008 (the index is dropped CONCURRENTLY before, outside the transaction).
ALTER TABLE postings ALTER COLUMN created_at SET DEFAULT now();
