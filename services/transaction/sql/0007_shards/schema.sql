-- Ids and receipt numbers on shards (shards.sql), settlement accounts per shard.

CREATE TABLE ledger_shards (
    shard smallint NOT NULL,
    since timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_shards_pkey PRIMARY KEY (shard),
    CONSTRAINT ledger_shards_shard_check CHECK (shard BETWEEN 0 AND 255)
);

-- The triggers give ids (and receipt numbers) instead of the defaults.
ALTER TABLE accounts ALTER COLUMN id DROP DEFAULT;
ALTER TABLE transactions ALTER COLUMN id DROP DEFAULT;
ALTER TABLE transactions ALTER COLUMN receipt_number DROP DEFAULT;
ALTER TABLE holds ALTER COLUMN id DROP DEFAULT;
CREATE OR REPLACE TRIGGER accounts_place_on_shard BEFORE INSERT ON accounts
FOR EACH ROW EXECUTE FUNCTION accounts_place_on_shard();
CREATE OR REPLACE TRIGGER transactions_place_on_shard BEFORE INSERT ON transactions
FOR EACH ROW EXECUTE FUNCTION transactions_place_on_shard();
CREATE OR REPLACE TRIGGER holds_place_on_shard BEFORE INSERT ON holds
FOR EACH ROW EXECUTE FUNCTION holds_place_on_shard();

-- One settlement account per currency and shard: money in and out of a shard's wallets
-- goes through its own, so a shard's books balance by themselves.
DROP INDEX accounts_system_currency_key;
CREATE UNIQUE INDEX accounts_system_currency_key ON accounts (
    kind, currency, ledger_shard_of(id)
) WHERE owner_id IS NULL;
DROP FUNCTION ledger_settlement_account(text);
