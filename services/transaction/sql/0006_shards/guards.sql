-- The guards of history: rows that are never deleted (nor truncated), postings that never
-- change, postings that always balance, and transactions and holds that change only as
-- the ledger's functions change them.

-- Rows that are history: never deleted (nor truncated), and for postings never updated.
CREATE OR REPLACE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % is not allowed: %', TG_OP, TG_TABLE_NAME, TG_ARGV[0]
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE OR REPLACE TRIGGER postings_immutable
BEFORE UPDATE OR DELETE OR TRUNCATE ON postings
FOR EACH STATEMENT
EXECUTE FUNCTION ledger_refuse_change('postings are immutable; correct with a new transaction');
CREATE OR REPLACE TRIGGER transactions_permanent
BEFORE DELETE OR TRUNCATE ON transactions
FOR EACH STATEMENT
EXECUTE FUNCTION ledger_refuse_change('transactions are permanent; correct with a new one');
CREATE OR REPLACE TRIGGER holds_permanent
BEFORE DELETE OR TRUNCATE ON holds
FOR EACH STATEMENT
EXECUTE FUNCTION ledger_refuse_change('holds are permanent; void or expire them');
CREATE OR REPLACE TRIGGER accounts_permanent
BEFORE DELETE OR TRUNCATE ON accounts
FOR EACH STATEMENT
EXECUTE FUNCTION ledger_refuse_change('accounts are permanent; close them');

-- Every INSERT into postings must balance per transaction and currency. Our functions
-- insert all the postings of a transaction in one statement.
CREATE OR REPLACE FUNCTION postings_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_unbalanced record;
BEGIN
    SELECT transaction_id, currency, sum(amount) AS total INTO v_unbalanced
      FROM new_postings
     GROUP BY transaction_id, currency
    HAVING sum(amount) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'postings of transaction % do not balance in %: they sum to %',
            v_unbalanced.transaction_id, v_unbalanced.currency, v_unbalanced.total
            USING ERRCODE = 'check_violation',
                  HINT = 'insert all postings of a transaction in one statement';
    END IF;
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER postings_balanced
AFTER INSERT ON postings
REFERENCING NEW TABLE AS new_postings
FOR EACH STATEMENT
EXECUTE FUNCTION postings_check_balanced();

-- A transaction's facts never change. Its status moves once from pending to posted or
-- failed (settling a top-up or withdrawal); then only refunds move it, and its
-- refunded_amount, upwards.
CREATE OR REPLACE FUNCTION transactions_guard_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_settling boolean := OLD.status = 'pending' AND NEW.status IN ('posted', 'failed');
BEGIN
    IF to_jsonb(NEW) - 'status' - 'refunded_amount' - 'failure_code' - 'failure_message'
                     - 'settled_at'
       IS DISTINCT FROM to_jsonb(OLD) - 'status' - 'refunded_amount' - 'failure_code'
                     - 'failure_message' - 'settled_at' THEN
        RAISE EXCEPTION 'transaction %: only status and refunded_amount may change', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.refunded_amount < OLD.refunded_amount THEN
        RAISE EXCEPTION 'transaction %: refunded_amount cannot decrease (% to %)',
            OLD.id, OLD.refunded_amount, NEW.refunded_amount
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF NOT v_settling AND (
           OLD.status IN ('pending', 'failed') OR NEW.status IN ('pending', 'failed')
           OR NEW.failure_code IS DISTINCT FROM OLD.failure_code
           OR NEW.failure_message IS DISTINCT FROM OLD.failure_message
           OR NEW.settled_at IS DISTINCT FROM OLD.settled_at) THEN
        RAISE EXCEPTION 'transaction %: % cannot become %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE OR REPLACE TRIGGER transactions_guard_update
BEFORE UPDATE ON transactions
FOR EACH ROW
EXECUTE FUNCTION transactions_guard_update();

-- A hold changes once: from active to captured, voided or expired.
CREATE OR REPLACE FUNCTION holds_guard_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF to_jsonb(NEW) - 'status' - 'captured_amount' - 'capture_transaction_id' - 'updated_at'
       IS DISTINCT FROM
       to_jsonb(OLD) - 'status' - 'captured_amount' - 'capture_transaction_id' - 'updated_at'
    THEN
        RAISE EXCEPTION 'hold %: only its status and capture may change', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    -- One exception: a capture whose payment the merchant's database refused (saga.sql)
    -- released the hold after all, and says so.
    IF OLD.status <> 'active'
       AND NOT (OLD.status = 'captured' AND NEW.status = 'voided'
                AND EXISTS (SELECT FROM transactions AS t
                             WHERE t.id = OLD.capture_transaction_id
                               AND t.status = 'failed')) THEN
        RAISE EXCEPTION 'hold % is % and can no longer change', OLD.id, OLD.status
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE OR REPLACE TRIGGER holds_guard_update
BEFORE UPDATE ON holds
FOR EACH ROW
EXECUTE FUNCTION holds_guard_update();
