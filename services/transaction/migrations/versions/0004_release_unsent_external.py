"""A top-up or withdrawal that failed because its provider was unavailable — refused
before anything was sent to it (the gateway's breaker open, the provider unreachable) —
does not keep its idempotency key: a retry with the same key tries the provider again.

Its first answer is UNAVAILABLE (503, retryable); a client (or Envoy) that retries with
the key, as it should, would otherwise be answered that same 503 forever. The failed
transaction stays as history; the key points at the new attempt once it is booked.
`ledger_release_unsent_external` takes the key's lock (so two retries do not both
release it) and releases it only if its transaction is such a failure.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from services.runtime.migrations import execute_sql_script

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE FUNCTION ledger_release_unsent_external(
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
"""

DOWNGRADE = "DROP FUNCTION ledger_release_unsent_external(uuid, text, text, text);"


def upgrade() -> None:
    execute_sql_script(UPGRADE)


def downgrade() -> None:
    execute_sql_script(DOWNGRADE)
