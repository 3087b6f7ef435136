-- Undoes 0004.
DROP FUNCTION ledger_release_unsent_external(uuid, text, text, text);
