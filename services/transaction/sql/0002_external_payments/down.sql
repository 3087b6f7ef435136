-- Undoes 0002: the reconciler's table and the functions of top-ups and withdrawals.
DROP FUNCTION ledger_claim_due_external(timestamptz, int, double precision, double precision);
DROP FUNCTION ledger_settle_external(uuid, boolean, text, text);
DROP FUNCTION ledger_begin_external(
    uuid, text, text, text, uuid, bigint, text, text, text, timestamptz
);
DROP TABLE external_payments;
