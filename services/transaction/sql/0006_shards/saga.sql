-- Movements between wallets of two databases: a saga on a transactional outbox. The debit
-- leg (legs.sql) commits on the payer's database with an outbox row carrying its credit
-- leg; the service delivers that to the payee's database (ledger_receive_leg, idempotent
-- by the debit leg's id) and settles the debit leg with the answer (ledger_settle_leg):
-- posted when delivered, failed (its money back to the payer) when refused. Until then
-- the debit leg is pending and its money sits in the in-transit account, so every
-- shard's books balance at every instant. A relay in every instance claims what a crash
-- or an outage left (ledger_claim_due_legs).

-- Books the debit leg of p_amount from p_payer (locked) to p_payee, a wallet of another
-- database as last read there, as pending, with its outbox row; returns it. The
-- arguments are ledger_book_legs's; p_first_attempt_at is when the relay may first try
-- (the caller delivers before then).
CREATE OR REPLACE FUNCTION ledger_send_leg(
    p_payer accounts, p_payee accounts, p_amount bigint, p_release bigint, p_type text,
    p_memo text, p_metadata jsonb, p_initiated_by uuid, p_hold uuid,
    p_debit_refund_of uuid, p_credit_refund_of uuid, p_first_attempt_at timestamptz
) RETURNS transactions LANGUAGE plpgsql AS $$
DECLARE
    v_payee_shard smallint := ledger_shard_of(p_payee.id);
    v_out uuid := ledger_transit_account(
        p_payer.currency, ledger_shard_of(p_payer.id), v_payee_shard
    );
    v_debit transactions%ROWTYPE;
BEGIN
    INSERT INTO transactions (type, status, amount, currency, source_account_id,
                              destination_account_id, memo, metadata, initiated_by,
                              hold_id, refund_of, leg, counterparty_account_id,
                              counterparty_owner_id, counterpart_id)
    VALUES (p_type, 'pending', p_amount, p_payer.currency, p_payer.id, v_out, p_memo,
            coalesce(p_metadata, '{}'), p_initiated_by, p_hold, p_debit_refund_of, 'debit',
            p_payee.id, p_payee.owner_id, ledger_new_id(v_payee_shard))
    RETURNING * INTO v_debit;
    -- The in-transit account is locked last, by the move (after the payer's wallet).
    PERFORM ledger_move(v_debit.id, p_payer.id, v_out, p_amount, p_release);
    INSERT INTO ledger_outbox (transaction_id, destination_shard, amount, currency,
                               credit_leg, next_attempt_at)
    VALUES (v_debit.id, v_payee_shard, p_amount, p_payer.currency,
            jsonb_build_object(
                'id', v_debit.counterpart_id, 'debit_id', v_debit.id, 'type', p_type,
                'amount', p_amount, 'currency', p_payer.currency, 'payee', p_payee.id,
                'payer', p_payer.id, 'payer_owner', p_payer.owner_id,
                'memo', p_memo, 'metadata', v_debit.metadata,
                'initiated_by', p_initiated_by, 'hold_id', p_hold,
                'refund_of', p_credit_refund_of, 'receipt_number', v_debit.receipt_number,
                'created_at', v_debit.created_at),
            p_first_attempt_at);
    RETURN v_debit;
END
$$;

-- On the payee's database: books the credit leg (as ledger_send_leg wrote it) from the
-- in-transit account with the payer's shard to the payee, or refuses it, once: a second
-- delivery of the same leg gets the first one's answer. Returns {"outcome": "delivered"}
-- or {"outcome": "refused", "reason": <the refusal's outcome word>}.
CREATE OR REPLACE FUNCTION ledger_receive_leg(p_leg jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_debit_id uuid := (p_leg ->> 'debit_id')::uuid;
    v_credit_id uuid := (p_leg ->> 'id')::uuid;
    v_amount bigint := (p_leg ->> 'amount')::bigint;
    v_payee accounts%ROWTYPE;
    v_reason text;
    v_in uuid;
BEGIN
    -- The payee's wallet first (as every movement locks wallets before in-transit
    -- accounts): two deliveries of one leg take turns here.
    SELECT * INTO v_payee FROM accounts
     WHERE id = (p_leg ->> 'payee')::uuid AND kind = 'user_wallet'
       FOR NO KEY UPDATE;
    IF EXISTS (SELECT FROM transactions WHERE id = v_credit_id) THEN
        RETURN '{"outcome": "delivered"}';
    END IF;
    SELECT reason INTO v_reason FROM ledger_refused_legs WHERE transaction_id = v_debit_id;
    IF FOUND THEN
        RETURN jsonb_build_object('outcome', 'refused', 'reason', v_reason);
    END IF;

    v_reason := CASE
        WHEN v_payee.id IS NULL THEN 'destination_not_found'
        WHEN v_payee.currency <> p_leg ->> 'currency' THEN 'currency_mismatch'
        WHEN v_payee.status = 'closed' THEN 'destination_closed'
    END;
    IF v_reason IS NOT NULL THEN
        INSERT INTO ledger_refused_legs (transaction_id, account_id, amount, reason)
        VALUES (v_debit_id, (p_leg ->> 'payee')::uuid, v_amount, v_reason)
        ON CONFLICT DO NOTHING;
        RETURN jsonb_build_object('outcome', 'refused', 'reason', v_reason);
    END IF;

    v_in := ledger_transit_account(
        v_payee.currency, ledger_shard_of(v_payee.id),
        ledger_shard_of((p_leg ->> 'payer')::uuid)
    );
    INSERT INTO transactions (id, type, amount, currency, source_account_id,
                              destination_account_id, memo, metadata, initiated_by,
                              hold_id, refund_of, leg, counterparty_account_id,
                              counterparty_owner_id, counterpart_id, receipt_number,
                              created_at)
    VALUES (v_credit_id, p_leg ->> 'type', v_amount, v_payee.currency, v_in, v_payee.id,
            p_leg ->> 'memo', p_leg -> 'metadata', (p_leg ->> 'initiated_by')::uuid,
            (p_leg ->> 'hold_id')::uuid, (p_leg ->> 'refund_of')::uuid, 'credit',
            (p_leg ->> 'payer')::uuid, (p_leg ->> 'payer_owner')::uuid, v_debit_id,
            p_leg ->> 'receipt_number', (p_leg ->> 'created_at')::timestamptz);
    PERFORM ledger_move(v_credit_id, v_in, v_payee.id, v_amount, 0);
    IF p_leg ->> 'type' = 'refund' THEN
        -- The refund of a movement from here: its debit leg (delivered, since the refund
        -- started from its credit leg; settled now if its settling is late) is refunded
        -- as much as its credit leg was.
        PERFORM ledger_settle_leg((p_leg ->> 'refund_of')::uuid, '{"outcome": "delivered"}');
        UPDATE transactions
           SET refunded_amount = refunded_amount + v_amount,
               status = CASE WHEN refunded_amount + v_amount = amount THEN 'refunded'
                             ELSE 'partially_refunded' END
         WHERE id = (p_leg ->> 'refund_of')::uuid;
    END IF;
    RETURN '{"outcome": "delivered"}';
END
$$;

-- On the payer's database: ends the debit leg p_debit with its delivery's answer (as
-- ledger_receive_leg gave it) and removes its outbox row: posted when delivered; when
-- refused, failed with the reason, and its money back from the in-transit account to
-- the payer (reversing postings on the leg itself, which in the end moved nothing).
-- Once: a leg settled already is returned as it is. Returns the leg.
CREATE OR REPLACE FUNCTION ledger_settle_leg(p_debit uuid, p_answer jsonb)
RETURNS transactions LANGUAGE plpgsql AS $$
DECLARE
    v_leg transactions%ROWTYPE;
BEGIN
    PERFORM FROM ledger_outbox WHERE transaction_id = p_debit FOR UPDATE;
    IF NOT FOUND THEN
        SELECT * INTO v_leg FROM transactions WHERE id = p_debit;
        RETURN v_leg;
    END IF;
    IF p_answer ->> 'outcome' = 'delivered' THEN
        UPDATE transactions SET status = 'posted', settled_at = now()
         WHERE id = p_debit
        RETURNING * INTO v_leg;
        -- A refund delivered counts on the movement it refunds only now (while on its
        -- way it is held back from what is left to refund: ledger_refund).
        IF v_leg.type = 'refund' THEN
            UPDATE transactions
               SET refunded_amount = refunded_amount + v_leg.amount,
                   status = CASE WHEN refunded_amount + v_leg.amount = amount THEN 'refunded'
                                 ELSE 'partially_refunded' END
             WHERE id = v_leg.refund_of;
        END IF;
    ELSIF p_answer ->> 'outcome' = 'refused' THEN
        SELECT * INTO v_leg FROM transactions WHERE id = p_debit;
        -- The payer's wallet before the in-transit account, as everywhere.
        PERFORM FROM accounts WHERE id = v_leg.source_account_id FOR NO KEY UPDATE;
        PERFORM ledger_move(
            p_debit, v_leg.destination_account_id, v_leg.source_account_id, v_leg.amount, 0
        );
        UPDATE transactions
           SET status = 'failed', settled_at = now(), failure_code = p_answer ->> 'reason',
               failure_message = 'the other side refused the money: '
                                 || replace(p_answer ->> 'reason', '_', ' ')
         WHERE id = p_debit
        RETURNING * INTO v_leg;
        -- A capture refused: its hold released after all (its money is back above).
        UPDATE holds SET status = 'voided', captured_amount = 0,
                         capture_transaction_id = NULL, updated_at = now()
         WHERE id = v_leg.hold_id AND capture_transaction_id = p_debit;
    ELSE
        RAISE EXCEPTION 'a delivery answers delivered or refused, not %', p_answer
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM ledger_outbox WHERE transaction_id = p_debit;
    RETURN v_leg;
END
$$;

-- The relay's claim: up to p_limit outbox rows due at p_now, each pushed back by its
-- backoff (p_base_seconds doubling per attempt, at most p_max_seconds), which is also
-- the lease that keeps other instances off it meanwhile. SKIP LOCKED: a row being
-- settled, or claimed by another instance now, is left to it.
CREATE OR REPLACE FUNCTION ledger_claim_due_legs(
    p_now timestamptz, p_limit integer, p_base_seconds double precision,
    p_max_seconds double precision
) RETURNS TABLE (
    transaction_id uuid, destination_shard smallint, credit_leg jsonb, attempts integer
) LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH due AS (
        SELECT o.transaction_id FROM ledger_outbox AS o
         WHERE o.next_attempt_at <= p_now
           AND ledger_shard_of(o.transaction_id) IN (
               SELECT s.shard FROM ledger_shards AS s WHERE s.state = 'held'
           )
         ORDER BY o.next_attempt_at
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    )
    UPDATE ledger_outbox AS o
       SET attempts = o.attempts + 1,
           next_attempt_at = p_now + make_interval(
               secs => least(p_base_seconds * 2 ^ least(o.attempts, 30), p_max_seconds)
           )
      FROM due
     WHERE o.transaction_id = due.transaction_id
    RETURNING o.transaction_id, o.destination_shard, o.credit_leg, o.attempts;
END
$$;
