-- Batches of transfers: one call, one commit, one outcome per transfer.

-- p_items: [{"key", "hash", "source", "destination", "amount", "currency", "memo",
-- "metadata"[, "payee"]}, ...]; returns the outcomes in the same order. "payee": the
-- destination as its own database has it, when that is another database (as for
-- ledger_transfer: that transfer is a debit leg, first tried by the relay at
-- p_first_attempt_at, and its outcome carries the credit leg).
CREATE OR REPLACE FUNCTION ledger_transfer_batch(
    p_owner uuid, p_items jsonb, p_first_attempt_at timestamptz DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_item jsonb;
    v_results jsonb := '[]';
BEGIN
    IF p_owner IS NULL OR p_items IS NULL OR jsonb_typeof(p_items) <> 'array'
       OR jsonb_array_length(p_items) NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'owner and an array of 1 to 100 transfers are required'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Everything the batch's transfers lock, up front, in one order (groups.sql).
    PERFORM ledger_lock_transfers(
        (SELECT jsonb_agg(i || jsonb_build_object('owner', p_owner))
           FROM jsonb_array_elements(p_items) AS i)
    );
    FOR v_item IN SELECT value FROM jsonb_array_elements(p_items) LOOP
        v_results := v_results || jsonb_build_array(ledger_transfer(
            p_owner, v_item ->> 'key', v_item ->> 'hash', (v_item ->> 'source')::uuid,
            (v_item ->> 'destination')::uuid, (v_item ->> 'amount')::bigint,
            v_item ->> 'currency', v_item ->> 'memo', v_item -> 'metadata',
            nullif(v_item -> 'payee', 'null'), p_first_attempt_at));
    END LOOP;
    RETURN v_results;
END
$$;
