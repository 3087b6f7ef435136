-- Undoes 0007 (after its downgrade has re-applied the versions of before of accounts.sql,
-- operator.sql and external_payments.sql). Ids made on shards stay what they are: they
-- are valid random UUIDs.
DROP FUNCTION ledger_settlement_account(text, smallint);
DROP INDEX accounts_system_currency_key;
CREATE UNIQUE INDEX accounts_system_currency_key ON accounts (kind, currency)
WHERE owner_id IS NULL;
DROP TRIGGER holds_place_on_shard ON holds;
DROP TRIGGER transactions_place_on_shard ON transactions;
DROP TRIGGER accounts_place_on_shard ON accounts;
ALTER TABLE holds ALTER COLUMN id SET DEFAULT gen_random_uuid();
ALTER TABLE transactions ALTER COLUMN receipt_number
SET DEFAULT 'R-' || lpad(nextval('receipt_number_seq')::text, 11, '0');
ALTER TABLE transactions ALTER COLUMN id SET DEFAULT gen_random_uuid();
ALTER TABLE accounts ALTER COLUMN id SET DEFAULT gen_random_uuid();
DROP TABLE ledger_shards;
DROP FUNCTION ledger_held_shards();
DROP FUNCTION ledger_claim_shards(smallint[]);
DROP FUNCTION holds_place_on_shard();
DROP FUNCTION transactions_place_on_shard();
DROP FUNCTION accounts_place_on_shard();
DROP FUNCTION ledger_new_id(smallint);
DROP FUNCTION ledger_shard_of(uuid);
