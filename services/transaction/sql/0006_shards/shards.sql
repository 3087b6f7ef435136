-- The ledger's 256 logical shards. Each is held by one database (ledger_shards says which
-- here); every id the ledger hands out carries its shard in its last byte, the way the
-- user ids it is keyed by do (random UUIDs: the last byte of a user's id is their home
-- shard). So any id says where its row is, without a lookup: the service's shard map
-- (services/transaction/adapters/shards.py) reads ids the same way.

CREATE OR REPLACE FUNCTION ledger_shard_of(p_id uuid) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT get_byte(uuid_send(p_id), 15)::smallint
$$;

-- A new random id on p_shard: a version 4 UUID with its last byte (random in version 4,
-- outside the version and variant bits) set to the shard.
CREATE OR REPLACE FUNCTION ledger_new_id(p_shard smallint) RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(set_byte(uuid_send(gen_random_uuid()), 15, p_shard), 'hex')::uuid
$$;

-- Rows get their ids on the shard they belong to, unless they come with one (a shard
-- being copied to another database keeps its ids): a wallet on its owner's home shard,
-- a transaction on its source account's (its destination's when it has none, as a
-- freeze), a hold on its payer's. A system account (settlement) comes with its id: the
-- function that opens it knows the shard. A transaction's receipt number names its
-- shard, so that numbers from the per-database sequence are unique across databases.
CREATE OR REPLACE FUNCTION accounts_place_on_shard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id IS NULL THEN
        IF NEW.owner_id IS NULL THEN
            RAISE EXCEPTION 'a system account needs an id on its shard'
                USING ERRCODE = 'not_null_violation', COLUMN = 'id';
        END IF;
        NEW.id := ledger_new_id(ledger_shard_of(NEW.owner_id));
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION transactions_place_on_shard() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_shard smallint := ledger_shard_of(
        coalesce(NEW.source_account_id, NEW.destination_account_id)
    );
BEGIN
    NEW.id := coalesce(NEW.id, ledger_new_id(v_shard));
    NEW.receipt_number := coalesce(
        NEW.receipt_number,
        'R-' || lpad(to_hex(v_shard::int), 2, '0') || '-'
        || lpad(nextval('receipt_number_seq')::text, 11, '0')
    );
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION holds_place_on_shard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.id := coalesce(NEW.id, ledger_new_id(ledger_shard_of(NEW.account_id)));
    RETURN NEW;
END
$$;

-- The logical shards this database holds: claimed once, by the first `migrate` (the
-- shard map's first split of the 256 over the configured databases); later only moving a
-- shard changes them. Returns what the database holds, which is p_shards unless it
-- already held some.
CREATE OR REPLACE FUNCTION ledger_claim_shards(p_shards smallint[])
RETURNS smallint[] LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE ledger_shards IN EXCLUSIVE MODE;  -- two first migrations: one claims
    IF NOT EXISTS (SELECT FROM ledger_shards) THEN
        INSERT INTO ledger_shards (shard) SELECT DISTINCT unnest(p_shards);
    END IF;
    RETURN ledger_held_shards();
END
$$;

-- (plpgsql, not sql: its table comes after it, in schema.sql.)
CREATE OR REPLACE FUNCTION ledger_held_shards() RETURNS smallint[]
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT coalesce(array_agg(shard ORDER BY shard), '{}')
              FROM ledger_shards WHERE state = 'held');
END
$$;

-- Whether this database serves a shard's rows: it holds it. (One that holds none, just
-- migrated or emptied by moves, serves none: nothing is written where no map sends it.)
CREATE OR REPLACE FUNCTION ledger_holds_shard(p_shard smallint) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT FROM ledger_shards WHERE shard = p_shard AND state = 'held');
END
$$;

-- Moving a shard to another database (services/transaction/adapters/shard_move.py)
-- pauses its writes: every write takes this lock shared (ledger_require_shard), the
-- move takes it exclusive, so it waits for the writes in flight and holds back new ones
-- until the shard has gone. Two-int advisory keys: apart from the idempotency locks'.
CREATE OR REPLACE FUNCTION ledger_shard_lock_space() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 1818585188  -- 'lsd' (ledger shard): any constant no other lock uses
$$;

CREATE OR REPLACE FUNCTION ledger_pause_shard(p_shard smallint) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_lock(ledger_shard_lock_space(), p_shard)
$$;

CREATE OR REPLACE FUNCTION ledger_resume_shard(p_shard smallint) RETURNS boolean
LANGUAGE sql AS $$
    SELECT pg_advisory_unlock(ledger_shard_lock_space(), p_shard)
$$;

-- One move of a shard at a time: each run takes this on both databases for its session
-- (another key of the same space: -1 - shard).
CREATE OR REPLACE FUNCTION ledger_lock_shard_move(p_shard smallint) RETURNS boolean
LANGUAGE sql AS $$
    SELECT pg_try_advisory_lock(ledger_shard_lock_space(), -1 - p_shard)
$$;

-- Before a write of a shard's row: waits while the shard is paused, then refuses the
-- write unless this database still holds it (SQLSTATE 55000, a fault: the service
-- answers UNAVAILABLE and reads where the shards are again; a retry reaches the
-- shard's new database).
CREATE OR REPLACE FUNCTION ledger_require_shard(p_shard smallint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(ledger_shard_lock_space(), p_shard);
    -- (ledger_holds_shard, inlined: this runs for every row written.)
    PERFORM FROM ledger_shards WHERE shard = p_shard AND state = 'held';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'logical shard % is not held by this database', p_shard
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'it moved to another database of the ledger';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION ledger_write_on_shard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledger_require_shard(ledger_shard_of(NEW.id));
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION ledger_refused_legs_write_on_shard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledger_require_shard(ledger_shard_of(NEW.account_id));
    RETURN NEW;
END
$$;

-- The shard an idempotency key lives on: that of what its call wrote, which is where
-- the service sends the call (and its retries): the transaction of the stored result
-- (never a credit leg, whose shown id is another shard's), else its hold, else its
-- wallet, else the owner's home shard.
CREATE OR REPLACE FUNCTION ledger_key_shard(p_owner uuid, p_result jsonb) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ledger_shard_of(coalesce(
        p_result -> 'transaction' ->> 'id', p_result -> 'hold' ->> 'id',
        p_result -> 'wallet' ->> 'id', p_owner::text
    )::uuid)
$$;

CREATE OR REPLACE FUNCTION idempotency_keys_place_on_shard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.shard := ledger_key_shard(NEW.owner_id, NEW.result);
    PERFORM ledger_require_shard(NEW.shard);
    RETURN NEW;
END
$$;

-- (A key is deleted when an external payment was never sent: ledger_release_unsent_external.)
CREATE OR REPLACE FUNCTION idempotency_keys_delete_on_shard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledger_require_shard(OLD.shard);
    RETURN OLD;
END
$$;
