-- Undoes 0003.
DROP FUNCTION ledger_transfer_batch(uuid, jsonb);
