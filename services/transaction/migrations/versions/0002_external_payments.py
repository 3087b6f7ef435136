"""Top-ups and withdrawals: money that enters or leaves the ledger through a payment
provider, as transactions that stay *pending* until the provider answers.

- `transactions` gains the types top_up and withdrawal, the statuses pending and failed,
  and the provider, failure and settlement columns. A pending or failed transaction has no
  postings; a posted one has its two, like any other. Status moves once, from pending to
  posted or failed (the guard trigger), and nothing else about a transaction changes.
- A pending withdrawal holds its amount on the wallet (`accounts.held`), so it cannot be
  spent twice while the payout is on its way; settling releases it (and posts the debit if
  the payout succeeded). The audit counts pending withdrawals as held.
- `external_payments` keeps, per pending transaction, what the gateway needs to drive the
  payment again (provider and payment-method / destination token) and when the reconciler
  should next look at it.
- `ledger_begin_external` reserves (idempotent on the caller's key, like every mutation),
  `ledger_settle_external` settles exactly once: the transaction row is locked first, and a
  transaction that is no longer pending is answered as it is.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from pathlib import Path

from services.runtime.migrations import execute_sql_script

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = r"""
ALTER TABLE transactions
    DROP CONSTRAINT transactions_type_check,
    DROP CONSTRAINT transactions_status_check,
    DROP CONSTRAINT transactions_check7,
    ADD COLUMN payment_provider text,
    ADD COLUMN failure_code text CHECK (char_length(failure_code) <= 100),
    ADD COLUMN failure_message text CHECK (char_length(failure_message) <= 500),
    ADD COLUMN settled_at timestamptz,
    ADD CONSTRAINT transactions_type_check CHECK (
        type IN ('transfer', 'payment', 'refund', 'adjustment', 'freeze', 'unfreeze',
                 'top_up', 'withdrawal')),
    ADD CONSTRAINT transactions_status_check CHECK (
        status IN ('posted', 'partially_refunded', 'refunded', 'pending', 'failed')),
    -- Only top-ups and withdrawals wait for a provider; refunds move a posted one.
    ADD CONSTRAINT transactions_status_refunds_check CHECK (
        CASE WHEN status IN ('pending', 'failed')
             THEN type IN ('top_up', 'withdrawal') AND refunded_amount = 0
             ELSE status = CASE WHEN refunded_amount = 0 THEN 'posted'
                                WHEN refunded_amount < amount THEN 'partially_refunded'
                                ELSE 'refunded' END
        END),
    ADD CONSTRAINT transactions_provider_check CHECK (
        (type IN ('top_up', 'withdrawal')) = (payment_provider IS NOT NULL)),
    ADD CONSTRAINT transactions_failure_check CHECK (
        (status = 'failed') = (failure_code IS NOT NULL));

CREATE TABLE external_payments (
    transaction_id uuid PRIMARY KEY REFERENCES transactions (id),
    provider       text NOT NULL CHECK (provider ~ '^[a-z][a-z0-9_]{0,31}$'),
    -- The payment-method token (top-up) or destination token (withdrawal): a provider's
    -- reference, never card data.
    instrument     text NOT NULL CHECK (char_length(instrument) BETWEEN 1 AND 255),
    pending        boolean NOT NULL DEFAULT true,
    checks         integer NOT NULL DEFAULT 0 CHECK (checks >= 0),
    next_check_at  timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
-- The reconciler's queue.
CREATE INDEX external_payments_due_idx ON external_payments (next_check_at) WHERE pending;
CREATE TRIGGER external_payments_permanent
    BEFORE DELETE OR TRUNCATE ON external_payments
    FOR EACH STATEMENT
    EXECUTE FUNCTION ledger_refuse_change('external payments are permanent');

-- Status moves once, from pending to posted or failed; then only refunds move it.
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

CREATE OR REPLACE FUNCTION ledger_txn_json(
    t transactions, p_source_owner uuid, p_destination_owner uuid
) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', t.id, 'type', t.type, 'status', t.status, 'amount', t.amount,
        'currency', t.currency, 'fee', t.fee,
        'source_account_id', t.source_account_id,
        'destination_account_id', t.destination_account_id,
        'source_owner_id', p_source_owner, 'destination_owner_id', p_destination_owner,
        'memo', t.memo, 'metadata', t.metadata, 'receipt_number', t.receipt_number,
        'refunded_amount', t.refunded_amount, 'refund_of', t.refund_of, 'hold_id', t.hold_id,
        'initiated_by', t.initiated_by, 'created_at', t.created_at,
        'payment_provider', t.payment_provider, 'failure_code', t.failure_code,
        'failure_message', t.failure_message)
$$;

-- The settlement account of a currency (money from and to the outside), created on first
-- use. ON CONFLICT waits for a concurrent creator and then does nothing.
CREATE FUNCTION ledger_settlement_account(p_currency text) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    v_id uuid;
BEGIN
    SELECT id INTO v_id FROM accounts
     WHERE kind = 'settlement' AND owner_id IS NULL AND currency = p_currency;
    IF NOT FOUND THEN
        INSERT INTO accounts (kind, currency) VALUES ('settlement', p_currency)
        ON CONFLICT DO NOTHING;
        SELECT id INTO STRICT v_id FROM accounts
         WHERE kind = 'settlement' AND owner_id IS NULL AND currency = p_currency;
    END IF;
    RETURN v_id;
END
$$;
"""

BEGIN_EXTERNAL = r"""
-- Reserves a top-up (money in) or withdrawal (money out, held at once) of one of the
-- owner's wallets, pending until the provider answers.
CREATE FUNCTION ledger_begin_external(
    p_owner uuid, p_key text, p_hash text, p_type text, p_wallet uuid, p_amount bigint,
    p_currency text, p_provider text, p_instrument text, p_first_check_at timestamptz
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb;
    v_wallet accounts%ROWTYPE;
    v_settlement_id uuid;
    v_txn transactions%ROWTYPE;
BEGIN
    IF p_type IS NULL OR p_type NOT IN ('top_up', 'withdrawal') THEN
        RAISE EXCEPTION 'type must be top_up or withdrawal'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_amount IS NULL OR p_amount <= 0 THEN
        RAISE EXCEPTION 'amount must be positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_currency IS NULL OR p_currency !~ '^[A-Z]{3}$' THEN
        RAISE EXCEPTION 'currency must be three capital letters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_provider IS NULL OR p_instrument IS NULL OR p_first_check_at IS NULL THEN
        RAISE EXCEPTION 'provider, instrument and first check time are required'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_result := ledger_idempotency_begin(p_owner, p_key, p_type, p_hash);
    IF v_result IS NOT NULL THEN
        RETURN v_result;
    END IF;

    -- Refuse what can be refused before creating the settlement account, so a refusal
    -- writes nothing; the checks are made again once the rows are locked.
    SELECT * INTO v_wallet FROM accounts
     WHERE id = p_wallet AND kind = 'user_wallet' AND owner_id = p_owner;
    IF NOT FOUND THEN
        RETURN '{"outcome": "wallet_not_found"}';
    ELSIF v_wallet.currency <> p_currency THEN
        RETURN '{"outcome": "currency_mismatch"}';
    ELSIF v_wallet.status = 'closed' THEN
        RETURN '{"outcome": "wallet_closed"}';
    ELSIF v_wallet.status = 'frozen' THEN
        RETURN '{"outcome": "wallet_frozen"}';
    ELSIF p_type = 'withdrawal'
          AND v_wallet.balance - v_wallet.held + v_wallet.overdraft_limit < p_amount THEN
        RETURN '{"outcome": "insufficient_funds"}';
    END IF;
    v_settlement_id := ledger_settlement_account(p_currency);

    SELECT * INTO v_wallet FROM accounts WHERE id = p_wallet FOR NO KEY UPDATE;
    IF v_wallet.status = 'closed' THEN
        RETURN '{"outcome": "wallet_closed"}';
    ELSIF v_wallet.status = 'frozen' THEN
        RETURN '{"outcome": "wallet_frozen"}';
    ELSIF p_type = 'withdrawal'
          AND v_wallet.balance - v_wallet.held + v_wallet.overdraft_limit < p_amount THEN
        RETURN '{"outcome": "insufficient_funds"}';
    END IF;

    INSERT INTO transactions (type, status, amount, currency, source_account_id,
                              destination_account_id, initiated_by, payment_provider)
    VALUES (p_type, 'pending', p_amount, p_currency,
            CASE WHEN p_type = 'top_up' THEN v_settlement_id ELSE p_wallet END,
            CASE WHEN p_type = 'top_up' THEN p_wallet ELSE v_settlement_id END,
            p_owner, p_provider)
    RETURNING * INTO v_txn;
    IF p_type = 'withdrawal' THEN
        UPDATE accounts SET held = held + p_amount, updated_at = now()
         WHERE id = p_wallet
        RETURNING * INTO v_wallet;
    END IF;
    INSERT INTO external_payments (transaction_id, provider, instrument, next_check_at)
    VALUES (v_txn.id, p_provider, p_instrument, p_first_check_at);

    RETURN ledger_idempotency_store(p_owner, p_key, p_type, p_hash,
        jsonb_build_object(
            'outcome', 'ok',
            'transaction', ledger_txn_json(
                v_txn,
                CASE WHEN p_type = 'withdrawal' THEN p_owner END,
                CASE WHEN p_type = 'top_up' THEN p_owner END),
            'wallet', ledger_wallet_json(v_wallet)));
END
$$;
"""

SETTLE_EXTERNAL = r"""
-- Settles a pending top-up or withdrawal with the provider's final answer, exactly once:
-- the transaction row is locked first (then the accounts, in id order), and one that is
-- no longer pending is answered as it stands ("already_settled"), whoever comes second —
-- the synchronous answer, a webhook or the reconciler.
CREATE FUNCTION ledger_settle_external(
    p_transaction uuid, p_succeeded boolean, p_failure_code text, p_failure_message text
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_txn transactions%ROWTYPE;
    v_wallet_id uuid;
    v_wallet accounts%ROWTYPE;
BEGIN
    IF p_transaction IS NULL OR p_succeeded IS NULL
       OR (NOT p_succeeded AND coalesce(p_failure_code, '') = '') THEN
        RAISE EXCEPTION 'transaction, outcome and (for a failure) its code are required'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO v_txn FROM transactions
     WHERE id = p_transaction AND type IN ('top_up', 'withdrawal')
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN '{"outcome": "transaction_not_found"}';
    END IF;
    v_wallet_id := CASE WHEN v_txn.type = 'top_up' THEN v_txn.destination_account_id
                        ELSE v_txn.source_account_id END;
    IF v_txn.status <> 'pending' THEN
        SELECT * INTO v_wallet FROM accounts WHERE id = v_wallet_id;
        RETURN jsonb_build_object(
            'outcome', 'already_settled',
            'transaction', ledger_txn_json(
                v_txn,
                CASE WHEN v_txn.type = 'withdrawal' THEN v_wallet.owner_id END,
                CASE WHEN v_txn.type = 'top_up' THEN v_wallet.owner_id END),
            'wallet', ledger_wallet_json(v_wallet));
    END IF;

    PERFORM 1 FROM accounts
     WHERE id IN (v_txn.source_account_id, v_txn.destination_account_id)
     ORDER BY id
       FOR NO KEY UPDATE;
    IF p_succeeded THEN
        -- A withdrawal releases its hold as it posts the debit.
        PERFORM ledger_move(v_txn.id, v_txn.source_account_id, v_txn.destination_account_id,
                            v_txn.amount,
                            CASE WHEN v_txn.type = 'withdrawal' THEN v_txn.amount ELSE 0 END);
    ELSIF v_txn.type = 'withdrawal' THEN
        UPDATE accounts SET held = held - v_txn.amount, updated_at = now()
         WHERE id = v_wallet_id;
    END IF;
    UPDATE transactions
       SET status = CASE WHEN p_succeeded THEN 'posted' ELSE 'failed' END,
           failure_code = CASE WHEN p_succeeded THEN NULL ELSE left(p_failure_code, 100) END,
           failure_message = CASE WHEN p_succeeded THEN NULL
                                  ELSE left(coalesce(p_failure_message, ''), 500) END,
           settled_at = now()
     WHERE id = v_txn.id
    RETURNING * INTO v_txn;
    UPDATE external_payments SET pending = false WHERE transaction_id = v_txn.id;

    SELECT * INTO v_wallet FROM accounts WHERE id = v_wallet_id;
    RETURN jsonb_build_object(
        'outcome', 'settled',
        'transaction', ledger_txn_json(
            v_txn,
            CASE WHEN v_txn.type = 'withdrawal' THEN v_wallet.owner_id END,
            CASE WHEN v_txn.type = 'top_up' THEN v_wallet.owner_id END),
        'wallet', ledger_wallet_json(v_wallet));
END
$$;

-- The reconciler's next batch: pending payments due for a look, claimed by pushing their
-- next look back (exponential, capped), so that instances do not work on the same rows.
CREATE FUNCTION ledger_claim_due_external(
    p_now timestamptz, p_limit int, p_base_seconds double precision,
    p_max_seconds double precision
) RETURNS TABLE (transaction_id uuid, type text, provider text, instrument text,
                 amount bigint, currency text, checks int, created_at timestamptz)
LANGUAGE sql AS $$
    WITH due AS (
        SELECT e.transaction_id FROM external_payments AS e
         WHERE e.pending AND e.next_check_at <= p_now
         ORDER BY e.next_check_at
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE external_payments AS e
           SET checks = e.checks + 1,
               next_check_at = p_now + make_interval(
                   secs => least(p_max_seconds, p_base_seconds * 2 ^ least(e.checks, 30)))
          FROM due WHERE e.transaction_id = due.transaction_id
        RETURNING e.transaction_id, e.provider, e.instrument, e.checks
    )
    SELECT c.transaction_id, t.type, c.provider, c.instrument, t.amount, t.currency::text,
           c.checks, t.created_at
      FROM claimed AS c JOIN transactions AS t ON t.id = c.transaction_id
$$;
"""

CLOSE_WALLET = r"""
-- A wallet with a top-up on its way cannot be closed (the credit would have nowhere to
-- go); a pending withdrawal is held, so the balance check already refuses.
CREATE OR REPLACE FUNCTION ledger_close_wallet(
    p_owner uuid, p_key text, p_hash text, p_wallet uuid
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb;
    v_wallet accounts%ROWTYPE;
BEGIN
    v_result := ledger_idempotency_begin(p_owner, p_key, 'close_wallet', p_hash);
    IF v_result IS NOT NULL THEN
        RETURN v_result;
    END IF;

    SELECT * INTO v_wallet FROM accounts
     WHERE id = p_wallet AND kind = 'user_wallet' AND owner_id = p_owner
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN '{"outcome": "wallet_not_found"}';
    ELSIF v_wallet.status = 'closed' THEN
        RETURN '{"outcome": "wallet_closed"}';
    ELSIF v_wallet.balance <> 0 OR v_wallet.held <> 0 THEN
        RETURN '{"outcome": "balance_not_zero"}';
    ELSIF EXISTS (SELECT FROM transactions
                   WHERE destination_account_id = p_wallet AND type = 'top_up'
                     AND status = 'pending') THEN
        RETURN '{"outcome": "payment_pending"}';
    END IF;

    UPDATE accounts SET status = 'closed', updated_at = now()
     WHERE id = p_wallet
    RETURNING * INTO v_wallet;

    RETURN ledger_idempotency_store(p_owner, p_key, 'close_wallet', p_hash,
        jsonb_build_object('outcome', 'ok', 'wallet', ledger_wallet_json(v_wallet)));
END
$$;
"""

AUDIT = r"""
-- The audit of 0001, knowing that pending withdrawals are held and that pending and failed
-- transactions move no money.
CREATE OR REPLACE FUNCTION ledger_audit()
RETURNS TABLE (check_name text, subject text, expected text, actual text)
LANGUAGE sql STABLE AS $$
WITH per_account AS (
    SELECT account_id, sum(amount) AS total, count(*) AS n
      FROM postings GROUP BY account_id
), chain AS (
    SELECT p.id, p.account_id, p.amount, p.balance_after, p.account_version,
           sum(p.amount) OVER w AS running,
           row_number() OVER w AS position
      FROM postings AS p
    WINDOW w AS (PARTITION BY p.account_id ORDER BY p.account_version, p.id)
), active_holds AS (
    -- What is held on an account: its active holds and its pending withdrawals.
    SELECT account_id, sum(amount) AS total FROM (
        SELECT account_id, amount FROM holds WHERE status = 'active'
        UNION ALL
        SELECT source_account_id, amount FROM transactions
         WHERE type = 'withdrawal' AND status = 'pending'
    ) AS reserved GROUP BY account_id
), refunds AS (
    SELECT refund_of, sum(amount) AS total FROM transactions
     WHERE type = 'refund' GROUP BY refund_of
)
SELECT 'transaction_balanced', p.transaction_id || ' ' || p.currency, '0', sum(p.amount)::text
  FROM postings AS p
 GROUP BY p.transaction_id, p.currency
HAVING sum(p.amount) <> 0
UNION ALL
SELECT 'currency_balanced', p.currency::text, '0', sum(p.amount)::text
  FROM postings AS p
 GROUP BY p.currency
HAVING sum(p.amount) <> 0
UNION ALL
SELECT 'account_balance', a.id::text, coalesce(s.total, 0)::text, a.balance::text
  FROM accounts AS a LEFT JOIN per_account AS s ON s.account_id = a.id
 WHERE a.balance <> coalesce(s.total, 0)
UNION ALL
SELECT 'account_version', a.id::text, coalesce(s.n, 0)::text, a.version::text
  FROM accounts AS a LEFT JOIN per_account AS s ON s.account_id = a.id
 WHERE a.version <> coalesce(s.n, 0)
UNION ALL
SELECT 'posting_balance_after', 'posting ' || c.id || ' of account ' || c.account_id,
       c.running::text, c.balance_after::text
  FROM chain AS c
 WHERE c.balance_after <> c.running
UNION ALL
SELECT 'posting_version', 'posting ' || c.id || ' of account ' || c.account_id,
       c.position::text, c.account_version::text
  FROM chain AS c
 WHERE c.account_version <> c.position
UNION ALL
SELECT 'account_held', a.id::text, coalesce(h.total, 0)::text, a.held::text
  FROM accounts AS a LEFT JOIN active_holds AS h ON h.account_id = a.id
 WHERE a.held <> coalesce(h.total, 0)
UNION ALL
SELECT 'wallet_available', a.id::text, '>= 0',
       (a.balance - a.held + a.overdraft_limit)::text
  FROM accounts AS a
 WHERE a.kind = 'user_wallet' AND a.balance - a.held + a.overdraft_limit < 0
UNION ALL
SELECT 'refunded_amount', t.id::text, coalesce(r.total, 0)::text, t.refunded_amount::text
  FROM transactions AS t LEFT JOIN refunds AS r ON r.refund_of = t.id
 WHERE t.refunded_amount <> coalesce(r.total, 0)
UNION ALL
SELECT 'transaction_has_postings', t.id::text, 'postings', 'none'
  FROM transactions AS t
 WHERE t.type NOT IN ('freeze', 'unfreeze') AND t.status NOT IN ('pending', 'failed')
   AND NOT EXISTS (SELECT FROM postings AS p WHERE p.transaction_id = t.id)
UNION ALL
SELECT 'status_change_without_postings', t.id::text, 'none', count(*)::text || ' postings'
  FROM transactions AS t JOIN postings AS p ON p.transaction_id = t.id
 WHERE t.type IN ('freeze', 'unfreeze') OR t.status IN ('pending', 'failed')
 GROUP BY t.id
UNION ALL
-- A money transaction (without fee: no function charges one yet) is exactly a debit of
-- its source and a credit of its destination, of its amount.
SELECT 'transaction_postings', t.id::text,
       '-' || t.amount || ' on ' || t.source_account_id
           || ', +' || t.amount || ' on ' || t.destination_account_id,
       string_agg(p.amount || ' on ' || p.account_id, ', ' ORDER BY p.id)
  FROM transactions AS t JOIN postings AS p ON p.transaction_id = t.id
 WHERE t.type NOT IN ('freeze', 'unfreeze') AND t.fee = 0
 GROUP BY t.id
HAVING NOT (count(*) = 2
            AND bool_or(p.account_id = t.source_account_id AND p.amount = -t.amount)
            AND bool_or(p.account_id = t.destination_account_id AND p.amount = t.amount))
UNION ALL
SELECT 'hold_capture', h.id::text, h.captured_amount || ' by payment ' || h.capture_transaction_id,
       coalesce(t.amount || ' by ' || t.type || ' for hold ' || t.hold_id, 'no transaction')
  FROM holds AS h LEFT JOIN transactions AS t ON t.id = h.capture_transaction_id
 WHERE h.status = 'captured'
   AND (t.id IS NULL OR t.amount <> h.captured_amount OR t.type <> 'payment'
        OR t.hold_id IS DISTINCT FROM h.id)
$$;

"""

UPGRADE = (SCHEMA, BEGIN_EXTERNAL, SETTLE_EXTERNAL, CLOSE_WALLET, AUDIT)


def upgrade() -> None:
    for script in UPGRADE:
        execute_sql_script(script)


DOWNGRADE = r"""
DO $$
BEGIN
    IF EXISTS (SELECT FROM transactions WHERE type IN ('top_up', 'withdrawal')) THEN
        RAISE EXCEPTION 'top-ups or withdrawals exist: 0002 cannot be undone without losing'
                        ' them; restore a backup taken before the upgrade instead'
            USING ERRCODE = 'restrict_violation';
    END IF;
END
$$;
DROP FUNCTION ledger_claim_due_external(timestamptz, int, double precision, double precision);
DROP FUNCTION ledger_settle_external(uuid, boolean, text, text);
DROP FUNCTION ledger_begin_external(uuid, text, text, text, uuid, bigint, text, text, text,
                                    timestamptz);
DROP FUNCTION ledger_settlement_account(text);
DROP TABLE external_payments;
ALTER TABLE transactions
    DROP CONSTRAINT transactions_failure_check,
    DROP CONSTRAINT transactions_provider_check,
    DROP CONSTRAINT transactions_status_refunds_check,
    DROP CONSTRAINT transactions_status_check,
    DROP CONSTRAINT transactions_type_check,
    DROP COLUMN settled_at,
    DROP COLUMN failure_message,
    DROP COLUMN failure_code,
    DROP COLUMN payment_provider,
    ADD CONSTRAINT transactions_type_check CHECK (
        type IN ('transfer', 'payment', 'refund', 'adjustment', 'freeze', 'unfreeze')),
    ADD CONSTRAINT transactions_status_check CHECK (
        status IN ('posted', 'partially_refunded', 'refunded')),
    ADD CONSTRAINT transactions_check7 CHECK (
        status = CASE WHEN refunded_amount = 0 THEN 'posted'
                      WHEN refunded_amount < amount THEN 'partially_refunded'
                      ELSE 'refunded' END);
"""

# The functions 0002 replaced, as 0001 wrote them.
_REPLACED = ("transactions_guard_update", "ledger_txn_json", "ledger_close_wallet", "ledger_audit")


def _as_in_0001(name: str) -> str:
    """The CREATE FUNCTION statement of `name` in 0001, as CREATE OR REPLACE."""
    source = (Path(__file__).with_name("0001_ledger.py")).read_text()
    start = source.index(f"CREATE FUNCTION {name}(")
    end = source.index("\n$$;", start) + len("\n$$;")
    return "CREATE OR REPLACE" + source[start + len("CREATE") : end]


def downgrade() -> None:
    execute_sql_script(DOWNGRADE)
    for name in _REPLACED:
        execute_sql_script(_as_in_0001(name))
