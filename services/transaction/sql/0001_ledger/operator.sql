-- An operator's functions: adjustments, freezing and unfreezing a wallet.

-- An operator's credit (p_amount > 0) or debit (< 0) of a wallet, against the settlement
-- account of its currency. Debits are allowed on frozen wallets.
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
BEGIN
    IF p_amount IS NULL OR p_amount = 0 THEN
        RAISE EXCEPTION 'amount must not be zero' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_currency IS NULL OR p_currency !~ '^[A-Z]{3}$' THEN
        RAISE EXCEPTION 'currency must be three capital letters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_result := ledger_idempotency_begin(p_actor, p_key, 'adjust', p_hash);
    IF v_result IS NOT NULL THEN
        RETURN v_result;
    END IF;
    v_amount := abs(p_amount);

    -- Refuse what can be refused before creating the settlement account, so a refusal
    -- writes nothing; the checks are repeated once the rows are locked.
    SELECT * INTO v_wallet FROM accounts WHERE id = p_wallet AND kind = 'user_wallet';
    IF NOT FOUND THEN
        RETURN '{"outcome": "wallet_not_found"}';
    ELSIF v_wallet.currency <> p_currency THEN
        RETURN '{"outcome": "currency_mismatch"}';
    ELSIF v_wallet.status = 'closed' THEN
        RETURN '{"outcome": "wallet_closed"}';
    ELSIF p_amount < 0
          AND v_wallet.balance - v_wallet.held + v_wallet.overdraft_limit < v_amount THEN
        RETURN '{"outcome": "insufficient_funds"}';
    END IF;

    -- The settlement account of the currency, created on first use. ON CONFLICT waits for
    -- a concurrent creator and then does nothing; the SELECT after it sees its row.
    SELECT id INTO v_settlement_id FROM accounts
     WHERE kind = 'settlement' AND owner_id IS NULL AND currency = v_wallet.currency;
    IF NOT FOUND THEN
        INSERT INTO accounts (kind, currency) VALUES ('settlement', v_wallet.currency)
        ON CONFLICT DO NOTHING;
        SELECT id INTO STRICT v_settlement_id FROM accounts
         WHERE kind = 'settlement' AND owner_id IS NULL AND currency = v_wallet.currency;
    END IF;

    PERFORM 1 FROM accounts WHERE id IN (p_wallet, v_settlement_id) ORDER BY id
        FOR NO KEY UPDATE;
    SELECT * INTO v_wallet FROM accounts WHERE id = p_wallet;
    IF v_wallet.status = 'closed' THEN
        RETURN '{"outcome": "wallet_closed"}';
    ELSIF p_amount < 0
          AND v_wallet.balance - v_wallet.held + v_wallet.overdraft_limit < v_amount THEN
        RETURN '{"outcome": "insufficient_funds"}';
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
