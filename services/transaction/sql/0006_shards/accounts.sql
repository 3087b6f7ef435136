-- Wallets and the settlement accounts: opening, closing.

CREATE OR REPLACE FUNCTION ledger_create_wallet(
    p_owner uuid, p_key text, p_hash text, p_currency text
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb;
    v_wallet accounts%ROWTYPE;
BEGIN
    PERFORM ledger_require_currency(p_currency);
    v_result := ledger_idempotency_begin(p_owner, p_key, 'create_wallet', p_hash);
    IF v_result IS NOT NULL THEN
        RETURN v_result;
    END IF;
    -- Waits for a concurrent insert of the same wallet, then does nothing.
    INSERT INTO accounts (kind, owner_id, currency)
    VALUES ('user_wallet', p_owner, p_currency)
    ON CONFLICT (owner_id, currency) DO NOTHING
    RETURNING * INTO v_wallet;
    IF NOT FOUND THEN
        RETURN '{"outcome": "wallet_exists"}';
    END IF;
    RETURN ledger_idempotency_store(p_owner, p_key, 'create_wallet', p_hash,
        jsonb_build_object('outcome', 'ok', 'wallet', ledger_wallet_json(v_wallet)));
END
$$;

-- A wallet with a top-up on its way cannot be closed (the credit would have nowhere to
-- go); a pending withdrawal is held, so the balance check already refuses.
CREATE OR REPLACE FUNCTION ledger_close_wallet(
    p_owner uuid, p_key text, p_hash text, p_wallet uuid
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb;
    v_wallet accounts%ROWTYPE;
BEGIN
    v_result := ledger_idempotency_begin(p_owner, p_key, 'close_wallet', p_hash);
    IF v_result IS NOT NULL THEN
        RETURN v_result;
    END IF;

    SELECT * INTO v_wallet FROM accounts
     WHERE id = p_wallet AND kind = 'user_wallet' AND owner_id = p_owner
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN '{"outcome": "wallet_not_found"}';
    ELSIF v_wallet.status = 'closed' THEN
        RETURN '{"outcome": "wallet_closed"}';
    ELSIF v_wallet.balance <> 0 OR v_wallet.held <> 0 THEN
        RETURN '{"outcome": "balance_not_zero"}';
    ELSIF EXISTS (SELECT FROM transactions
                   WHERE destination_account_id = p_wallet AND type = 'top_up'
                     AND status = 'pending') THEN
        RETURN '{"outcome": "payment_pending"}';
    -- A movement to another database still on its way may come back (refused there):
    -- its money must find the wallet open.
    ELSIF EXISTS (SELECT FROM transactions
                   WHERE source_account_id = p_wallet AND leg = 'debit'
                     AND status = 'pending') THEN
        RETURN '{"outcome": "payment_pending"}';
    END IF;

    UPDATE accounts SET status = 'closed', updated_at = now()
     WHERE id = p_wallet
    RETURNING * INTO v_wallet;

    RETURN ledger_idempotency_store(p_owner, p_key, 'close_wallet', p_hash,
        jsonb_build_object('outcome', 'ok', 'wallet', ledger_wallet_json(v_wallet)));
END
$$;

-- The settlement account of a currency on a shard (money from and to the outside, for
-- that shard's wallets), created on first use. ON CONFLICT waits for a concurrent creator
-- and then does nothing.
CREATE OR REPLACE FUNCTION ledger_settlement_account(p_currency text, p_shard smallint)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    v_id uuid;
BEGIN
    SELECT id INTO v_id FROM accounts
     WHERE kind = 'settlement' AND owner_id IS NULL AND currency = p_currency
       AND ledger_shard_of(id) = p_shard;
    IF NOT FOUND THEN
        INSERT INTO accounts (id, kind, currency)
        VALUES (ledger_new_id(p_shard), 'settlement', p_currency)
        ON CONFLICT DO NOTHING;
        SELECT id INTO STRICT v_id FROM accounts
         WHERE kind = 'settlement' AND owner_id IS NULL AND currency = p_currency
           AND ledger_shard_of(id) = p_shard;
    END IF;
    RETURN v_id;
END
$$;
