-- Refunds of a transfer or a payment, in full or in parts; of one between two shards
-- (either of its legs named) as two legs back (legs.sql). Of one between two databases,
-- on the payee's, naming its credit leg: the refund's debit leg goes back through the
-- saga (saga.sql) to p_payer, the original payer's wallet as its own database has it
-- ({id, owner_id, currency, status}), first tried by the relay at p_first_attempt_at;
-- the answer carries the credit leg to deliver ("credit_leg").

CREATE OR REPLACE FUNCTION ledger_refund(
    p_owner uuid, p_key text, p_hash text, p_transaction uuid, p_amount bigint,
    p_reason text, p_is_admin boolean, p_payer jsonb DEFAULT NULL,
    p_first_attempt_at timestamptz DEFAULT NULL
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb;
    v_original transactions%ROWTYPE;
    v_refunder_owner uuid;
    v_amount bigint;
    v_left bigint;
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
    IF v_original.id IS NULL THEN
        RAISE EXCEPTION 'a movement between databases is refunded on its credit leg''s'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT owner_id INTO v_refunder_owner
      FROM accounts WHERE id = v_original.destination_account_id;
    -- What is left to refund: less what refunds on their way to another database will
    -- take when they arrive (they count in refunded_amount once delivered: saga.sql).
    v_left := v_original.amount - v_original.refunded_amount;
    IF v_original.leg = 'credit' AND v_debit.id IS NULL THEN
        v_left := v_left - (SELECT coalesce(sum(r.amount), 0) FROM transactions AS r
                             WHERE r.refund_of = v_original.id AND r.status = 'pending');
    END IF;
    v_amount := coalesce(p_amount, v_left);
    IF NOT coalesce(p_is_admin, false) AND v_refunder_owner IS DISTINCT FROM p_owner THEN
        RETURN '{"outcome": "not_owner"}';
    ELSIF v_original.type NOT IN ('transfer', 'payment') OR v_left = 0 THEN
        RETURN '{"outcome": "not_refundable"}';
    ELSIF v_amount > v_left THEN
        RETURN '{"outcome": "amount_exceeds_refundable"}';
    END IF;

    -- The payer's wallet: the source, or for two legs the credit leg's counterparty.
    IF p_payer IS NULL THEN
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
    ELSIF v_debit.id IS NOT NULL OR v_original.leg IS DISTINCT FROM 'credit'
          OR (p_payer ->> 'id')::uuid IS DISTINCT FROM v_original.counterparty_account_id THEN
        RAISE EXCEPTION 'p_payer must be the payer of a movement from another database'
            USING ERRCODE = 'invalid_parameter_value';
    ELSE
        SELECT * INTO v_refunder FROM accounts
         WHERE id = v_original.destination_account_id FOR NO KEY UPDATE;
        v_payer := jsonb_populate_record(NULL::accounts, p_payer);
    END IF;

    -- The refunder pays the payer back.
    v_refusal := ledger_payment_refusal(v_refunder, v_payer, v_amount);
    IF v_refusal IS NOT NULL THEN
        RETURN v_refusal;
    END IF;

    IF p_payer IS NOT NULL THEN
        -- Two databases: the refund's debit leg, pending until its credit leg (the refund
        -- of the original's debit leg) is delivered to the payer's database.
        v_txn := ledger_send_leg(v_refunder, v_payer, v_amount, 0, 'refund', p_reason, NULL,
                                 p_owner, NULL, v_original.id, v_original.counterpart_id,
                                 p_first_attempt_at);
    ELSIF v_debit.id IS NULL THEN
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
    IF p_payer IS NULL THEN
        UPDATE transactions
           SET refunded_amount = refunded_amount + v_amount,
               status = CASE WHEN refunded_amount + v_amount = amount THEN 'refunded'
                             ELSE 'partially_refunded' END
         WHERE id IN (v_original.id, v_debit.id);
    END IF;

    RETURN ledger_idempotency_store(p_owner, p_key, 'refund', p_hash,
        jsonb_build_object('outcome', 'ok', 'transaction',
                           ledger_txn_json(v_txn, v_refunder.owner_id, v_payer.owner_id)))
        || CASE WHEN p_payer IS NULL THEN '{}'::jsonb
                ELSE jsonb_build_object('credit_leg', (SELECT o.credit_leg
                                                         FROM ledger_outbox AS o
                                                        WHERE o.transaction_id = v_txn.id))
           END;
END
$$;
