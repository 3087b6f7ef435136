-- Refunds of a transfer or a payment, in full or in parts.

CREATE OR REPLACE FUNCTION ledger_refund(
    p_owner uuid, p_key text, p_hash text, p_transaction uuid, p_amount bigint,
    p_reason text, p_is_admin boolean
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb;
    v_original transactions%ROWTYPE;
    v_refunder_owner uuid;
    v_amount bigint;
    v_account accounts%ROWTYPE;
    v_refunder accounts%ROWTYPE;
    v_payer accounts%ROWTYPE;
    v_txn transactions%ROWTYPE;
    v_refusal jsonb;
BEGIN
    IF p_amount IS NOT NULL AND p_amount <= 0 THEN
        RAISE EXCEPTION 'amount must be positive (or null for all that is left)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_result := ledger_idempotency_begin(p_owner, p_key, 'refund', p_hash);
    IF v_result IS NOT NULL THEN
        RETURN v_result;
    END IF;

    -- The original first: concurrent refunds of it queue here.
    SELECT * INTO v_original FROM transactions WHERE id = p_transaction FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN '{"outcome": "transaction_not_found"}';
    END IF;
    SELECT owner_id INTO v_refunder_owner
      FROM accounts WHERE id = v_original.destination_account_id;
    v_amount := coalesce(p_amount, v_original.amount - v_original.refunded_amount);
    IF NOT coalesce(p_is_admin, false) AND v_refunder_owner IS DISTINCT FROM p_owner THEN
        RETURN '{"outcome": "not_owner"}';
    ELSIF v_original.type NOT IN ('transfer', 'payment') OR v_original.status = 'refunded' THEN
        RETURN '{"outcome": "not_refundable"}';
    ELSIF v_amount > v_original.amount - v_original.refunded_amount THEN
        RETURN '{"outcome": "amount_exceeds_refundable"}';
    END IF;

    FOR v_account IN
        SELECT * FROM ledger_lock_accounts(
            v_original.source_account_id, v_original.destination_account_id
        )
    LOOP
        IF v_account.id = v_original.destination_account_id THEN
            v_refunder := v_account;
        ELSE
            v_payer := v_account;
        END IF;
    END LOOP;

    -- The refunder pays the payer back.
    v_refusal := ledger_payment_refusal(v_refunder, v_payer, v_amount);
    IF v_refusal IS NOT NULL THEN
        RETURN v_refusal;
    END IF;

    INSERT INTO transactions (type, amount, currency, source_account_id,
                              destination_account_id, memo, initiated_by, refund_of)
    VALUES ('refund', v_amount, v_original.currency, v_refunder.id, v_payer.id, p_reason,
            p_owner, v_original.id)
    RETURNING * INTO v_txn;
    PERFORM ledger_move(v_txn.id, v_refunder.id, v_payer.id, v_amount, 0);
    UPDATE transactions
       SET refunded_amount = refunded_amount + v_amount,
           status = CASE WHEN refunded_amount + v_amount = amount THEN 'refunded'
                         ELSE 'partially_refunded' END
     WHERE id = v_original.id;

    RETURN ledger_idempotency_store(p_owner, p_key, 'refund', p_hash,
        jsonb_build_object('outcome', 'ok', 'transaction',
                           ledger_txn_json(v_txn, v_refunder.owner_id, v_payer.owner_id)));
END
$$;
