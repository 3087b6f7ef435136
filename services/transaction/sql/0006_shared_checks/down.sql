-- Undoes 0006 (after its downgrade has re-applied the versions of before of the files it
-- brought new versions of): the shared checks.
DROP FUNCTION ledger_external_refusal(accounts, text, bigint);
DROP FUNCTION ledger_adjustment_refusal(accounts, bigint);
DROP FUNCTION ledger_lock_accounts(uuid[]);
DROP FUNCTION ledger_payment_refusal(accounts, accounts, bigint, bigint);
DROP FUNCTION ledger_spendable(accounts);
DROP FUNCTION ledger_require_money(bigint, text);
DROP FUNCTION ledger_require_currency(text);
