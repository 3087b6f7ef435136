-- Transfers between two users' wallets.

-- p_payee: the destination wallet as its own database has it ({id, owner_id, currency,
-- status}) when it is another database's; then the transfer is the debit leg of a saga
-- (saga.sql), pending, and its answer carries the credit leg to deliver
-- ("credit_leg"), first tried by the relay at p_first_attempt_at.
CREATE OR REPLACE FUNCTION ledger_transfer(
    p_owner uuid, p_key text, p_hash text, p_source uuid, p_destination uuid,
    p_amount bigint, p_currency text, p_memo text, p_metadata jsonb,
    p_payee jsonb DEFAULT NULL, p_first_attempt_at timestamptz DEFAULT NULL
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb;
    v_account accounts%ROWTYPE;
    v_source accounts%ROWTYPE;
    v_destination accounts%ROWTYPE;
    v_txn transactions%ROWTYPE;
    v_refusal jsonb;
BEGIN
    PERFORM ledger_require_money(p_amount, p_currency);
    v_result := ledger_idempotency_begin(p_owner, p_key, 'transfer', p_hash);
    IF v_result IS NOT NULL THEN
        RETURN v_result;
    END IF;

    -- One query locks both wallets in ascending id order (as ledger_lock_accounts would),
    -- filtered to what this caller may lock: another user's wallet only as a destination.
    FOR v_account IN
        SELECT * FROM accounts
         WHERE kind = 'user_wallet'
           AND ((id = p_source AND owner_id = p_owner) OR id = p_destination)
         ORDER BY id
           FOR NO KEY UPDATE
    LOOP
        IF v_account.id = p_source AND v_account.owner_id = p_owner THEN
            v_source := v_account;
        END IF;
        IF v_account.id = p_destination THEN
            v_destination := v_account;
        END IF;
    END LOOP;

    IF p_payee IS NOT NULL THEN
        IF (p_payee ->> 'id')::uuid IS DISTINCT FROM p_destination THEN
            RAISE EXCEPTION 'p_payee must be the destination wallet'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_destination := jsonb_populate_record(NULL::accounts, p_payee);
    END IF;

    IF v_source.id IS NULL THEN
        RETURN '{"outcome": "wallet_not_found"}';
    ELSIF v_destination.id IS NULL THEN
        RETURN '{"outcome": "destination_not_found"}';
    ELSIF v_destination.owner_id = p_owner THEN
        RETURN '{"outcome": "self_transfer"}';
    ELSIF v_source.currency <> p_currency OR v_destination.currency <> p_currency THEN
        RETURN '{"outcome": "currency_mismatch"}';
    END IF;
    v_refusal := ledger_payment_refusal(v_source, v_destination, p_amount);
    IF v_refusal IS NOT NULL THEN
        RETURN v_refusal;
    END IF;

    IF ledger_shard_of(p_source) = ledger_shard_of(p_destination) THEN
        INSERT INTO transactions (type, amount, currency, source_account_id,
                                  destination_account_id, memo, metadata, initiated_by)
        VALUES ('transfer', p_amount, v_source.currency, p_source, p_destination, p_memo,
                coalesce(p_metadata, '{}'), p_owner)
        RETURNING * INTO v_txn;
        PERFORM ledger_move(v_txn.id, p_source, p_destination, p_amount, 0);
    ELSIF p_payee IS NULL THEN
        -- Two shards: two legs (legs.sql); the payer's is the answer.
        SELECT * INTO v_txn
          FROM ledger_book_legs(v_source, v_destination, p_amount, 0, 'transfer', p_memo,
                                p_metadata, p_owner, NULL, NULL, NULL)
         WHERE leg = 'debit';
    ELSE
        -- Two databases: the debit leg, pending until its credit leg is delivered.
        v_txn := ledger_send_leg(v_source, v_destination, p_amount, 0, 'transfer', p_memo,
                                 p_metadata, p_owner, NULL, NULL, NULL, p_first_attempt_at);
        RETURN ledger_idempotency_store(p_owner, p_key, 'transfer', p_hash,
            jsonb_build_object('outcome', 'ok', 'transaction',
                               ledger_txn_json(v_txn, p_owner, v_destination.owner_id)))
            || jsonb_build_object('credit_leg', (SELECT o.credit_leg FROM ledger_outbox AS o
                                                  WHERE o.transaction_id = v_txn.id));
    END IF;

    RETURN ledger_idempotency_store(p_owner, p_key, 'transfer', p_hash,
        jsonb_build_object('outcome', 'ok', 'transaction',
                           ledger_txn_json(v_txn, p_owner, v_destination.owner_id)));
END
$$;
