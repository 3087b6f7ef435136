-- The checks every movement of money shares, defined once: what an argument must be,
-- what a wallet can pay, when a payment between two wallets is refused, and the order
-- in which accounts are locked.

-- A programming error, not a refusal: the service checks both before it calls.
CREATE OR REPLACE FUNCTION ledger_require_currency(p_currency text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_currency IS NULL OR p_currency !~ '^[A-Z]{3}$' THEN
        RAISE EXCEPTION 'currency must be three capital letters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION ledger_require_money(p_amount bigint, p_currency text)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_amount IS NULL OR p_amount <= 0 THEN
        RAISE EXCEPTION 'amount must be positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM ledger_require_currency(p_currency);
END
$$;

-- What a wallet can still pay: its balance, less what is held, plus its overdraft. (The
-- accounts_available_check constraint says the same from the other side: it never goes
-- below zero.) Plain SQL, so the planner inlines it into the caller's expression.
CREATE OR REPLACE FUNCTION ledger_spendable(p_account accounts) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_account.balance - p_account.held + p_account.overdraft_limit
$$;

-- Why p_payer may not pay p_amount to p_payee, both rows locked, as the refusal to answer
-- (NULL: it may). p_released is what the payment releases of p_payer's holds first (a
-- capture releases its hold). The same order everywhere, so the same request is refused
-- for the same reason whatever moves the money.
CREATE OR REPLACE FUNCTION ledger_payment_refusal(
    p_payer accounts, p_payee accounts, p_amount bigint, p_released bigint DEFAULT 0
) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_payer.status = 'frozen' THEN '{"outcome": "source_frozen"}'::jsonb
        WHEN p_payer.status = 'closed' THEN '{"outcome": "source_closed"}'::jsonb
        WHEN p_payee.status = 'closed' THEN '{"outcome": "destination_closed"}'::jsonb
        WHEN ledger_spendable(p_payer) + p_released < p_amount
            THEN '{"outcome": "insufficient_funds"}'::jsonb
    END
$$;

-- Locks these accounts in the one order every function uses (ascending id) with FOR NO
-- KEY UPDATE, which is what an UPDATE of them takes and which does not block the FOR KEY
-- SHARE of foreign-key checks: two functions that lock the same accounts cannot
-- deadlock. Returns the locked rows in that order. (ledger_transfer and
-- ledger_transfer_batch lock with a filter of their own, in the same order.)
CREATE OR REPLACE FUNCTION ledger_lock_accounts(VARIADIC p_ids uuid[])
RETURNS SETOF accounts LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY SELECT * FROM accounts WHERE id = ANY (p_ids) ORDER BY id FOR NO KEY UPDATE;
END
$$;
