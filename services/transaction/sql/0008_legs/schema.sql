-- Movements between two logical shards as two legs, one on each shard (legs.sql): the
-- in-transit accounts between shards, and what links a leg to the other side.

ALTER TABLE accounts ADD COLUMN peer_shard smallint;
ALTER TABLE accounts DROP CONSTRAINT accounts_kind_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_kind_check CHECK (
    kind IN ('user_wallet', 'settlement', 'in_transit')
);
-- An in-transit account is a shard's account with one other shard.
ALTER TABLE accounts ADD CONSTRAINT accounts_peer_shard_check CHECK (
    (kind = 'in_transit') = (peer_shard IS NOT NULL)
    AND (peer_shard IS NULL OR (peer_shard BETWEEN 0 AND 255 AND peer_shard <> ledger_shard_of(id)))
);
-- System accounts (settlement, in transit) go below zero by design; wallets never below
-- their overdraft limit.
ALTER TABLE accounts DROP CONSTRAINT accounts_available_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_available_check CHECK (
    kind <> 'user_wallet' OR balance - held + overdraft_limit >= 0
);
DROP INDEX accounts_system_currency_key;
CREATE UNIQUE INDEX accounts_system_currency_key ON accounts (
    kind, currency, ledger_shard_of(id), coalesce(peer_shard, -1)
) WHERE owner_id IS NULL;

-- A leg says which it is (the debit on the payer's shard, the credit on the payee's),
-- names the wallet and owner on the other side (shown in place of the in-transit
-- account) and the other leg's transaction, whose id is made before either is written.
ALTER TABLE transactions ADD COLUMN leg text;
ALTER TABLE transactions ADD COLUMN counterparty_account_id uuid;
ALTER TABLE transactions ADD COLUMN counterparty_owner_id uuid;
ALTER TABLE transactions ADD COLUMN counterpart_id uuid;
ALTER TABLE transactions ADD CONSTRAINT transactions_leg_check CHECK (
    leg IN ('debit', 'credit')
    AND (leg IS NULL) = (counterpart_id IS NULL)
    AND (leg IS NULL) = (counterparty_account_id IS NULL)
    AND (leg IS NULL) = (counterparty_owner_id IS NULL)
);
ALTER TABLE transactions ADD CONSTRAINT transactions_counterpart_id_key UNIQUE (counterpart_id);

-- Payer and payee see one movement: the credit leg shows the debit leg's id (results.sql)
-- and carries its receipt number and hold. So receipt numbers are unique among the rest,
-- and a leg's hold is on the payer's shard, not always its own: no foreign key (the
-- audit checks what the key did).
ALTER TABLE transactions DROP CONSTRAINT transactions_receipt_number_key;
CREATE UNIQUE INDEX transactions_receipt_number_key ON transactions (receipt_number)
WHERE leg IS DISTINCT FROM 'credit';
ALTER TABLE transactions DROP CONSTRAINT transactions_hold_id_fkey;
