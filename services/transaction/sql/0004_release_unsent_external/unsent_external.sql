-- A top-up or withdrawal refused before it reached its provider gives its
-- idempotency key back.

CREATE OR REPLACE FUNCTION ledger_release_unsent_external(
    p_owner uuid, p_key text, p_hash text, p_type text
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_stored jsonb;
BEGIN
    v_stored := ledger_idempotency_begin(p_owner, p_key, p_type, p_hash);
    IF v_stored IS NULL OR v_stored ->> 'outcome' <> 'replayed' THEN
        RETURN false;
    END IF;
    DELETE FROM idempotency_keys k
     USING transactions t
     WHERE k.owner_id = p_owner AND k.idempotency_key = p_key
       AND t.id = (v_stored -> 'transaction' ->> 'id')::uuid
       AND t.status = 'failed' AND t.failure_code = 'provider_unavailable';
    RETURN FOUND;
END
$$;
