-- Undoes 0008 (after its downgrade has re-applied the versions of before of the files it
-- brought new versions of). Refused while legs exist: they cannot be one transaction again.
DO $$
BEGIN
    IF EXISTS (SELECT FROM transactions WHERE leg IS NOT NULL) THEN
        RAISE EXCEPTION 'movements between shards were booked as legs: 0008 cannot be undone'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
END
$$;
DROP FUNCTION ledger_book_legs(
    accounts, accounts, bigint, bigint, text, text, jsonb, uuid, uuid, uuid, uuid
);
DROP FUNCTION ledger_transit_account(text, smallint, smallint);
DROP FUNCTION ledger_shown_refund_of(transactions);
ALTER TABLE transactions ADD CONSTRAINT transactions_hold_id_fkey FOREIGN KEY (hold_id)
REFERENCES holds (id);
DROP INDEX transactions_receipt_number_key;
ALTER TABLE transactions ADD CONSTRAINT transactions_receipt_number_key UNIQUE (receipt_number);
ALTER TABLE transactions DROP CONSTRAINT transactions_counterpart_id_key;
ALTER TABLE transactions DROP CONSTRAINT transactions_leg_check;
ALTER TABLE transactions DROP COLUMN counterpart_id;
ALTER TABLE transactions DROP COLUMN counterparty_owner_id;
ALTER TABLE transactions DROP COLUMN counterparty_account_id;
ALTER TABLE transactions DROP COLUMN leg;
DROP INDEX accounts_system_currency_key;
CREATE UNIQUE INDEX accounts_system_currency_key ON accounts (
    kind, currency, ledger_shard_of(id)
) WHERE owner_id IS NULL;
ALTER TABLE accounts DROP CONSTRAINT accounts_available_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_available_check CHECK (
    kind = 'settlement' OR balance - held + overdraft_limit >= 0
);
ALTER TABLE accounts DROP CONSTRAINT accounts_peer_shard_check;
ALTER TABLE accounts DROP CONSTRAINT accounts_kind_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_kind_check CHECK (
    kind IN ('user_wallet', 'settlement')
);
ALTER TABLE accounts DROP COLUMN peer_shard;
