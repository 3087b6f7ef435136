-- The one way money moves between accounts: two postings in one statement.

-- Moves p_amount from one locked account to another, with both postings in one INSERT.
-- balance_after and account_version come from the UPDATE itself, so they cannot be stale.
-- p_release is taken off the source's held amount (a captured hold).
CREATE OR REPLACE FUNCTION ledger_move(
    p_transaction_id uuid, p_from uuid, p_to uuid, p_amount bigint, p_release bigint
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    WITH moved AS (
        UPDATE accounts AS a
           SET balance = a.balance + m.delta,
               held = a.held - m.release,
               version = a.version + 1,
               updated_at = now()
          FROM (VALUES (p_from, -p_amount, p_release), (p_to, p_amount, 0::bigint))
               AS m (account_id, delta, release)
         WHERE a.id = m.account_id
        RETURNING a.id, a.currency, m.delta, a.balance, a.version
    )
    INSERT INTO postings (transaction_id, account_id, currency, amount, balance_after,
                          account_version)
    SELECT p_transaction_id, id, currency, delta, balance, version FROM moved ORDER BY delta;
END
$$;
