-- Undoes 0007 (after its downgrade has re-applied the batches of before).
DROP FUNCTION ledger_transfer_group(jsonb, timestamptz);
DROP FUNCTION ledger_lock_transfers(jsonb);
