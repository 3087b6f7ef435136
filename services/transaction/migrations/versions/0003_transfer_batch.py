"""Batches of transfers: several transfers of one owner in one call, one round trip and
one commit (group commit), each with its own idempotency key and its own outcome.

`ledger_transfer_batch` first locks every wallet the batch touches, in ascending id
order in one statement — the order every ledger function locks in, so batches and
single transfers never deadlock — then books the items in order with `ledger_transfer`
itself (same checks, same idempotency, same stored results; a row lock already held is
taken again at no cost). A refusal is that item's outcome and the others go on; only a
programming error (a malformed item) raises and rolls the whole batch back.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from services.runtime.migrations import execute_sql_script

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = r"""
-- p_items: [{"key", "hash", "source", "destination", "amount", "currency", "memo",
-- "metadata"}, ...]; returns the outcomes in the same order.
CREATE FUNCTION ledger_transfer_batch(p_owner uuid, p_items jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_item jsonb;
    v_results jsonb := '[]';
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
    FOR v_item IN SELECT value FROM jsonb_array_elements(p_items) LOOP
        v_results := v_results || jsonb_build_array(ledger_transfer(
            p_owner, v_item ->> 'key', v_item ->> 'hash', (v_item ->> 'source')::uuid,
            (v_item ->> 'destination')::uuid, (v_item ->> 'amount')::bigint,
            v_item ->> 'currency', v_item ->> 'memo', v_item -> 'metadata'));
    END LOOP;
    RETURN v_results;
END
$$;
"""

DOWNGRADE = "DROP FUNCTION ledger_transfer_batch(uuid, jsonb);"


def upgrade() -> None:
    execute_sql_script(UPGRADE)


def downgrade() -> None:
    execute_sql_script(DOWNGRADE)
