-- Undoes 0007.
DROP FUNCTION ledger_transfer_group(jsonb, timestamptz);
