-- An operator's functions: adjustments, freezing and unfreezing a wallet.

-- Why an operator may not adjust p_wallet by p_amount (NULL: they may). Debits are
-- allowed on frozen wallets: freezing stops the owner, not the bank.
CREATE OR REPLACE FUNCTION ledger_adjustment_refusal(p_wallet accounts, p_amount bigint)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_wallet.status = 'closed' THEN '{"outcome": "wallet_closed"}'::jsonb
        WHEN p_amount < 0 AND ledger_spendable(p_wallet) < abs(p_amount)
            THEN '{"outcome": "insufficient_funds"}'::jsonb
    END
$$;

-- An operator's credit (p_amount > 0) or debit (< 0) of a wallet, against the settlement
-- account of its currency. Refusals are checked before the settlement account is created
-- (on first use), so a refusal writes nothing, and again once the rows are locked.
CREATE OR REPLACE FUNCTION ledger_adjust(
    p_actor uuid, p_key text, p_hash text, p_wallet uuid, p_amount bigint,
    p_currency text, p_reason text
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb;
    v_wallet accounts%ROWTYPE;
    v_settlement_id uuid;
    v_amount bigint;
    v_from uuid;
    v_to uuid;
    v_txn transactions%ROWTYPE;
    v_refusal jsonb;
BEGIN
    IF p_amount IS NULL OR p_amount = 0 THEN
        RAISE EXCEPTION 'amount must not be zero' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM ledger_require_currency(p_currency);
    v_result := ledger_idempotency_begin(p_actor, p_key, 'adjust', p_hash);
    IF v_result IS NOT NULL THEN
        RETURN v_result;
    END IF;
    v_amount := abs(p_amount);

    SELECT * INTO v_wallet FROM accounts WHERE id = p_wallet AND kind = 'user_wallet';
    IF NOT FOUND THEN
        RETURN '{"outcome": "wallet_not_found"}';
    ELSIF v_wallet.currency <> p_currency THEN
        RETURN '{"outcome": "currency_mismatch"}';
    END IF;
    v_refusal := ledger_adjustment_refusal(v_wallet, p_amount);
    IF v_refusal IS NOT NULL THEN
        RETURN v_refusal;
    END IF;
    v_settlement_id := ledger_settlement_account(v_wallet.currency, ledger_shard_of(p_wallet));

    SELECT * INTO v_wallet FROM ledger_lock_accounts(p_wallet, v_settlement_id)
     WHERE id = p_wallet;
    v_refusal := ledger_adjustment_refusal(v_wallet, p_amount);
    IF v_refusal IS NOT NULL THEN
        RETURN v_refusal;
    END IF;

    IF p_amount > 0 THEN
        v_from := v_settlement_id;
        v_to := p_wallet;
    ELSE
        v_from := p_wallet;
        v_to := v_settlement_id;
    END IF;
    INSERT INTO transactions (type, amount, currency, source_account_id,
                              destination_account_id, memo, initiated_by)
    VALUES ('adjustment', v_amount, v_wallet.currency, v_from, v_to, p_reason, p_actor)
    RETURNING * INTO v_txn;
    PERFORM ledger_move(v_txn.id, v_from, v_to, v_amount, 0);
    v_wallet.balance := v_wallet.balance + p_amount;

    RETURN ledger_idempotency_store(p_actor, p_key, 'adjust', p_hash,
        jsonb_build_object(
            'outcome', 'ok',
            'transaction', ledger_txn_json(
                v_txn,
                CASE WHEN p_amount < 0 THEN v_wallet.owner_id END,
                CASE WHEN p_amount > 0 THEN v_wallet.owner_id END),
            'wallet', ledger_wallet_json(v_wallet)));
END
$$;

-- An operator freezes ('frozen') or unfreezes ('active') a wallet; recorded as a
-- transaction of type freeze or unfreeze, of amount 0, without postings.
CREATE OR REPLACE FUNCTION ledger_set_wallet_status(
    p_actor uuid, p_key text, p_hash text, p_wallet uuid, p_status text, p_reason text
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_operation text;
    v_result jsonb;
    v_wallet accounts%ROWTYPE;
    v_txn transactions%ROWTYPE;
BEGIN
    IF p_status IS NULL OR p_status NOT IN ('frozen', 'active') THEN
        RAISE EXCEPTION 'status must be frozen or active'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_operation := CASE p_status WHEN 'frozen' THEN 'freeze_wallet' ELSE 'unfreeze_wallet' END;
    v_result := ledger_idempotency_begin(p_actor, p_key, v_operation, p_hash);
    IF v_result IS NOT NULL THEN
        RETURN v_result;
    END IF;

    SELECT * INTO v_wallet FROM accounts
     WHERE id = p_wallet AND kind = 'user_wallet'
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN '{"outcome": "wallet_not_found"}';
    ELSIF v_wallet.status = 'closed' THEN
        RETURN '{"outcome": "wallet_closed"}';
    ELSIF v_wallet.status = p_status THEN
        RETURN '{"outcome": "status_unchanged"}';
    END IF;

    UPDATE accounts SET status = p_status, updated_at = now()
     WHERE id = p_wallet
    RETURNING * INTO v_wallet;
    INSERT INTO transactions (type, amount, currency, destination_account_id, memo,
                              initiated_by)
    VALUES (CASE p_status WHEN 'frozen' THEN 'freeze' ELSE 'unfreeze' END, 0,
            v_wallet.currency, p_wallet, p_reason, p_actor)
    RETURNING * INTO v_txn;

    RETURN ledger_idempotency_store(p_actor, p_key, v_operation, p_hash,
        jsonb_build_object('outcome', 'ok',
                           'transaction', ledger_txn_json(v_txn, NULL, v_wallet.owner_id),
                           'wallet', ledger_wallet_json(v_wallet)));
END
$$;
