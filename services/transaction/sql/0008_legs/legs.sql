-- Movements between wallets of two logical shards. The unit that stays together (and can
-- be moved to another database) is the logical shard, so such a movement is two legs,
-- each a balanced transaction on its own shard: the debit leg moves the money from the
-- payer into the payer's shard's in-transit account with the payee's shard, the credit
-- leg from the payee's shard's in-transit account with the payer's shard to the payee.
-- While both shards are in one database the two legs commit together, in the call that
-- makes them. transit(L, M) + transit(M, L) is what is on its way between L and M.

-- The in-transit account of p_shard with p_peer in a currency, created on first use
-- (ON CONFLICT waits for a concurrent creator, then does nothing).
CREATE OR REPLACE FUNCTION ledger_transit_account(
    p_currency text, p_shard smallint, p_peer smallint
) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    v_id uuid;
BEGIN
    SELECT id INTO v_id FROM accounts
     WHERE kind = 'in_transit' AND owner_id IS NULL AND currency = p_currency
       AND ledger_shard_of(id) = p_shard AND coalesce(peer_shard, -1) = p_peer;
    IF NOT FOUND THEN
        INSERT INTO accounts (id, kind, currency, peer_shard)
        VALUES (ledger_new_id(p_shard), 'in_transit', p_currency, p_peer)
        ON CONFLICT DO NOTHING;
        SELECT id INTO STRICT v_id FROM accounts
         WHERE kind = 'in_transit' AND owner_id IS NULL AND currency = p_currency
           AND ledger_shard_of(id) = p_shard AND coalesce(peer_shard, -1) = p_peer;
    END IF;
    RETURN v_id;
END
$$;

-- Books p_amount from p_payer to p_payee (both locked, on different shards) as the two
-- legs, and returns them, debit first. p_release comes off the payer's held amount (a
-- capture). Each leg's refund_of names the refunded movement's leg on its own shard.
CREATE OR REPLACE FUNCTION ledger_book_legs(
    p_payer accounts, p_payee accounts, p_amount bigint, p_release bigint, p_type text,
    p_memo text, p_metadata jsonb, p_initiated_by uuid, p_hold uuid,
    p_debit_refund_of uuid, p_credit_refund_of uuid
) RETURNS SETOF transactions LANGUAGE plpgsql AS $$
DECLARE
    v_payer_shard smallint := ledger_shard_of(p_payer.id);
    v_payee_shard smallint := ledger_shard_of(p_payee.id);
    v_out uuid;
    v_in uuid;
    v_debit transactions%ROWTYPE;
    v_credit transactions%ROWTYPE;
    v_debit_id uuid := ledger_new_id(v_payer_shard);
    v_credit_id uuid := ledger_new_id(v_payee_shard);
BEGIN
    v_out := ledger_transit_account(p_payer.currency, v_payer_shard, v_payee_shard);
    v_in := ledger_transit_account(p_payer.currency, v_payee_shard, v_payer_shard);
    -- Locked last, after every wallet of the call, both at once: two movements in
    -- opposite directions need the same two accounts (a batch locks all of its own
    -- before its first transfer; locking them again here changes nothing).
    PERFORM 1 FROM ledger_lock_accounts(v_out, v_in);

    INSERT INTO transactions (id, type, amount, currency, source_account_id,
                              destination_account_id, memo, metadata, initiated_by, hold_id,
                              refund_of, leg, counterparty_account_id, counterparty_owner_id,
                              counterpart_id)
    VALUES (v_debit_id, p_type, p_amount, p_payer.currency, p_payer.id, v_out, p_memo,
            coalesce(p_metadata, '{}'), p_initiated_by, p_hold, p_debit_refund_of, 'debit',
            p_payee.id, p_payee.owner_id, v_credit_id)
    RETURNING * INTO v_debit;
    PERFORM ledger_move(v_debit.id, p_payer.id, v_out, p_amount, p_release);

    -- The credit leg is the same movement seen from the payee's shard: the debit leg's
    -- receipt number, hold and time.
    INSERT INTO transactions (id, type, amount, currency, source_account_id,
                              destination_account_id, memo, metadata, initiated_by, hold_id,
                              refund_of, leg, counterparty_account_id, counterparty_owner_id,
                              counterpart_id, receipt_number, created_at)
    VALUES (v_credit_id, p_type, p_amount, p_payer.currency, v_in, p_payee.id, p_memo,
            coalesce(p_metadata, '{}'), p_initiated_by, p_hold, p_credit_refund_of, 'credit',
            p_payer.id, p_payer.owner_id, v_debit_id, v_debit.receipt_number,
            v_debit.created_at)
    RETURNING * INTO v_credit;
    PERFORM ledger_move(v_credit.id, v_in, p_payee.id, p_amount, 0);

    RETURN NEXT v_debit;
    RETURN NEXT v_credit;
END
$$;
