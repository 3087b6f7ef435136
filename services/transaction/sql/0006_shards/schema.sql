-- The schema of the ledger on logical shards: ids and receipt numbers on shards
-- (shards.sql), settlement accounts per shard, and movements between two shards as two
-- legs (legs.sql).

-- A shard being copied here from another database (services/transaction/adapters/
-- shard_move.py) is 'arriving' until the other database has let it go; one that moved
-- away is 'left' (kept: a database that gave all its shards away holds none, not all).
-- Only a 'held' one is written to, and is on the shard map.
CREATE TABLE ledger_shards (
    shard smallint NOT NULL,
    since timestamptz NOT NULL DEFAULT now(),
    state text NOT NULL DEFAULT 'held',
    -- The move that last changed it: a copy arriving is held only from the database
    -- that let the shard go to it, in that move.
    move_id uuid,
    CONSTRAINT ledger_shards_pkey PRIMARY KEY (shard),
    CONSTRAINT ledger_shards_shard_check CHECK (shard BETWEEN 0 AND 255),
    CONSTRAINT ledger_shards_state_check CHECK (state IN ('held', 'arriving', 'left'))
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

-- Every write of a shard's rows goes through ledger_require_shard (shards.sql): paused
-- while the shard is being moved, refused once it has gone. (A posting always comes with
-- an update of its account; the outbox and external payments with their transaction's.)
-- The write triggers fire after the placing ones (triggers fire in the order of their
-- names), so that a new row has its id.
CREATE OR REPLACE TRIGGER accounts_write_on_shard BEFORE INSERT OR UPDATE ON accounts
FOR EACH ROW EXECUTE FUNCTION ledger_write_on_shard();
CREATE OR REPLACE TRIGGER transactions_write_on_shard BEFORE INSERT OR UPDATE ON transactions
FOR EACH ROW EXECUTE FUNCTION ledger_write_on_shard();
CREATE OR REPLACE TRIGGER holds_write_on_shard BEFORE INSERT OR UPDATE ON holds
FOR EACH ROW EXECUTE FUNCTION ledger_write_on_shard();

-- An idempotency key lives on the shard of what its call wrote (it moves with it): the
-- transaction of its result, else its hold, else its wallet (shards.sql).
ALTER TABLE idempotency_keys ADD COLUMN shard smallint;
UPDATE idempotency_keys SET shard = ledger_key_shard(owner_id, result);
ALTER TABLE idempotency_keys ALTER COLUMN shard SET NOT NULL;
CREATE OR REPLACE TRIGGER idempotency_keys_place_on_shard BEFORE INSERT ON idempotency_keys
FOR EACH ROW EXECUTE FUNCTION idempotency_keys_place_on_shard();
CREATE OR REPLACE TRIGGER idempotency_keys_delete_on_shard BEFORE DELETE ON idempotency_keys
FOR EACH ROW EXECUTE FUNCTION idempotency_keys_delete_on_shard();

-- A settlement account per currency and shard (accounts.sql) replaces the one per currency.
DROP FUNCTION ledger_settlement_account(text);

-- Movements between two logical shards as two legs, one on each shard: the in-transit
-- accounts between shards, and what links a leg to the other side.

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
-- One system account per kind, currency, shard and (in transit) peer shard: money in and
-- out of a shard's wallets goes through its own settlement account, so a shard's books
-- balance by themselves.
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

-- Movements between two databases (saga.sql): the debit leg is pending, its money in the
-- in-transit account, until its credit leg is delivered to the payee's database; it ends
-- failed, its postings reversed, if that database refuses the credit leg.
ALTER TABLE transactions DROP CONSTRAINT transactions_status_refunds_check;
ALTER TABLE transactions ADD CONSTRAINT transactions_status_refunds_check CHECK (
    CASE
        WHEN status IN ('pending', 'failed')
            THEN
                (type IN ('top_up', 'withdrawal') OR coalesce(leg = 'debit', FALSE))
                AND refunded_amount = 0
        ELSE status = CASE
            WHEN refunded_amount = 0 THEN 'posted'
            WHEN refunded_amount < amount THEN 'partially_refunded'
            ELSE 'refunded'
        END
    END
);

-- The transactional outbox: one row per debit leg on its way, written in the debit leg's
-- transaction, with the credit leg to deliver; deleted when the other database has
-- answered. next_attempt_at is both the relay's backoff and its lease.
CREATE TABLE ledger_outbox (
    transaction_id uuid NOT NULL,
    destination_shard smallint NOT NULL,
    amount bigint NOT NULL,
    currency char(3) NOT NULL,
    credit_leg jsonb NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_outbox_pkey PRIMARY KEY (transaction_id),
    CONSTRAINT ledger_outbox_transaction_id_fkey FOREIGN KEY (transaction_id)
    REFERENCES transactions (id),
    CONSTRAINT ledger_outbox_destination_shard_check CHECK (
        destination_shard BETWEEN 0 AND 255
    ),
    CONSTRAINT ledger_outbox_last_error_check CHECK (char_length(last_error) <= 500)
);
CREATE INDEX ledger_outbox_next_attempt_at_idx ON ledger_outbox (next_attempt_at);

-- ledger_transfer takes the payee of another database (transfers.sql).
DROP FUNCTION ledger_transfer(uuid, text, text, uuid, uuid, bigint, text, text, jsonb);

-- A hold's merchant may be a wallet of another database (its capture is then a debit
-- leg to it): no foreign key to the merchant's wallet, and the hold keeps who may
-- capture or void it. The audit checks a merchant wallet of this database (audit.sql).
ALTER TABLE holds DROP CONSTRAINT holds_merchant_account_id_currency_fkey;
ALTER TABLE holds ADD COLUMN merchant_owner_id uuid;
UPDATE holds AS h SET merchant_owner_id = a.owner_id
FROM accounts AS a
WHERE a.id = h.merchant_account_id;
ALTER TABLE holds ALTER COLUMN merchant_owner_id SET NOT NULL;
DROP FUNCTION ledger_create_hold(
    uuid, text, text, uuid, uuid, bigint, text, timestamptz, text
);
DROP FUNCTION ledger_capture_hold(uuid, text, text, uuid, bigint, timestamptz);
DROP FUNCTION ledger_refund(uuid, text, text, uuid, bigint, text, boolean);
DROP FUNCTION ledger_transfer_batch(uuid, jsonb);

-- The credit legs this database refused (the payee's wallet closed, gone, or in another
-- currency), by their debit leg's id: a second delivery of one gets the same answer.
-- On the payee's shard (account_id), so it moves with it.
CREATE TABLE ledger_refused_legs (
    transaction_id uuid NOT NULL,
    account_id uuid NOT NULL,
    amount bigint NOT NULL,
    reason text NOT NULL,
    refused_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_refused_legs_pkey PRIMARY KEY (transaction_id)
);
CREATE OR REPLACE TRIGGER ledger_refused_legs_write_on_shard BEFORE INSERT
ON ledger_refused_legs
FOR EACH ROW EXECUTE FUNCTION ledger_refused_legs_write_on_shard();
