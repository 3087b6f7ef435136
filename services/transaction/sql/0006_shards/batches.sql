-- Batches of transfers: one call, one commit, one outcome per transfer.

-- p_items: [{"key", "hash", "source", "destination", "amount", "currency", "memo",
-- "metadata"[, "payee"]}, ...]; returns the outcomes in the same order. "payee": the
-- destination as its own database has it, when that is another database (as for
-- ledger_transfer: that transfer is a debit leg, first tried by the relay at
-- p_first_attempt_at, and its outcome carries the credit leg).
CREATE OR REPLACE FUNCTION ledger_transfer_batch(
    p_owner uuid, p_items jsonb, p_first_attempt_at timestamptz DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_item jsonb;
    v_results jsonb := '[]';
    v_pair record;
    v_transit uuid[] := '{}';
BEGIN
    IF p_owner IS NULL OR p_items IS NULL OR jsonb_typeof(p_items) <> 'array'
       OR jsonb_array_length(p_items) NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'owner and an array of 1 to 100 transfers are required'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Every wallet of the batch, in one sorted pass: the owner's sources and any
    -- destination, as ledger_transfer would lock them one transfer at a time.
    PERFORM 1 FROM accounts
     WHERE kind = 'user_wallet'
       AND (id IN (SELECT (i ->> 'destination')::uuid FROM jsonb_array_elements(p_items) i)
            OR (owner_id = p_owner
                AND id IN (SELECT (i ->> 'source')::uuid FROM jsonb_array_elements(p_items) i)))
     ORDER BY id
       FOR NO KEY UPDATE;
    -- Then the in-transit accounts of every pair of shards the batch moves money between
    -- (legs.sql; to another database, the one here), all at once: one transfer at a
    -- time, two batches in opposite directions, or to two shards in another order,
    -- would deadlock on them. Those used for the first time are created first, in one
    -- order, for the same reason (a new row's unique key is held until commit).
    FOR v_pair IN
        SELECT DISTINCT x.currency, x.shard, x.peer
          FROM jsonb_array_elements(p_items) AS i
          JOIN accounts AS s
            ON s.id = (i ->> 'source')::uuid AND s.owner_id = p_owner
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
    FOR v_item IN SELECT value FROM jsonb_array_elements(p_items) LOOP
        v_results := v_results || jsonb_build_array(ledger_transfer(
            p_owner, v_item ->> 'key', v_item ->> 'hash', (v_item ->> 'source')::uuid,
            (v_item ->> 'destination')::uuid, (v_item ->> 'amount')::bigint,
            v_item ->> 'currency', v_item ->> 'memo', v_item -> 'metadata',
            nullif(v_item -> 'payee', 'null'), p_first_attempt_at));
    END LOOP;
    RETURN v_results;
END
$$;
