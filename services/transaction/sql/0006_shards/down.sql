-- Undoes 0006 (after its downgrade has re-applied the versions of before of the files it
-- brought new versions of): the saga, legs, shards, shared checks, in that order. Refused
-- while legs exist: they cannot be one transaction again. Ids made on shards stay what
-- they are: they are valid random UUIDs.
DO $$
BEGIN
    IF EXISTS (SELECT FROM transactions WHERE leg IS NOT NULL) THEN
        RAISE EXCEPTION 'movements between shards were booked as legs: 0006 cannot be undone'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF EXISTS (SELECT FROM holds AS h
                WHERE NOT EXISTS (SELECT FROM accounts AS a
                                   WHERE a.id = h.merchant_account_id)) THEN
        RAISE EXCEPTION 'holds for merchants of other databases: 0006 cannot be undone'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
END
$$;
DROP FUNCTION ledger_transfer(
    uuid, text, text, uuid, uuid, bigint, text, text, jsonb, jsonb, timestamptz
);
DROP FUNCTION ledger_create_hold(
    uuid, text, text, uuid, uuid, bigint, text, timestamptz, text, jsonb
);
DROP FUNCTION ledger_capture_hold(
    uuid, text, text, uuid, bigint, timestamptz, jsonb, timestamptz
);
DROP FUNCTION ledger_refund(
    uuid, text, text, uuid, bigint, text, boolean, jsonb, timestamptz
);
DROP FUNCTION ledger_transfer_batch(uuid, jsonb, timestamptz);
ALTER TABLE holds DROP COLUMN merchant_owner_id;
ALTER TABLE holds ADD CONSTRAINT holds_merchant_account_id_currency_fkey FOREIGN KEY (
    merchant_account_id, currency
) REFERENCES accounts (id, currency);
DROP FUNCTION ledger_claim_due_legs(timestamptz, integer, double precision, double precision);
DROP FUNCTION ledger_settle_leg(uuid, jsonb);
DROP FUNCTION ledger_receive_leg(jsonb);
DROP FUNCTION ledger_send_leg(
    accounts, accounts, bigint, bigint, text, text, jsonb, uuid, uuid, uuid, uuid, timestamptz
);
DROP TABLE ledger_refused_legs;
DROP TABLE ledger_outbox;
ALTER TABLE transactions DROP CONSTRAINT transactions_status_refunds_check;
ALTER TABLE transactions ADD CONSTRAINT transactions_status_refunds_check CHECK (
    CASE
        WHEN status IN ('pending', 'failed')
            THEN type IN ('top_up', 'withdrawal') AND refunded_amount = 0
        ELSE status = CASE
            WHEN refunded_amount = 0 THEN 'posted'
            WHEN refunded_amount < amount THEN 'partially_refunded'
            ELSE 'refunded'
        END
    END
);
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
ALTER TABLE accounts DROP CONSTRAINT accounts_available_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_available_check CHECK (
    kind = 'settlement' OR balance - held + overdraft_limit >= 0
);
ALTER TABLE accounts DROP CONSTRAINT accounts_peer_shard_check;
ALTER TABLE accounts DROP CONSTRAINT accounts_kind_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_kind_check CHECK (
    kind IN ('user_wallet', 'settlement')
);
DROP INDEX accounts_system_currency_key;
CREATE UNIQUE INDEX accounts_system_currency_key ON accounts (kind, currency)
WHERE owner_id IS NULL;
ALTER TABLE accounts DROP COLUMN peer_shard;

-- Shards.
DROP FUNCTION ledger_settlement_account(text, smallint);
DROP TRIGGER idempotency_keys_delete_on_shard ON idempotency_keys;
DROP TRIGGER idempotency_keys_place_on_shard ON idempotency_keys;
ALTER TABLE idempotency_keys DROP COLUMN shard;
DROP TRIGGER holds_write_on_shard ON holds;
DROP TRIGGER transactions_write_on_shard ON transactions;
DROP TRIGGER accounts_write_on_shard ON accounts;
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
DROP FUNCTION idempotency_keys_delete_on_shard();
DROP FUNCTION idempotency_keys_place_on_shard();
DROP FUNCTION ledger_lock_shard_move(smallint);
DROP FUNCTION ledger_key_shard(uuid, jsonb);
DROP FUNCTION ledger_refused_legs_write_on_shard();
DROP FUNCTION ledger_write_on_shard();
DROP FUNCTION ledger_require_shard(smallint);
DROP FUNCTION ledger_resume_shard(smallint);
DROP FUNCTION ledger_pause_shard(smallint);
DROP FUNCTION ledger_shard_lock_space();
DROP FUNCTION ledger_holds_shard(smallint);
DROP FUNCTION holds_place_on_shard();
DROP FUNCTION transactions_place_on_shard();
DROP FUNCTION accounts_place_on_shard();
DROP FUNCTION ledger_new_id(smallint);
DROP FUNCTION ledger_shard_of(uuid);

-- Shared checks.
DROP FUNCTION ledger_external_refusal(accounts, text, bigint);
DROP FUNCTION ledger_adjustment_refusal(accounts, bigint);
DROP FUNCTION ledger_lock_accounts(uuid[]);
DROP FUNCTION ledger_payment_refusal(accounts, accounts, bigint, bigint);
DROP FUNCTION ledger_spendable(accounts);
DROP FUNCTION ledger_require_money(bigint, text);
DROP FUNCTION ledger_require_currency(text);
