-- Holds: money reserved on a payer's wallet for a merchant, then captured, voided
-- or expired. The hold lives on the payer's shard; its merchant may be a wallet of
-- another database (p_merchant: that wallet as its own database has it, {id, owner_id,
-- currency, status}), and then its capture is the debit leg of a saga (saga.sql).

CREATE OR REPLACE FUNCTION ledger_create_hold(
    p_owner uuid, p_key text, p_hash text, p_wallet uuid, p_merchant_wallet uuid,
    p_amount bigint, p_currency text, p_expires_at timestamptz, p_memo text,
    p_merchant jsonb DEFAULT NULL
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb;
    v_payer accounts%ROWTYPE;
    v_merchant accounts%ROWTYPE;
    v_hold holds%ROWTYPE;
    v_refusal jsonb;
BEGIN
    PERFORM ledger_require_money(p_amount, p_currency);
    IF p_expires_at IS NULL OR p_expires_at <= now() THEN
        RAISE EXCEPTION 'expires_at must be in the future'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_result := ledger_idempotency_begin(p_owner, p_key, 'create_hold', p_hash);
    IF v_result IS NOT NULL THEN
        RETURN v_result;
    END IF;

    -- Only the payer changes. The merchant is read, not locked.
    SELECT * INTO v_payer FROM accounts
     WHERE id = p_wallet AND kind = 'user_wallet' AND owner_id = p_owner
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN '{"outcome": "wallet_not_found"}';
    END IF;
    IF p_merchant IS NULL THEN
        SELECT * INTO v_merchant FROM accounts
         WHERE id = p_merchant_wallet AND kind = 'user_wallet';
    ELSIF (p_merchant ->> 'id')::uuid IS DISTINCT FROM p_merchant_wallet THEN
        RAISE EXCEPTION 'p_merchant must be the merchant wallet'
            USING ERRCODE = 'invalid_parameter_value';
    ELSE
        v_merchant := jsonb_populate_record(NULL::accounts, p_merchant);
    END IF;
    IF v_merchant.id IS NULL THEN
        RETURN '{"outcome": "destination_not_found"}';
    ELSIF v_merchant.owner_id = p_owner THEN
        RETURN '{"outcome": "self_transfer"}';
    ELSIF v_payer.currency <> p_currency OR v_merchant.currency <> p_currency THEN
        RETURN '{"outcome": "currency_mismatch"}';
    END IF;
    -- The merchant's row is not locked: a status it takes meanwhile is checked again at
    -- capture, which locks both.
    v_refusal := ledger_payment_refusal(v_payer, v_merchant, p_amount);
    IF v_refusal IS NOT NULL THEN
        RETURN v_refusal;
    END IF;

    UPDATE accounts SET held = held + p_amount, updated_at = now() WHERE id = p_wallet;
    INSERT INTO holds (account_id, merchant_account_id, merchant_owner_id, currency, amount,
                       expires_at, memo, created_by)
    VALUES (p_wallet, p_merchant_wallet, v_merchant.owner_id, v_payer.currency, p_amount,
            p_expires_at, p_memo, p_owner)
    RETURNING * INTO v_hold;

    RETURN ledger_idempotency_store(p_owner, p_key, 'create_hold', p_hash,
        jsonb_build_object('outcome', 'ok', 'hold', ledger_hold_json(v_hold)));
END
$$;

-- p_merchant: the merchant's wallet when it is another database's (as for
-- ledger_create_hold); the capture is then the debit leg, pending, and the answer carries
-- the credit leg to deliver ("credit_leg"), first tried by the relay at
-- p_first_attempt_at.
CREATE OR REPLACE FUNCTION ledger_capture_hold(
    p_owner uuid, p_key text, p_hash text, p_hold uuid, p_amount bigint, p_now timestamptz,
    p_merchant jsonb DEFAULT NULL, p_first_attempt_at timestamptz DEFAULT NULL
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb;
    v_hold holds%ROWTYPE;
    v_account accounts%ROWTYPE;
    v_payer accounts%ROWTYPE;
    v_merchant accounts%ROWTYPE;
    v_amount bigint;
    v_txn transactions%ROWTYPE;
    v_leg transactions%ROWTYPE;
    v_capture_id uuid;
    v_refusal jsonb;
BEGIN
    IF p_amount IS NOT NULL AND p_amount <= 0 THEN
        RAISE EXCEPTION 'amount must be positive (or null for all)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_now IS NULL THEN
        RAISE EXCEPTION 'now is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_result := ledger_idempotency_begin(p_owner, p_key, 'capture_hold', p_hash);
    IF v_result IS NOT NULL THEN
        RETURN v_result;
    END IF;

    SELECT * INTO v_hold FROM holds WHERE id = p_hold FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN '{"outcome": "hold_not_found"}';
    END IF;
    v_amount := coalesce(p_amount, v_hold.amount);
    IF v_hold.merchant_owner_id IS DISTINCT FROM p_owner THEN
        RETURN '{"outcome": "not_owner"}';
    ELSIF v_hold.status <> 'active' THEN
        RETURN '{"outcome": "hold_not_active"}';
    ELSIF v_hold.expires_at <= p_now THEN
        RETURN '{"outcome": "hold_expired"}';
    ELSIF v_amount > v_hold.amount THEN
        RETURN '{"outcome": "amount_exceeds_hold"}';
    END IF;

    IF p_merchant IS NULL THEN
        FOR v_account IN
            SELECT * FROM ledger_lock_accounts(v_hold.account_id, v_hold.merchant_account_id)
        LOOP
            IF v_account.id = v_hold.account_id THEN
                v_payer := v_account;
            ELSE
                v_merchant := v_account;
            END IF;
        END LOOP;
    ELSIF (p_merchant ->> 'id')::uuid IS DISTINCT FROM v_hold.merchant_account_id THEN
        RAISE EXCEPTION 'p_merchant must be the hold''s merchant wallet'
            USING ERRCODE = 'invalid_parameter_value';
    ELSE
        SELECT * INTO v_payer FROM accounts WHERE id = v_hold.account_id FOR NO KEY UPDATE;
        v_merchant := jsonb_populate_record(NULL::accounts, p_merchant);
    END IF;

    -- The capture releases the whole hold first, so the funds cannot fall short while
    -- the hold is in `held`; the check stays, as a refusal rather than an error.
    v_refusal := ledger_payment_refusal(v_payer, v_merchant, v_amount, v_hold.amount);
    IF v_refusal IS NOT NULL THEN
        RETURN v_refusal;
    END IF;

    -- The whole hold is released; the captured part moves.
    IF p_merchant IS NOT NULL THEN
        -- Two databases: the debit leg, pending until its credit leg is delivered, is
        -- the capture and the answer.
        v_txn := ledger_send_leg(v_payer, v_merchant, v_amount, v_hold.amount, 'payment',
                                 v_hold.memo, NULL, p_owner, v_hold.id, NULL, NULL,
                                 p_first_attempt_at);
        v_capture_id := v_txn.id;
    ELSIF ledger_shard_of(v_payer.id) = ledger_shard_of(v_merchant.id) THEN
        INSERT INTO transactions (type, amount, currency, source_account_id,
                                  destination_account_id, memo, initiated_by, hold_id)
        VALUES ('payment', v_amount, v_hold.currency, v_hold.account_id,
                v_hold.merchant_account_id, v_hold.memo, p_owner, v_hold.id)
        RETURNING * INTO v_txn;
        PERFORM ledger_move(v_txn.id, v_hold.account_id, v_hold.merchant_account_id,
                            v_amount, v_hold.amount);
        v_capture_id := v_txn.id;
    ELSE
        -- Two shards: the debit leg (on the hold's shard) is the capture, the credit leg
        -- the merchant's answer.
        FOR v_leg IN
            SELECT * FROM ledger_book_legs(v_payer, v_merchant, v_amount, v_hold.amount,
                                           'payment', v_hold.memo, NULL, p_owner, v_hold.id,
                                           NULL, NULL)
        LOOP
            IF v_leg.leg = 'debit' THEN
                v_capture_id := v_leg.id;
            ELSE
                v_txn := v_leg;
            END IF;
        END LOOP;
    END IF;
    UPDATE holds
       SET status = 'captured', captured_amount = v_amount,
           capture_transaction_id = v_capture_id, updated_at = now()
     WHERE id = v_hold.id
    RETURNING * INTO v_hold;

    RETURN ledger_idempotency_store(p_owner, p_key, 'capture_hold', p_hash,
        jsonb_build_object('outcome', 'ok', 'hold', ledger_hold_json(v_hold),
                           'transaction', ledger_txn_json(v_txn, v_payer.owner_id, p_owner)))
        || CASE WHEN p_merchant IS NULL THEN '{}'::jsonb
                ELSE jsonb_build_object('credit_leg', (SELECT o.credit_leg
                                                         FROM ledger_outbox AS o
                                                        WHERE o.transaction_id = v_capture_id))
           END;
END
$$;

CREATE OR REPLACE FUNCTION ledger_void_hold(
    p_owner uuid, p_key text, p_hash text, p_hold uuid
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb;
    v_hold holds%ROWTYPE;
BEGIN
    v_result := ledger_idempotency_begin(p_owner, p_key, 'void_hold', p_hash);
    IF v_result IS NOT NULL THEN
        RETURN v_result;
    END IF;

    SELECT * INTO v_hold FROM holds WHERE id = p_hold FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN '{"outcome": "hold_not_found"}';
    END IF;
    IF v_hold.merchant_owner_id IS DISTINCT FROM p_owner THEN
        RETURN '{"outcome": "not_owner"}';
    ELSIF v_hold.status <> 'active' THEN
        RETURN '{"outcome": "hold_not_active"}';
    END IF;

    -- The UPDATE locks the payer: the only account that changes.
    UPDATE accounts SET held = held - v_hold.amount, updated_at = now()
     WHERE id = v_hold.account_id;
    UPDATE holds SET status = 'voided', updated_at = now()
     WHERE id = v_hold.id
    RETURNING * INTO v_hold;

    RETURN ledger_idempotency_store(p_owner, p_key, 'void_hold', p_hash,
        jsonb_build_object('outcome', 'ok', 'hold', ledger_hold_json(v_hold)));
END
$$;

-- Releases up to p_limit holds that expired at p_now. Holds another call has locked
-- (a capture, a void, another instance running this) are skipped, not waited for.
CREATE OR REPLACE FUNCTION ledger_expire_holds(p_now timestamptz, p_limit int)
RETURNS TABLE (hold_id uuid, account_id uuid, owner_id uuid) LANGUAGE plpgsql AS $$
-- One row per released hold, with its payer: the caller drops cached balances.
DECLARE
    v_ids uuid[];
BEGIN
    IF p_now IS NULL OR p_limit IS NULL OR p_limit <= 0 THEN
        RAISE EXCEPTION 'now and a positive limit are required'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT array_agg(id) INTO v_ids
      FROM (SELECT id FROM holds
             WHERE status = 'active' AND expires_at <= p_now
               -- (Rows of a shard this database let go, until they are deleted: not ours.)
               AND ledger_shard_of(id) IN (
                   SELECT s.shard FROM ledger_shards AS s WHERE s.state = 'held'
               )
             ORDER BY expires_at
             LIMIT p_limit
               FOR NO KEY UPDATE SKIP LOCKED) AS due;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;
    -- Then the payers, in ascending id order.
    PERFORM 1 FROM accounts
      WHERE id IN (SELECT h.account_id FROM holds h WHERE h.id = ANY (v_ids))
      ORDER BY id
        FOR NO KEY UPDATE;
    UPDATE accounts AS a
       SET held = a.held - released.amount, updated_at = now()
      FROM (SELECT h.account_id, sum(h.amount) AS amount FROM holds h
             WHERE h.id = ANY (v_ids) GROUP BY h.account_id) AS released
     WHERE a.id = released.account_id;
    RETURN QUERY
      UPDATE holds AS h SET status = 'expired', updated_at = now()
        FROM accounts AS a
       WHERE h.id = ANY (v_ids) AND a.id = h.account_id
      RETURNING h.id, h.account_id, a.owner_id;
END
$$;
