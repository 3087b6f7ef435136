-- A concurrent build that failed (cancelled, a deadlock) leaves an index marked invalid
-- under the same name, which IF NOT EXISTS would then take for done: dropped, to build again.
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_index AS i
        JOIN pg_class AS c ON c.oid = i.indexrelid
        WHERE c.relname = 'postings_account_created_idx' AND NOT i.indisvalid
    ) THEN
        DROP INDEX postings_account_created_idx;
    END IF;
END
$$;
