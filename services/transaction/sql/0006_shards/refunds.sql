-- Refunds of a transfer or a payment, in full or in parts; of one between two shards
-- (either of its legs named) as two legs back (legs.sql).

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
    v_counterpart uuid;
    v_leg transactions%ROWTYPE;
    v_debit transactions%ROWTYPE;
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

    -- The original first (both legs, in id order, if it is a movement between shards):
    -- concurrent refunds of it queue here, whichever leg they name.
    SELECT counterpart_id INTO v_counterpart FROM transactions WHERE id = p_transaction;
    IF NOT FOUND THEN
        RETURN '{"outcome": "transaction_not_found"}';
    END IF;
    FOR v_leg IN
        SELECT * FROM transactions WHERE id IN (p_transaction, v_counterpart)
         ORDER BY id FOR NO KEY UPDATE
    LOOP
        IF v_leg.leg = 'debit' THEN
            v_debit := v_leg;
        ELSE
            v_original := v_leg;  -- the credit leg, or the one transaction
        END IF;
    END LOOP;
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

    -- The payer's wallet: the source, or for two legs the credit leg's counterparty.
    FOR v_account IN
        SELECT * FROM ledger_lock_accounts(
            coalesce(v_original.counterparty_account_id, v_original.source_account_id),
            v_original.destination_account_id
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

    IF v_debit.id IS NULL THEN
        INSERT INTO transactions (type, amount, currency, source_account_id,
                                  destination_account_id, memo, initiated_by, refund_of)
        VALUES ('refund', v_amount, v_original.currency, v_refunder.id, v_payer.id, p_reason,
                p_owner, v_original.id)
        RETURNING * INTO v_txn;
        PERFORM ledger_move(v_txn.id, v_refunder.id, v_payer.id, v_amount, 0);
    ELSE
        -- Back the other way, as two legs, each the refund of the original's leg on its
        -- shard; the refunder's is the answer.
        SELECT * INTO v_txn
          FROM ledger_book_legs(v_refunder, v_payer, v_amount, 0, 'refund', p_reason, NULL,
                                p_owner, NULL, v_original.id, v_debit.id)
         WHERE leg = 'debit';
    END IF;
    UPDATE transactions
       SET refunded_amount = refunded_amount + v_amount,
           status = CASE WHEN refunded_amount + v_amount = amount THEN 'refunded'
                         ELSE 'partially_refunded' END
     WHERE id IN (v_original.id, v_debit.id);

    RETURN ledger_idempotency_store(p_owner, p_key, 'refund', p_hash,
        jsonb_build_object('outcome', 'ok', 'transaction',
                           ledger_txn_json(v_txn, v_refunder.owner_id, v_payer.owner_id)));
END
$$;
