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
-- Three statements in all (the hot path): lock the in-transit accounts, write both legs,
-- move the money of both (four postings, as ledger_move does for two).
CREATE OR REPLACE FUNCTION ledger_book_legs(
    p_payer accounts, p_payee accounts, p_amount bigint, p_release bigint, p_type text,
    p_memo text, p_metadata jsonb, p_initiated_by uuid, p_hold uuid,
    p_debit_refund_of uuid, p_credit_refund_of uuid
) RETURNS SETOF transactions LANGUAGE plpgsql AS $$
DECLARE
    v_payer_shard smallint := ledger_shard_of(p_payer.id);
    v_payee_shard smallint := ledger_shard_of(p_payee.id);
    v_account accounts%ROWTYPE;
    v_out uuid;
    v_in uuid;
    v_leg transactions%ROWTYPE;
    v_debit_id uuid := ledger_new_id(v_payer_shard);
    v_credit_id uuid := ledger_new_id(v_payee_shard);
    v_receipt text;
BEGIN
    -- The two in-transit accounts, locked last (after every wallet of the call) and both
    -- at once, in id order: a movement the other way needs the same two. Created on first
    -- use. (A batch has locked them already; locking again changes nothing.)
    FOR attempt IN 1..2 LOOP
        FOR v_account IN
            -- Two lookups of the unique index (an OR of the two would scan every
            -- in-transit account of the currency).
            SELECT * FROM accounts
             WHERE id IN (
                 SELECT t.id FROM accounts AS t
                  WHERE t.kind = 'in_transit' AND t.owner_id IS NULL
                    AND t.currency = p_payer.currency AND ledger_shard_of(t.id) = v_payer_shard
                    AND coalesce(t.peer_shard, -1) = v_payee_shard
                 UNION ALL
                 SELECT t.id FROM accounts AS t
                  WHERE t.kind = 'in_transit' AND t.owner_id IS NULL
                    AND t.currency = p_payer.currency AND ledger_shard_of(t.id) = v_payee_shard
                    AND coalesce(t.peer_shard, -1) = v_payer_shard
             )
             ORDER BY id
               FOR NO KEY UPDATE
        LOOP
            IF v_account.peer_shard = v_payee_shard THEN
                v_out := v_account.id;
            ELSE
                v_in := v_account.id;
            END IF;
        END LOOP;
        EXIT WHEN v_out IS NOT NULL AND v_in IS NOT NULL;
        -- Created in one order (the lower shard's first): two first movements of a pair
        -- in opposite directions would otherwise each wait on the other's new row.
        PERFORM ledger_transit_account(p_payer.currency, least(v_payer_shard, v_payee_shard),
                                       greatest(v_payer_shard, v_payee_shard)),
                ledger_transit_account(p_payer.currency, greatest(v_payer_shard, v_payee_shard),
                                       least(v_payer_shard, v_payee_shard));
    END LOOP;

    -- The credit leg is the same movement seen from the payee's shard: the debit leg's
    -- receipt number, hold and time.
    v_receipt := 'R-' || lpad(to_hex(v_payer_shard::int), 2, '0') || '-'
                 || lpad(nextval('receipt_number_seq')::text, 11, '0');
    FOR v_leg IN
        INSERT INTO transactions (id, type, amount, currency, source_account_id,
                                  destination_account_id, memo, metadata, initiated_by,
                                  hold_id, refund_of, leg, counterparty_account_id,
                                  counterparty_owner_id, counterpart_id, receipt_number)
        VALUES (v_debit_id, p_type, p_amount, p_payer.currency, p_payer.id, v_out, p_memo,
                coalesce(p_metadata, '{}'), p_initiated_by, p_hold, p_debit_refund_of,
                'debit', p_payee.id, p_payee.owner_id, v_credit_id, v_receipt),
               (v_credit_id, p_type, p_amount, p_payer.currency, v_in, p_payee.id, p_memo,
                coalesce(p_metadata, '{}'), p_initiated_by, p_hold, p_credit_refund_of,
                'credit', p_payer.id, p_payer.owner_id, v_debit_id, v_receipt)
        RETURNING *
    LOOP
        RETURN NEXT v_leg;  -- debit first, as written
    END LOOP;

    WITH moved AS (
        UPDATE accounts AS a
           SET balance = a.balance + m.delta,
               held = a.held - m.release,
               version = a.version + 1,
               updated_at = now()
          FROM (VALUES (p_payer.id, -p_amount, p_release, v_debit_id),
                       (v_out, p_amount, 0::bigint, v_debit_id),
                       (v_in, -p_amount, 0::bigint, v_credit_id),
                       (p_payee.id, p_amount, 0::bigint, v_credit_id))
               AS m (account_id, delta, release, transaction_id)
         WHERE a.id = m.account_id
        RETURNING m.transaction_id, a.id, a.currency, m.delta, a.balance, a.version
    )
    INSERT INTO postings (transaction_id, account_id, currency, amount, balance_after,
                          account_version)
    SELECT transaction_id, id, currency, delta, balance, version FROM moved
     ORDER BY transaction_id = v_credit_id, delta;
END
$$;
