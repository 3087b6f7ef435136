-- Group commit: single transfers of several callers that reached one instance of the
-- service together, booked in one call and one commit
-- (services/transaction/adapters/transfer_groups.py), each exactly as ledger_transfer
-- books it alone, in the order given.

-- Locks what the transfers p_items ([{"owner", "source", "destination"[, "payee"]}, ...])
-- will lock, all up front, in one order: every wallet in one sorted pass, then the
-- in-transit accounts of every pair of shards they move money between (legs.sql; to
-- another database, the one here), those used for the first time created first, in one
-- order (a new row's unique key is held until commit). Transfers in one transaction that
-- locked one at a time would deadlock with another such transaction's, two batches in
-- opposite directions, or to two shards in another order. (Sources not the owner's are
-- locked too, and then refused: a lock only.)
CREATE OR REPLACE FUNCTION ledger_lock_transfers(p_items jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_pair record;
    v_transit uuid[] := '{}';
BEGIN
    PERFORM 1 FROM accounts
     WHERE kind = 'user_wallet'
       AND id IN (
           SELECT (i ->> 'destination')::uuid FROM jsonb_array_elements(p_items) AS i
           UNION
           SELECT (i ->> 'source')::uuid FROM jsonb_array_elements(p_items) AS i
       )
     ORDER BY id
       FOR NO KEY UPDATE;
    FOR v_pair IN
        SELECT DISTINCT x.currency, x.shard, x.peer
          FROM jsonb_array_elements(p_items) AS i
          JOIN accounts AS s
            ON s.id = (i ->> 'source')::uuid AND s.owner_id = (i ->> 'owner')::uuid
               AND s.kind = 'user_wallet'
          LEFT JOIN accounts AS d
            ON d.id = (i ->> 'destination')::uuid AND d.kind = 'user_wallet'
               AND d.currency = s.currency AND NOT i ? 'payee'
         CROSS JOIN LATERAL (
             VALUES (s.currency, ledger_shard_of(s.id),
                     ledger_shard_of((i ->> 'destination')::uuid)),
                    (s.currency, ledger_shard_of(d.id), ledger_shard_of(s.id))
         ) AS x (currency, shard, peer)
         WHERE (d.id IS NOT NULL OR i ? 'payee')
           AND x.shard IS NOT NULL
           AND ledger_shard_of(s.id) <> ledger_shard_of((i ->> 'destination')::uuid)
         ORDER BY x.currency, x.shard, x.peer
    LOOP
        v_transit := v_transit || ledger_transit_account(v_pair.currency, v_pair.shard,
                                                         v_pair.peer);
    END LOOP;
    PERFORM 1 FROM ledger_lock_accounts(VARIADIC v_transit);
END
$$;

-- p_items: [{"owner", "key", "hash", "source", "destination", "amount", "currency",
-- "memo", "metadata"[, "payee"]}, ...]; returns ledger_transfer's answer to each, in
-- order.
CREATE OR REPLACE FUNCTION ledger_transfer_group(
    p_items jsonb, p_first_attempt_at timestamptz DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_item jsonb;
    v_results jsonb := '[]';
BEGIN
    IF p_items IS NULL OR jsonb_typeof(p_items) <> 'array'
       OR jsonb_array_length(p_items) NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'an array of 1 to 100 transfers is required'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM ledger_lock_transfers(p_items);
    FOR v_item IN SELECT value FROM jsonb_array_elements(p_items) LOOP
        v_results := v_results || jsonb_build_array(ledger_transfer(
            (v_item ->> 'owner')::uuid, v_item ->> 'key', v_item ->> 'hash',
            (v_item ->> 'source')::uuid, (v_item ->> 'destination')::uuid,
            (v_item ->> 'amount')::bigint, v_item ->> 'currency', v_item ->> 'memo',
            v_item -> 'metadata', nullif(v_item -> 'payee', 'null'), p_first_attempt_at));
    END LOOP;
    RETURN v_results;
END
$$;
