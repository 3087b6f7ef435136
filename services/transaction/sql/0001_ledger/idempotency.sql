-- Idempotency: every mutating function begins and ends with these.

-- Idempotency, step 1, before anything else: NULL means "go ahead", anything else is the
-- answer. The advisory lock (released at commit) makes a concurrent call with the same key
-- answer in_progress instead of running twice; the key row is read in a statement of its
-- own, after the lock, so that it sees a row committed while we were taking it.
CREATE OR REPLACE FUNCTION ledger_idempotency_begin(
    p_owner uuid, p_key text, p_operation text, p_hash text
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_stored idempotency_keys%ROWTYPE;
BEGIN
    IF p_owner IS NULL OR p_hash IS NULL OR p_key IS NULL
       OR char_length(p_key) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'owner, request hash and an idempotency key of 1 to 255 characters '
                        'are required'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT pg_try_advisory_xact_lock(hashtextextended(p_owner::text || ':' || p_key, 0)) THEN
        RETURN '{"outcome": "in_progress"}';
    END IF;
    SELECT * INTO v_stored
      FROM idempotency_keys
     WHERE owner_id = p_owner AND idempotency_key = p_key;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_stored.operation <> p_operation OR v_stored.request_hash <> p_hash THEN
        RETURN '{"outcome": "key_mismatch"}';
    END IF;
    RETURN v_stored.result || '{"outcome": "replayed"}';
END
$$;

-- Idempotency, step 2, on success only: remember the result, in the same transaction.
CREATE OR REPLACE FUNCTION ledger_idempotency_store(
    p_owner uuid, p_key text, p_operation text, p_hash text, p_result jsonb
) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO idempotency_keys (owner_id, idempotency_key, operation, request_hash, result)
    VALUES (p_owner, p_key, p_operation, p_hash, p_result);
    RETURN p_result;
END
$$;
