-- The JSON shapes of the results the ledger functions return (read by
-- services/transaction/adapters/ledger_store.py). A leg of a movement between shards
-- (legs.sql) shows the wallet and owner on the other side in place of its in-transit
-- account, and the credit leg the debit leg's id: payer and payee see one movement, with
-- one id and one receipt number.

CREATE OR REPLACE FUNCTION ledger_wallet_json(a accounts) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', a.id, 'owner_id', a.owner_id, 'currency', a.currency, 'balance', a.balance,
        'held', a.held, 'overdraft_limit', a.overdraft_limit, 'status', a.status,
        'created_at', a.created_at)
$$;

-- What a refund shows it refunds: the movement as both sides see it (a refund's debit
-- leg names the refunded movement's credit leg, on its own shard, whose debit leg's id is
-- the one shown).
-- (plpgsql: its plan is kept for the session, where a sql function with a subquery would
-- be planned again at every call; callers skip it when refund_of is null.)
CREATE OR REPLACE FUNCTION ledger_shown_refund_of(t transactions) RETURNS uuid
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF t.leg = 'debit' THEN
        RETURN (SELECT coalesce(o.counterpart_id, o.id) FROM transactions AS o
                 WHERE o.id = t.refund_of);
    END IF;
    RETURN t.refund_of;
END
$$;

CREATE OR REPLACE FUNCTION ledger_txn_json(
    t transactions, p_source_owner uuid, p_destination_owner uuid
) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', CASE WHEN t.leg = 'credit' THEN t.counterpart_id ELSE t.id END,
        'type', t.type, 'status', t.status, 'amount', t.amount,
        'currency', t.currency, 'fee', t.fee,
        'source_account_id',
        CASE WHEN t.leg = 'credit' THEN t.counterparty_account_id ELSE t.source_account_id END,
        'destination_account_id',
        CASE WHEN t.leg = 'debit' THEN t.counterparty_account_id
             ELSE t.destination_account_id END,
        'source_owner_id',
        CASE WHEN t.leg = 'credit' THEN t.counterparty_owner_id ELSE p_source_owner END,
        'destination_owner_id',
        CASE WHEN t.leg = 'debit' THEN t.counterparty_owner_id ELSE p_destination_owner END,
        'memo', t.memo, 'metadata', t.metadata, 'receipt_number', t.receipt_number,
        'refunded_amount', t.refunded_amount,
        'refund_of', CASE WHEN t.refund_of IS NOT NULL THEN ledger_shown_refund_of(t) END,
        'hold_id', t.hold_id,
        'initiated_by', t.initiated_by, 'created_at', t.created_at,
        'payment_provider', t.payment_provider, 'failure_code', t.failure_code,
        'failure_message', t.failure_message)
$$;

CREATE OR REPLACE FUNCTION ledger_hold_json(h holds) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', h.id, 'account_id', h.account_id, 'merchant_account_id', h.merchant_account_id,
        'currency', h.currency, 'amount', h.amount, 'captured_amount', h.captured_amount,
        'status', h.status, 'expires_at', h.expires_at, 'memo', h.memo,
        'capture_transaction_id', h.capture_transaction_id, 'created_by', h.created_by,
        'created_at', h.created_at)
$$;
