-- A database made by 0001-0004 as they were before the SQL moved into these files
-- carries PostgreSQL's generated names for ten CHECK constraints; give them ours. Each
-- rename happens only where the old name is still there: on a database made by the
-- files, this does nothing.
DO $$
DECLARE
    v_rename record;
BEGIN
    FOR v_rename IN
        SELECT r.relation, r.old_name, r.new_name
          FROM (VALUES
                ('holds', 'holds_check', 'holds_captured_amount_check'),
                ('holds', 'holds_check1', 'holds_distinct_accounts_check'),
                ('holds', 'holds_check2', 'holds_expiry_check'),
                ('transactions', 'transactions_check', 'transactions_amount_positive_check'),
                ('transactions', 'transactions_check1',
                 'transactions_status_change_amount_check'),
                ('transactions', 'transactions_check2', 'transactions_refunded_amount_check'),
                ('transactions', 'transactions_check3', 'transactions_distinct_accounts_check'),
                ('transactions', 'transactions_check4', 'transactions_refund_of_check'),
                ('transactions', 'transactions_check5', 'transactions_hold_check'),
                ('transactions', 'transactions_check6', 'transactions_refundable_type_check')
               ) AS r (relation, old_name, new_name)
          JOIN pg_constraint AS c
            ON c.conrelid = r.relation::regclass AND c.conname = r.old_name
    LOOP
        EXECUTE format('ALTER TABLE %I RENAME CONSTRAINT %I TO %I',
                       v_rename.relation, v_rename.old_name, v_rename.new_name);
    END LOOP;
END
$$;
