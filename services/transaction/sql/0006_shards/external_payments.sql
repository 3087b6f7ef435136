-- Top-ups and withdrawals: reserved, then settled once with the provider's answer;
-- the reconciler's queue.

-- Why the owner may not top up or withdraw p_amount of p_wallet (NULL: they may). A
-- frozen wallet takes no money in either: what arrives must be able to leave.
CREATE OR REPLACE FUNCTION ledger_external_refusal(
    p_wallet accounts, p_type text, p_amount bigint
) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_wallet.status = 'closed' THEN '{"outcome": "wallet_closed"}'::jsonb
        WHEN p_wallet.status = 'frozen' THEN '{"outcome": "wallet_frozen"}'::jsonb
        WHEN p_type = 'withdrawal' AND ledger_spendable(p_wallet) < p_amount
            THEN '{"outcome": "insufficient_funds"}'::jsonb
    END
$$;

-- Reserves a top-up (money in) or withdrawal (money out, held at once) of one of the
-- owner's wallets, pending until the provider answers.
CREATE OR REPLACE FUNCTION ledger_begin_external(
    p_owner uuid, p_key text, p_hash text, p_type text, p_wallet uuid, p_amount bigint,
    p_currency text, p_provider text, p_instrument text, p_first_check_at timestamptz
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb;
    v_wallet accounts%ROWTYPE;
    v_settlement_id uuid;
    v_txn transactions%ROWTYPE;
    v_refusal jsonb;
BEGIN
    IF p_type IS NULL OR p_type NOT IN ('top_up', 'withdrawal') THEN
        RAISE EXCEPTION 'type must be top_up or withdrawal'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM ledger_require_money(p_amount, p_currency);
    IF p_provider IS NULL OR p_instrument IS NULL OR p_first_check_at IS NULL THEN
        RAISE EXCEPTION 'provider, instrument and first check time are required'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_result := ledger_idempotency_begin(p_owner, p_key, p_type, p_hash);
    IF v_result IS NOT NULL THEN
        RETURN v_result;
    END IF;

    -- Refuse what can be refused before creating the settlement account, so a refusal
    -- writes nothing; the checks are made again once the rows are locked.
    SELECT * INTO v_wallet FROM accounts
     WHERE id = p_wallet AND kind = 'user_wallet' AND owner_id = p_owner;
    IF NOT FOUND THEN
        RETURN '{"outcome": "wallet_not_found"}';
    ELSIF v_wallet.currency <> p_currency THEN
        RETURN '{"outcome": "currency_mismatch"}';
    END IF;
    v_refusal := ledger_external_refusal(v_wallet, p_type, p_amount);
    IF v_refusal IS NOT NULL THEN
        RETURN v_refusal;
    END IF;
    v_settlement_id := ledger_settlement_account(p_currency, ledger_shard_of(p_wallet));

    SELECT * INTO v_wallet FROM accounts WHERE id = p_wallet FOR NO KEY UPDATE;
    v_refusal := ledger_external_refusal(v_wallet, p_type, p_amount);
    IF v_refusal IS NOT NULL THEN
        RETURN v_refusal;
    END IF;

    INSERT INTO transactions (type, status, amount, currency, source_account_id,
                              destination_account_id, initiated_by, payment_provider)
    VALUES (p_type, 'pending', p_amount, p_currency,
            CASE WHEN p_type = 'top_up' THEN v_settlement_id ELSE p_wallet END,
            CASE WHEN p_type = 'top_up' THEN p_wallet ELSE v_settlement_id END,
            p_owner, p_provider)
    RETURNING * INTO v_txn;
    IF p_type = 'withdrawal' THEN
        UPDATE accounts SET held = held + p_amount, updated_at = now()
         WHERE id = p_wallet
        RETURNING * INTO v_wallet;
    END IF;
    INSERT INTO external_payments (transaction_id, provider, instrument, next_check_at)
    VALUES (v_txn.id, p_provider, p_instrument, p_first_check_at);

    RETURN ledger_idempotency_store(p_owner, p_key, p_type, p_hash,
        jsonb_build_object(
            'outcome', 'ok',
            'transaction', ledger_txn_json(
                v_txn,
                CASE WHEN p_type = 'withdrawal' THEN p_owner END,
                CASE WHEN p_type = 'top_up' THEN p_owner END),
            'wallet', ledger_wallet_json(v_wallet)));
END
$$;

-- Settles a pending top-up or withdrawal with the provider's final answer, exactly once:
-- the transaction row is locked first (then the accounts, in id order), and one that is
-- no longer pending is answered as it stands ("already_settled"), whoever comes second —
-- the synchronous answer, a webhook or the reconciler.
CREATE OR REPLACE FUNCTION ledger_settle_external(
    p_transaction uuid, p_succeeded boolean, p_failure_code text, p_failure_message text
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_txn transactions%ROWTYPE;
    v_wallet_id uuid;
    v_wallet accounts%ROWTYPE;
BEGIN
    IF p_transaction IS NULL OR p_succeeded IS NULL
       OR (NOT p_succeeded AND coalesce(p_failure_code, '') = '') THEN
        RAISE EXCEPTION 'transaction, outcome and (for a failure) its code are required'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO v_txn FROM transactions
     WHERE id = p_transaction AND type IN ('top_up', 'withdrawal')
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN '{"outcome": "transaction_not_found"}';
    END IF;
    v_wallet_id := CASE WHEN v_txn.type = 'top_up' THEN v_txn.destination_account_id
                        ELSE v_txn.source_account_id END;
    IF v_txn.status <> 'pending' THEN
        SELECT * INTO v_wallet FROM accounts WHERE id = v_wallet_id;
        RETURN jsonb_build_object(
            'outcome', 'already_settled',
            'transaction', ledger_txn_json(
                v_txn,
                CASE WHEN v_txn.type = 'withdrawal' THEN v_wallet.owner_id END,
                CASE WHEN v_txn.type = 'top_up' THEN v_wallet.owner_id END),
            'wallet', ledger_wallet_json(v_wallet));
    END IF;

    PERFORM 1 FROM ledger_lock_accounts(v_txn.source_account_id, v_txn.destination_account_id);
    IF p_succeeded THEN
        -- A withdrawal releases its hold as it posts the debit.
        PERFORM ledger_move(v_txn.id, v_txn.source_account_id, v_txn.destination_account_id,
                            v_txn.amount,
                            CASE WHEN v_txn.type = 'withdrawal' THEN v_txn.amount ELSE 0 END);
    ELSIF v_txn.type = 'withdrawal' THEN
        UPDATE accounts SET held = held - v_txn.amount, updated_at = now()
         WHERE id = v_wallet_id;
    END IF;
    UPDATE transactions
       SET status = CASE WHEN p_succeeded THEN 'posted' ELSE 'failed' END,
           failure_code = CASE WHEN p_succeeded THEN NULL ELSE left(p_failure_code, 100) END,
           failure_message = CASE WHEN p_succeeded THEN NULL
                                  ELSE left(coalesce(p_failure_message, ''), 500) END,
           settled_at = now()
     WHERE id = v_txn.id
    RETURNING * INTO v_txn;
    UPDATE external_payments SET pending = false WHERE transaction_id = v_txn.id;

    SELECT * INTO v_wallet FROM accounts WHERE id = v_wallet_id;
    RETURN jsonb_build_object(
        'outcome', 'settled',
        'transaction', ledger_txn_json(
            v_txn,
            CASE WHEN v_txn.type = 'withdrawal' THEN v_wallet.owner_id END,
            CASE WHEN v_txn.type = 'top_up' THEN v_wallet.owner_id END),
        'wallet', ledger_wallet_json(v_wallet));
END
$$;

-- The reconciler's next batch: pending payments due for a look, claimed by pushing their
-- next look back (exponential, capped), so that instances do not work on the same rows.
CREATE OR REPLACE FUNCTION ledger_claim_due_external(
    p_now timestamptz, p_limit int, p_base_seconds double precision,
    p_max_seconds double precision
) RETURNS TABLE (
    transaction_id uuid, type text, provider text, instrument text,
    amount bigint, currency text, checks int, created_at timestamptz
)
LANGUAGE sql AS $$
    WITH due AS (
        SELECT e.transaction_id FROM external_payments AS e
         WHERE e.pending AND e.next_check_at <= p_now
           AND ledger_shard_of(e.transaction_id) IN (
               SELECT s.shard FROM ledger_shards AS s WHERE s.state = 'held'
           )
         ORDER BY e.next_check_at
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE external_payments AS e
           SET checks = e.checks + 1,
               next_check_at = p_now + make_interval(
                   secs => least(p_max_seconds, p_base_seconds * 2 ^ least(e.checks, 30)))
          FROM due WHERE e.transaction_id = due.transaction_id
        RETURNING e.transaction_id, e.provider, e.instrument, e.checks
    )
    SELECT c.transaction_id, t.type, c.provider, c.instrument, t.amount, t.currency::text,
           c.checks, t.created_at
      FROM claimed AS c JOIN transactions AS t ON t.id = c.transaction_id
$$;
