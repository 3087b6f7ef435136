"""The double-entry ledger: accounts, transactions, postings, holds, idempotency keys,
and the plpgsql functions that are the only way the service moves money.

Why the money logic lives in the database: one transfer is one function call, so one
round trip and one transaction (PERF-NOTES: ~2.4x the throughput of separate statements),
and every rule that keeps money from being created, lost or moved twice is enforced next to
the rows it protects:

- CHECK constraints make bad states unstorable (a wallet below its overdraft limit, a hold
  captured beyond its amount, a refund beyond what was paid, a posting of zero).
- Postings are immutable (UPDATE, DELETE and TRUNCATE raise), and a statement-level trigger
  refuses any INSERT whose postings do not sum to zero per transaction and currency.
  A composite foreign key keeps each posting in its account's currency.
- Transactions cannot be deleted; only their status and refunded_amount may change.
- Each mutating function takes an idempotency key: a transaction-scoped advisory lock on
  (owner, key) serialises retries, and the stored result is replayed.
- Rows are locked in one fixed order (hold or original transaction first, then accounts in
  ascending id order), with FOR NO KEY UPDATE, which is what the UPDATE itself takes and
  which does not block the FOR KEY SHARE locks of foreign-key checks: no deadlocks.
- Business refusals return an outcome and write nothing; programming errors (a missing
  argument, a non-positive amount) raise invalid_parameter_value (SQLSTATE 22023).

The SQL is sent with exec_driver_sql and no parameters, untouched: SQLAlchemy's text()
would read `:1` in a JSON literal as a bind parameter, and psycopg would read the `%` of
RAISE messages as placeholders if given a (even empty) parameter list.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from services.runtime.migrations import execute_sql_script

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TABLES = r"""
-- Receipt numbers: R- and 11 digits. The sequence stops (errors) rather than wrap or
-- outgrow the format; CACHE 1 (the default) keeps numbers monotonic across sessions.
CREATE SEQUENCE receipt_number_seq AS bigint MINVALUE 1 MAXVALUE 99999999999 NO CYCLE;

CREATE TABLE accounts (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind            text NOT NULL CHECK (kind IN ('user_wallet', 'settlement')),
    owner_id        uuid,
    currency        char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status          text NOT NULL DEFAULT 'active'
                    CHECK (status IN ('active', 'frozen', 'closed')),
    balance         bigint NOT NULL DEFAULT 0,
    held            bigint NOT NULL DEFAULT 0 CHECK (held >= 0),
    overdraft_limit bigint NOT NULL DEFAULT 0 CHECK (overdraft_limit >= 0),
    -- The number of postings of the account; postings carry it as account_version.
    version         bigint NOT NULL DEFAULT 0 CHECK (version >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT accounts_owner_iff_wallet CHECK ((kind = 'user_wallet') = (owner_id IS NOT NULL)),
    -- Settlement accounts go negative by design: their balance is money that came in from
    -- outside. Wallets never go below their overdraft limit.
    CONSTRAINT accounts_available_check
        CHECK (kind = 'settlement' OR balance - held + overdraft_limit >= 0),
    CONSTRAINT accounts_closed_empty_check
        CHECK (status <> 'closed' OR (balance = 0 AND held = 0)),
    CONSTRAINT accounts_settlement_active_check CHECK (kind = 'user_wallet' OR status = 'active'),
    -- Target of the composite foreign keys that keep postings and holds in the account's
    -- currency.
    CONSTRAINT accounts_id_currency_key UNIQUE (id, currency)
);
-- One wallet per owner and currency. Not partial (settlement accounts have no owner, and
-- NULLs are distinct), so that it also serves every lookup of an owner's wallets.
CREATE UNIQUE INDEX accounts_owner_currency_key ON accounts (owner_id, currency);
CREATE UNIQUE INDEX accounts_system_currency_key ON accounts (kind, currency)
    WHERE owner_id IS NULL;

CREATE TABLE holds (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id             uuid NOT NULL,
    merchant_account_id    uuid NOT NULL,
    currency               char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    amount                 bigint NOT NULL CHECK (amount > 0),
    captured_amount        bigint NOT NULL DEFAULT 0
                           CHECK (captured_amount BETWEEN 0 AND amount),
    status                 text NOT NULL DEFAULT 'active'
                           CHECK (status IN ('active', 'captured', 'voided', 'expired')),
    expires_at             timestamptz NOT NULL,
    memo                   text CHECK (char_length(memo) <= 500),
    created_by             uuid NOT NULL,
    capture_transaction_id uuid,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (account_id, currency) REFERENCES accounts (id, currency),
    FOREIGN KEY (merchant_account_id, currency) REFERENCES accounts (id, currency),
    CHECK (account_id <> merchant_account_id),
    CHECK (expires_at > created_at),
    CONSTRAINT holds_capture_check CHECK (
        CASE WHEN status = 'captured'
             THEN capture_transaction_id IS NOT NULL AND captured_amount > 0
             ELSE capture_transaction_id IS NULL AND captured_amount = 0
        END
    )
);
-- ledger_expire_holds walks this index.
CREATE INDEX holds_active_expires_at_idx ON holds (expires_at) WHERE status = 'active';
CREATE INDEX holds_account_idx ON holds (account_id, created_at DESC);
CREATE INDEX holds_merchant_account_idx ON holds (merchant_account_id, created_at DESC);

CREATE TABLE transactions (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    type                   text NOT NULL CHECK (
                               type IN ('transfer', 'payment', 'refund', 'adjustment',
                                        'freeze', 'unfreeze')),
    status                 text NOT NULL DEFAULT 'posted'
                           CHECK (status IN ('posted', 'partially_refunded', 'refunded')),
    amount                 bigint NOT NULL,
    currency               char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    source_account_id      uuid,
    destination_account_id uuid,
    fee                    bigint NOT NULL DEFAULT 0 CHECK (fee >= 0),
    memo                   text CHECK (char_length(memo) <= 500),
    metadata               jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    initiated_by           uuid NOT NULL,
    receipt_number         text NOT NULL UNIQUE
                           DEFAULT 'R-' || lpad(nextval('receipt_number_seq')::text, 11, '0'),
    refunded_amount        bigint NOT NULL DEFAULT 0,
    refund_of              uuid REFERENCES transactions (id),
    hold_id                uuid REFERENCES holds (id),
    created_at             timestamptz NOT NULL DEFAULT now(),
    -- The accounts of a transaction exist and are in its currency (no NULL: no check).
    FOREIGN KEY (source_account_id, currency) REFERENCES accounts (id, currency),
    FOREIGN KEY (destination_account_id, currency) REFERENCES accounts (id, currency),
    CHECK (amount > 0 OR type IN ('freeze', 'unfreeze')),
    CHECK (amount = 0 OR type NOT IN ('freeze', 'unfreeze')),
    CHECK (refunded_amount BETWEEN 0 AND amount),
    CHECK (source_account_id <> destination_account_id),
    CHECK ((type = 'refund') = (refund_of IS NOT NULL)),
    CHECK (hold_id IS NULL OR type = 'payment'),
    CHECK (refunded_amount = 0 OR type IN ('transfer', 'payment')),
    CHECK (status = CASE WHEN refunded_amount = 0 THEN 'posted'
                         WHEN refunded_amount < amount THEN 'partially_refunded'
                         ELSE 'refunded' END)
);
-- A wallet's history, newest first, with keyset pagination on (created_at, id).
CREATE INDEX transactions_source_history_idx
    ON transactions (source_account_id, created_at DESC, id DESC);
CREATE INDEX transactions_destination_history_idx
    ON transactions (destination_account_id, created_at DESC, id DESC);
CREATE INDEX transactions_refund_of_idx ON transactions (refund_of);

ALTER TABLE holds ADD FOREIGN KEY (capture_transaction_id) REFERENCES transactions (id);

CREATE TABLE postings (
    id              bigserial PRIMARY KEY,
    transaction_id  uuid NOT NULL REFERENCES transactions (id),
    account_id      uuid NOT NULL,
    currency        char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    amount          bigint NOT NULL CHECK (amount <> 0),
    balance_after   bigint NOT NULL,
    account_version bigint NOT NULL CHECK (account_version > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- A posting can only be in its account's currency.
    FOREIGN KEY (account_id, currency) REFERENCES accounts (id, currency),
    -- Two postings can never claim the same place in an account's history.
    UNIQUE (account_id, account_version)
);
CREATE INDEX postings_transaction_idx ON postings (transaction_id);

CREATE TABLE idempotency_keys (
    owner_id        uuid NOT NULL,
    idempotency_key text NOT NULL CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
    operation       text NOT NULL,
    request_hash    text NOT NULL,
    result          jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, idempotency_key)
);
"""

GUARDS = r"""
-- Rows that are history: never deleted (nor truncated), and for postings never updated.
CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % is not allowed: %', TG_OP, TG_TABLE_NAME, TG_ARGV[0]
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER postings_immutable
    BEFORE UPDATE OR DELETE OR TRUNCATE ON postings
    FOR EACH STATEMENT
    EXECUTE FUNCTION ledger_refuse_change('postings are immutable; correct with a new transaction');
CREATE TRIGGER transactions_permanent
    BEFORE DELETE OR TRUNCATE ON transactions
    FOR EACH STATEMENT
    EXECUTE FUNCTION ledger_refuse_change('transactions are permanent; correct with a new one');
CREATE TRIGGER holds_permanent
    BEFORE DELETE OR TRUNCATE ON holds
    FOR EACH STATEMENT
    EXECUTE FUNCTION ledger_refuse_change('holds are permanent; void or expire them');
CREATE TRIGGER accounts_permanent
    BEFORE DELETE OR TRUNCATE ON accounts
    FOR EACH STATEMENT
    EXECUTE FUNCTION ledger_refuse_change('accounts are permanent; close them');

-- Every INSERT into postings must balance per transaction and currency. Our functions
-- insert all the postings of a transaction in one statement.
CREATE FUNCTION postings_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
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
CREATE TRIGGER postings_balanced
    AFTER INSERT ON postings
    REFERENCING NEW TABLE AS new_postings
    FOR EACH STATEMENT
    EXECUTE FUNCTION postings_check_balanced();

-- A transaction's facts never change; only refunds move its status and refunded_amount,
-- and only upwards.
CREATE FUNCTION transactions_guard_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF to_jsonb(NEW) - 'status' - 'refunded_amount'
       IS DISTINCT FROM to_jsonb(OLD) - 'status' - 'refunded_amount' THEN
        RAISE EXCEPTION 'transaction %: only status and refunded_amount may change', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.refunded_amount < OLD.refunded_amount THEN
        RAISE EXCEPTION 'transaction %: refunded_amount cannot decrease (% to %)',
            OLD.id, OLD.refunded_amount, NEW.refunded_amount
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER transactions_guard_update
    BEFORE UPDATE ON transactions
    FOR EACH ROW
    EXECUTE FUNCTION transactions_guard_update();

-- A hold changes once: from active to captured, voided or expired.
CREATE FUNCTION holds_guard_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF to_jsonb(NEW) - 'status' - 'captured_amount' - 'capture_transaction_id' - 'updated_at'
       IS DISTINCT FROM
       to_jsonb(OLD) - 'status' - 'captured_amount' - 'capture_transaction_id' - 'updated_at'
    THEN
        RAISE EXCEPTION 'hold %: only its status and capture may change', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.status <> 'active' THEN
        RAISE EXCEPTION 'hold % is % and can no longer change', OLD.id, OLD.status
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER holds_guard_update
    BEFORE UPDATE ON holds
    FOR EACH ROW
    EXECUTE FUNCTION holds_guard_update();
"""

HELPERS = r"""
-- Idempotency, step 1, before anything else: NULL means "go ahead", anything else is the
-- answer. The advisory lock (released at commit) makes a concurrent call with the same key
-- answer in_progress instead of running twice; the key row is read in a statement of its
-- own, after the lock, so that it sees a row committed while we were taking it.
CREATE FUNCTION ledger_idempotency_begin(
    p_owner uuid, p_key text, p_operation text, p_hash text
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_stored idempotency_keys%ROWTYPE;
BEGIN
    IF p_owner IS NULL OR p_hash IS NULL OR p_key IS NULL
       OR char_length(p_key) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'owner, request hash and an idempotency key of 1 to 255 characters '
                        'are required'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT pg_try_advisory_xact_lock(hashtextextended(p_owner::text || ':' || p_key, 0)) THEN
        RETURN '{"outcome": "in_progress"}';
    END IF;
    SELECT * INTO v_stored
      FROM idempotency_keys
     WHERE owner_id = p_owner AND idempotency_key = p_key;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_stored.operation <> p_operation OR v_stored.request_hash <> p_hash THEN
        RETURN '{"outcome": "key_mismatch"}';
    END IF;
    RETURN v_stored.result || '{"outcome": "replayed"}';
END
$$;

-- Idempotency, step 2, on success only: remember the result, in the same transaction.
CREATE FUNCTION ledger_idempotency_store(
    p_owner uuid, p_key text, p_operation text, p_hash text, p_result jsonb
) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO idempotency_keys (owner_id, idempotency_key, operation, request_hash, result)
    VALUES (p_owner, p_key, p_operation, p_hash, p_result);
    RETURN p_result;
END
$$;

-- Moves p_amount from one locked account to another, with both postings in one INSERT.
-- balance_after and account_version come from the UPDATE itself, so they cannot be stale.
-- p_release is taken off the source's held amount (a captured hold).
CREATE FUNCTION ledger_move(
    p_transaction_id uuid, p_from uuid, p_to uuid, p_amount bigint, p_release bigint
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    WITH moved AS (
        UPDATE accounts AS a
           SET balance = a.balance + m.delta,
               held = a.held - m.release,
               version = a.version + 1,
               updated_at = now()
          FROM (VALUES (p_from, -p_amount, p_release), (p_to, p_amount, 0::bigint))
               AS m (account_id, delta, release)
         WHERE a.id = m.account_id
        RETURNING a.id, a.currency, m.delta, a.balance, a.version
    )
    INSERT INTO postings (transaction_id, account_id, currency, amount, balance_after,
                          account_version)
    SELECT p_transaction_id, id, currency, delta, balance, version FROM moved ORDER BY delta;
END
$$;

CREATE FUNCTION ledger_wallet_json(a accounts) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', a.id, 'owner_id', a.owner_id, 'currency', a.currency, 'balance', a.balance,
        'held', a.held, 'overdraft_limit', a.overdraft_limit, 'status', a.status,
        'created_at', a.created_at)
$$;

CREATE FUNCTION ledger_txn_json(
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
        'initiated_by', t.initiated_by, 'created_at', t.created_at)
$$;

CREATE FUNCTION ledger_hold_json(h holds) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', h.id, 'account_id', h.account_id, 'merchant_account_id', h.merchant_account_id,
        'currency', h.currency, 'amount', h.amount, 'captured_amount', h.captured_amount,
        'status', h.status, 'expires_at', h.expires_at, 'memo', h.memo,
        'capture_transaction_id', h.capture_transaction_id, 'created_by', h.created_by,
        'created_at', h.created_at)
$$;
"""

CREATE_WALLET = r"""
CREATE FUNCTION ledger_create_wallet(
    p_owner uuid, p_key text, p_hash text, p_currency text
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb;
    v_wallet accounts%ROWTYPE;
BEGIN
    IF p_currency IS NULL OR p_currency !~ '^[A-Z]{3}$' THEN
        RAISE EXCEPTION 'currency must be three capital letters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_result := ledger_idempotency_begin(p_owner, p_key, 'create_wallet', p_hash);
    IF v_result IS NOT NULL THEN
        RETURN v_result;
    END IF;
    -- Waits for a concurrent insert of the same wallet, then does nothing.
    INSERT INTO accounts (kind, owner_id, currency)
    VALUES ('user_wallet', p_owner, p_currency)
    ON CONFLICT (owner_id, currency) DO NOTHING
    RETURNING * INTO v_wallet;
    IF NOT FOUND THEN
        RETURN '{"outcome": "wallet_exists"}';
    END IF;
    RETURN ledger_idempotency_store(p_owner, p_key, 'create_wallet', p_hash,
        jsonb_build_object('outcome', 'ok', 'wallet', ledger_wallet_json(v_wallet)));
END
$$;
"""

TRANSFER = r"""
CREATE FUNCTION ledger_transfer(
    p_owner uuid, p_key text, p_hash text, p_source uuid, p_destination uuid,
    p_amount bigint, p_currency text, p_memo text, p_metadata jsonb
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb;
    v_account accounts%ROWTYPE;
    v_source accounts%ROWTYPE;
    v_destination accounts%ROWTYPE;
    v_txn transactions%ROWTYPE;
BEGIN
    IF p_amount IS NULL OR p_amount <= 0 THEN
        RAISE EXCEPTION 'amount must be positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_currency IS NULL OR p_currency !~ '^[A-Z]{3}$' THEN
        RAISE EXCEPTION 'currency must be three capital letters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_result := ledger_idempotency_begin(p_owner, p_key, 'transfer', p_hash);
    IF v_result IS NOT NULL THEN
        RETURN v_result;
    END IF;

    -- One query locks both wallets in ascending id order; another user's wallet is only
    -- ever locked as a destination.
    FOR v_account IN
        SELECT * FROM accounts
         WHERE kind = 'user_wallet'
           AND ((id = p_source AND owner_id = p_owner) OR id = p_destination)
         ORDER BY id
           FOR NO KEY UPDATE
    LOOP
        IF v_account.id = p_source AND v_account.owner_id = p_owner THEN
            v_source := v_account;
        END IF;
        IF v_account.id = p_destination THEN
            v_destination := v_account;
        END IF;
    END LOOP;

    IF v_source.id IS NULL THEN
        RETURN '{"outcome": "wallet_not_found"}';
    ELSIF v_destination.id IS NULL THEN
        RETURN '{"outcome": "destination_not_found"}';
    ELSIF v_destination.owner_id = p_owner THEN
        RETURN '{"outcome": "self_transfer"}';
    ELSIF v_source.currency <> p_currency OR v_destination.currency <> p_currency THEN
        RETURN '{"outcome": "currency_mismatch"}';
    ELSIF v_source.status = 'frozen' THEN
        RETURN '{"outcome": "source_frozen"}';
    ELSIF v_source.status = 'closed' THEN
        RETURN '{"outcome": "source_closed"}';
    ELSIF v_destination.status = 'closed' THEN
        RETURN '{"outcome": "destination_closed"}';
    ELSIF v_source.balance - v_source.held + v_source.overdraft_limit < p_amount THEN
        RETURN '{"outcome": "insufficient_funds"}';
    END IF;

    INSERT INTO transactions (type, amount, currency, source_account_id,
                              destination_account_id, memo, metadata, initiated_by)
    VALUES ('transfer', p_amount, v_source.currency, p_source, p_destination, p_memo,
            coalesce(p_metadata, '{}'), p_owner)
    RETURNING * INTO v_txn;
    PERFORM ledger_move(v_txn.id, p_source, p_destination, p_amount, 0);

    RETURN ledger_idempotency_store(p_owner, p_key, 'transfer', p_hash,
        jsonb_build_object('outcome', 'ok', 'transaction',
                           ledger_txn_json(v_txn, p_owner, v_destination.owner_id)));
END
$$;
"""

HOLDS = r"""
CREATE FUNCTION ledger_create_hold(
    p_owner uuid, p_key text, p_hash text, p_wallet uuid, p_merchant_wallet uuid,
    p_amount bigint, p_currency text, p_expires_at timestamptz, p_memo text
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb;
    v_payer accounts%ROWTYPE;
    v_merchant accounts%ROWTYPE;
    v_hold holds%ROWTYPE;
BEGIN
    IF p_amount IS NULL OR p_amount <= 0 THEN
        RAISE EXCEPTION 'amount must be positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_currency IS NULL OR p_currency !~ '^[A-Z]{3}$' THEN
        RAISE EXCEPTION 'currency must be three capital letters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_expires_at IS NULL OR p_expires_at <= now() THEN
        RAISE EXCEPTION 'expires_at must be in the future'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_result := ledger_idempotency_begin(p_owner, p_key, 'create_hold', p_hash);
    IF v_result IS NOT NULL THEN
        RETURN v_result;
    END IF;

    -- Only the payer changes. The merchant is read, not locked: the foreign-key check
    -- of the new hold takes FOR KEY SHARE on it, which no ledger lock blocks.
    SELECT * INTO v_payer FROM accounts
     WHERE id = p_wallet AND kind = 'user_wallet' AND owner_id = p_owner
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN '{"outcome": "wallet_not_found"}';
    END IF;
    SELECT * INTO v_merchant FROM accounts
     WHERE id = p_merchant_wallet AND kind = 'user_wallet';
    IF NOT FOUND THEN
        RETURN '{"outcome": "destination_not_found"}';
    ELSIF v_merchant.owner_id = p_owner THEN
        RETURN '{"outcome": "self_transfer"}';
    ELSIF v_payer.currency <> p_currency OR v_merchant.currency <> p_currency THEN
        RETURN '{"outcome": "currency_mismatch"}';
    ELSIF v_payer.status = 'frozen' THEN
        RETURN '{"outcome": "source_frozen"}';
    ELSIF v_payer.status = 'closed' THEN
        RETURN '{"outcome": "source_closed"}';
    ELSIF v_merchant.status = 'closed' THEN
        RETURN '{"outcome": "destination_closed"}';
    ELSIF v_payer.balance - v_payer.held + v_payer.overdraft_limit < p_amount THEN
        RETURN '{"outcome": "insufficient_funds"}';
    END IF;

    UPDATE accounts SET held = held + p_amount, updated_at = now() WHERE id = p_wallet;
    INSERT INTO holds (account_id, merchant_account_id, currency, amount, expires_at, memo,
                       created_by)
    VALUES (p_wallet, p_merchant_wallet, v_payer.currency, p_amount, p_expires_at, p_memo,
            p_owner)
    RETURNING * INTO v_hold;

    RETURN ledger_idempotency_store(p_owner, p_key, 'create_hold', p_hash,
        jsonb_build_object('outcome', 'ok', 'hold', ledger_hold_json(v_hold)));
END
$$;

CREATE FUNCTION ledger_capture_hold(
    p_owner uuid, p_key text, p_hash text, p_hold uuid, p_amount bigint, p_now timestamptz
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb;
    v_hold holds%ROWTYPE;
    v_merchant_owner uuid;
    v_account accounts%ROWTYPE;
    v_payer accounts%ROWTYPE;
    v_merchant accounts%ROWTYPE;
    v_amount bigint;
    v_txn transactions%ROWTYPE;
BEGIN
    IF p_amount IS NOT NULL AND p_amount <= 0 THEN
        RAISE EXCEPTION 'amount must be positive (or null for all)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_now IS NULL THEN
        RAISE EXCEPTION 'now is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_result := ledger_idempotency_begin(p_owner, p_key, 'capture_hold', p_hash);
    IF v_result IS NOT NULL THEN
        RETURN v_result;
    END IF;

    SELECT * INTO v_hold FROM holds WHERE id = p_hold FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN '{"outcome": "hold_not_found"}';
    END IF;
    SELECT owner_id INTO v_merchant_owner FROM accounts WHERE id = v_hold.merchant_account_id;
    v_amount := coalesce(p_amount, v_hold.amount);
    IF v_merchant_owner IS DISTINCT FROM p_owner THEN
        RETURN '{"outcome": "not_owner"}';
    ELSIF v_hold.status <> 'active' THEN
        RETURN '{"outcome": "hold_not_active"}';
    ELSIF v_hold.expires_at <= p_now THEN
        RETURN '{"outcome": "hold_expired"}';
    ELSIF v_amount > v_hold.amount THEN
        RETURN '{"outcome": "amount_exceeds_hold"}';
    END IF;

    FOR v_account IN
        SELECT * FROM accounts
         WHERE id IN (v_hold.account_id, v_hold.merchant_account_id)
         ORDER BY id
           FOR NO KEY UPDATE
    LOOP
        IF v_account.id = v_hold.account_id THEN
            v_payer := v_account;
        ELSE
            v_merchant := v_account;
        END IF;
    END LOOP;

    IF v_payer.status = 'frozen' THEN
        RETURN '{"outcome": "source_frozen"}';
    ELSIF v_payer.status = 'closed' THEN
        RETURN '{"outcome": "source_closed"}';
    ELSIF v_merchant.status = 'closed' THEN
        RETURN '{"outcome": "destination_closed"}';
    ELSIF v_payer.balance - (v_payer.held - v_hold.amount) + v_payer.overdraft_limit
          < v_amount THEN
        -- Cannot happen while the hold is in `held`; kept as a refusal, not an error.
        RETURN '{"outcome": "insufficient_funds"}';
    END IF;

    INSERT INTO transactions (type, amount, currency, source_account_id,
                              destination_account_id, memo, initiated_by, hold_id)
    VALUES ('payment', v_amount, v_hold.currency, v_hold.account_id,
            v_hold.merchant_account_id, v_hold.memo, p_owner, v_hold.id)
    RETURNING * INTO v_txn;
    -- The whole hold is released; the captured part moves.
    PERFORM ledger_move(v_txn.id, v_hold.account_id, v_hold.merchant_account_id, v_amount,
                        v_hold.amount);
    UPDATE holds
       SET status = 'captured', captured_amount = v_amount, capture_transaction_id = v_txn.id,
           updated_at = now()
     WHERE id = v_hold.id
    RETURNING * INTO v_hold;

    RETURN ledger_idempotency_store(p_owner, p_key, 'capture_hold', p_hash,
        jsonb_build_object('outcome', 'ok', 'hold', ledger_hold_json(v_hold),
                           'transaction', ledger_txn_json(v_txn, v_payer.owner_id, p_owner)));
END
$$;

CREATE FUNCTION ledger_void_hold(
    p_owner uuid, p_key text, p_hash text, p_hold uuid
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb;
    v_hold holds%ROWTYPE;
    v_merchant_owner uuid;
BEGIN
    v_result := ledger_idempotency_begin(p_owner, p_key, 'void_hold', p_hash);
    IF v_result IS NOT NULL THEN
        RETURN v_result;
    END IF;

    SELECT * INTO v_hold FROM holds WHERE id = p_hold FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN '{"outcome": "hold_not_found"}';
    END IF;
    SELECT owner_id INTO v_merchant_owner FROM accounts WHERE id = v_hold.merchant_account_id;
    IF v_merchant_owner IS DISTINCT FROM p_owner THEN
        RETURN '{"outcome": "not_owner"}';
    ELSIF v_hold.status <> 'active' THEN
        RETURN '{"outcome": "hold_not_active"}';
    END IF;

    -- The UPDATE locks the payer: the only account that changes.
    UPDATE accounts SET held = held - v_hold.amount, updated_at = now()
     WHERE id = v_hold.account_id;
    UPDATE holds SET status = 'voided', updated_at = now()
     WHERE id = v_hold.id
    RETURNING * INTO v_hold;

    RETURN ledger_idempotency_store(p_owner, p_key, 'void_hold', p_hash,
        jsonb_build_object('outcome', 'ok', 'hold', ledger_hold_json(v_hold)));
END
$$;

-- Releases up to p_limit holds that expired at p_now. Holds another call has locked
-- (a capture, a void, another instance running this) are skipped, not waited for.
CREATE FUNCTION ledger_expire_holds(p_now timestamptz, p_limit int)
RETURNS TABLE (hold_id uuid, account_id uuid, owner_id uuid) LANGUAGE plpgsql AS $$
-- One row per released hold, with its payer: the caller drops cached balances.
DECLARE
    v_ids uuid[];
BEGIN
    IF p_now IS NULL OR p_limit IS NULL OR p_limit <= 0 THEN
        RAISE EXCEPTION 'now and a positive limit are required'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT array_agg(id) INTO v_ids
      FROM (SELECT id FROM holds
             WHERE status = 'active' AND expires_at <= p_now
             ORDER BY expires_at
             LIMIT p_limit
               FOR NO KEY UPDATE SKIP LOCKED) AS due;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;
    -- Then the payers, in ascending id order.
    PERFORM 1 FROM accounts
      WHERE id IN (SELECT h.account_id FROM holds h WHERE h.id = ANY (v_ids))
      ORDER BY id
        FOR NO KEY UPDATE;
    UPDATE accounts AS a
       SET held = a.held - released.amount, updated_at = now()
      FROM (SELECT h.account_id, sum(h.amount) AS amount FROM holds h
             WHERE h.id = ANY (v_ids) GROUP BY h.account_id) AS released
     WHERE a.id = released.account_id;
    RETURN QUERY
      UPDATE holds AS h SET status = 'expired', updated_at = now()
        FROM accounts AS a
       WHERE h.id = ANY (v_ids) AND a.id = h.account_id
      RETURNING h.id, h.account_id, a.owner_id;
END
$$;
"""

REFUND = r"""
CREATE FUNCTION ledger_refund(
    p_owner uuid, p_key text, p_hash text, p_transaction uuid, p_amount bigint,
    p_reason text, p_is_admin boolean
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb;
    v_original transactions%ROWTYPE;
    v_refunder_owner uuid;
    v_amount bigint;
    v_account accounts%ROWTYPE;
    v_refunder accounts%ROWTYPE;
    v_payer accounts%ROWTYPE;
    v_txn transactions%ROWTYPE;
BEGIN
    IF p_amount IS NOT NULL AND p_amount <= 0 THEN
        RAISE EXCEPTION 'amount must be positive (or null for all that is left)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_result := ledger_idempotency_begin(p_owner, p_key, 'refund', p_hash);
    IF v_result IS NOT NULL THEN
        RETURN v_result;
    END IF;

    -- The original first: concurrent refunds of it queue here.
    SELECT * INTO v_original FROM transactions WHERE id = p_transaction FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN '{"outcome": "transaction_not_found"}';
    END IF;
    SELECT owner_id INTO v_refunder_owner
      FROM accounts WHERE id = v_original.destination_account_id;
    v_amount := coalesce(p_amount, v_original.amount - v_original.refunded_amount);
    IF NOT coalesce(p_is_admin, false) AND v_refunder_owner IS DISTINCT FROM p_owner THEN
        RETURN '{"outcome": "not_owner"}';
    ELSIF v_original.type NOT IN ('transfer', 'payment') OR v_original.status = 'refunded' THEN
        RETURN '{"outcome": "not_refundable"}';
    ELSIF v_amount > v_original.amount - v_original.refunded_amount THEN
        RETURN '{"outcome": "amount_exceeds_refundable"}';
    END IF;

    FOR v_account IN
        SELECT * FROM accounts
         WHERE id IN (v_original.source_account_id, v_original.destination_account_id)
         ORDER BY id
           FOR NO KEY UPDATE
    LOOP
        IF v_account.id = v_original.destination_account_id THEN
            v_refunder := v_account;
        ELSE
            v_payer := v_account;
        END IF;
    END LOOP;

    IF v_refunder.status = 'frozen' THEN
        RETURN '{"outcome": "source_frozen"}';
    ELSIF v_refunder.status = 'closed' THEN
        RETURN '{"outcome": "source_closed"}';
    ELSIF v_payer.status = 'closed' THEN
        RETURN '{"outcome": "destination_closed"}';
    ELSIF v_refunder.balance - v_refunder.held + v_refunder.overdraft_limit < v_amount THEN
        RETURN '{"outcome": "insufficient_funds"}';
    END IF;

    INSERT INTO transactions (type, amount, currency, source_account_id,
                              destination_account_id, memo, initiated_by, refund_of)
    VALUES ('refund', v_amount, v_original.currency, v_refunder.id, v_payer.id, p_reason,
            p_owner, v_original.id)
    RETURNING * INTO v_txn;
    PERFORM ledger_move(v_txn.id, v_refunder.id, v_payer.id, v_amount, 0);
    UPDATE transactions
       SET refunded_amount = refunded_amount + v_amount,
           status = CASE WHEN refunded_amount + v_amount = amount THEN 'refunded'
                         ELSE 'partially_refunded' END
     WHERE id = v_original.id;

    RETURN ledger_idempotency_store(p_owner, p_key, 'refund', p_hash,
        jsonb_build_object('outcome', 'ok', 'transaction',
                           ledger_txn_json(v_txn, v_refunder.owner_id, v_payer.owner_id)));
END
$$;
"""

OPERATOR = r"""
-- An operator's credit (p_amount > 0) or debit (< 0) of a wallet, against the settlement
-- account of its currency. Debits are allowed on frozen wallets.
CREATE FUNCTION ledger_adjust(
    p_actor uuid, p_key text, p_hash text, p_wallet uuid, p_amount bigint,
    p_currency text, p_reason text
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb;
    v_wallet accounts%ROWTYPE;
    v_settlement_id uuid;
    v_amount bigint;
    v_from uuid;
    v_to uuid;
    v_txn transactions%ROWTYPE;
BEGIN
    IF p_amount IS NULL OR p_amount = 0 THEN
        RAISE EXCEPTION 'amount must not be zero' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_currency IS NULL OR p_currency !~ '^[A-Z]{3}$' THEN
        RAISE EXCEPTION 'currency must be three capital letters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_result := ledger_idempotency_begin(p_actor, p_key, 'adjust', p_hash);
    IF v_result IS NOT NULL THEN
        RETURN v_result;
    END IF;
    v_amount := abs(p_amount);

    -- Refuse what can be refused before creating the settlement account, so a refusal
    -- writes nothing; the checks are repeated once the rows are locked.
    SELECT * INTO v_wallet FROM accounts WHERE id = p_wallet AND kind = 'user_wallet';
    IF NOT FOUND THEN
        RETURN '{"outcome": "wallet_not_found"}';
    ELSIF v_wallet.currency <> p_currency THEN
        RETURN '{"outcome": "currency_mismatch"}';
    ELSIF v_wallet.status = 'closed' THEN
        RETURN '{"outcome": "wallet_closed"}';
    ELSIF p_amount < 0
          AND v_wallet.balance - v_wallet.held + v_wallet.overdraft_limit < v_amount THEN
        RETURN '{"outcome": "insufficient_funds"}';
    END IF;

    -- The settlement account of the currency, created on first use. ON CONFLICT waits for
    -- a concurrent creator and then does nothing; the SELECT after it sees its row.
    SELECT id INTO v_settlement_id FROM accounts
     WHERE kind = 'settlement' AND owner_id IS NULL AND currency = v_wallet.currency;
    IF NOT FOUND THEN
        INSERT INTO accounts (kind, currency) VALUES ('settlement', v_wallet.currency)
        ON CONFLICT DO NOTHING;
        SELECT id INTO STRICT v_settlement_id FROM accounts
         WHERE kind = 'settlement' AND owner_id IS NULL AND currency = v_wallet.currency;
    END IF;

    PERFORM 1 FROM accounts WHERE id IN (p_wallet, v_settlement_id) ORDER BY id
        FOR NO KEY UPDATE;
    SELECT * INTO v_wallet FROM accounts WHERE id = p_wallet;
    IF v_wallet.status = 'closed' THEN
        RETURN '{"outcome": "wallet_closed"}';
    ELSIF p_amount < 0
          AND v_wallet.balance - v_wallet.held + v_wallet.overdraft_limit < v_amount THEN
        RETURN '{"outcome": "insufficient_funds"}';
    END IF;

    IF p_amount > 0 THEN
        v_from := v_settlement_id;
        v_to := p_wallet;
    ELSE
        v_from := p_wallet;
        v_to := v_settlement_id;
    END IF;
    INSERT INTO transactions (type, amount, currency, source_account_id,
                              destination_account_id, memo, initiated_by)
    VALUES ('adjustment', v_amount, v_wallet.currency, v_from, v_to, p_reason, p_actor)
    RETURNING * INTO v_txn;
    PERFORM ledger_move(v_txn.id, v_from, v_to, v_amount, 0);
    v_wallet.balance := v_wallet.balance + p_amount;

    RETURN ledger_idempotency_store(p_actor, p_key, 'adjust', p_hash,
        jsonb_build_object(
            'outcome', 'ok',
            'transaction', ledger_txn_json(
                v_txn,
                CASE WHEN p_amount < 0 THEN v_wallet.owner_id END,
                CASE WHEN p_amount > 0 THEN v_wallet.owner_id END),
            'wallet', ledger_wallet_json(v_wallet)));
END
$$;

-- An operator freezes ('frozen') or unfreezes ('active') a wallet; recorded as a
-- transaction of type freeze or unfreeze, of amount 0, without postings.
CREATE FUNCTION ledger_set_wallet_status(
    p_actor uuid, p_key text, p_hash text, p_wallet uuid, p_status text, p_reason text
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_operation text;
    v_result jsonb;
    v_wallet accounts%ROWTYPE;
    v_txn transactions%ROWTYPE;
BEGIN
    IF p_status IS NULL OR p_status NOT IN ('frozen', 'active') THEN
        RAISE EXCEPTION 'status must be frozen or active'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_operation := CASE p_status WHEN 'frozen' THEN 'freeze_wallet' ELSE 'unfreeze_wallet' END;
    v_result := ledger_idempotency_begin(p_actor, p_key, v_operation, p_hash);
    IF v_result IS NOT NULL THEN
        RETURN v_result;
    END IF;

    SELECT * INTO v_wallet FROM accounts
     WHERE id = p_wallet AND kind = 'user_wallet'
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN '{"outcome": "wallet_not_found"}';
    ELSIF v_wallet.status = 'closed' THEN
        RETURN '{"outcome": "wallet_closed"}';
    ELSIF v_wallet.status = p_status THEN
        RETURN '{"outcome": "status_unchanged"}';
    END IF;

    UPDATE accounts SET status = p_status, updated_at = now()
     WHERE id = p_wallet
    RETURNING * INTO v_wallet;
    INSERT INTO transactions (type, amount, currency, destination_account_id, memo,
                              initiated_by)
    VALUES (CASE p_status WHEN 'frozen' THEN 'freeze' ELSE 'unfreeze' END, 0,
            v_wallet.currency, p_wallet, p_reason, p_actor)
    RETURNING * INTO v_txn;

    RETURN ledger_idempotency_store(p_actor, p_key, v_operation, p_hash,
        jsonb_build_object('outcome', 'ok',
                           'transaction', ledger_txn_json(v_txn, NULL, v_wallet.owner_id),
                           'wallet', ledger_wallet_json(v_wallet)));
END
$$;

CREATE FUNCTION ledger_close_wallet(
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
-- Recomputes every invariant from the postings (one consistent snapshot: one statement)
-- and returns one row per violation: what the postings say (expected) and what is stored
-- (actual). No rows: the ledger is sound.
CREATE FUNCTION ledger_audit()
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
    SELECT account_id, sum(amount) AS total FROM holds
     WHERE status = 'active' GROUP BY account_id
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
 WHERE t.type NOT IN ('freeze', 'unfreeze')
   AND NOT EXISTS (SELECT FROM postings AS p WHERE p.transaction_id = t.id)
UNION ALL
SELECT 'status_change_without_postings', t.id::text, 'none', count(*)::text || ' postings'
  FROM transactions AS t JOIN postings AS p ON p.transaction_id = t.id
 WHERE t.type IN ('freeze', 'unfreeze')
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

UPGRADE = (TABLES, GUARDS, HELPERS, CREATE_WALLET, TRANSFER, HOLDS, REFUND, OPERATOR, AUDIT)

DROP = """
DROP FUNCTION ledger_audit();
DROP FUNCTION ledger_close_wallet(uuid, text, text, uuid);
DROP FUNCTION ledger_set_wallet_status(uuid, text, text, uuid, text, text);
DROP FUNCTION ledger_adjust(uuid, text, text, uuid, bigint, text, text);
DROP FUNCTION ledger_refund(uuid, text, text, uuid, bigint, text, boolean);
DROP FUNCTION ledger_expire_holds(timestamptz, int);
DROP FUNCTION ledger_void_hold(uuid, text, text, uuid);
DROP FUNCTION ledger_capture_hold(uuid, text, text, uuid, bigint, timestamptz);
DROP FUNCTION ledger_create_hold(uuid, text, text, uuid, uuid, bigint, text, timestamptz, text);
DROP FUNCTION ledger_transfer(uuid, text, text, uuid, uuid, bigint, text, text, jsonb);
DROP FUNCTION ledger_create_wallet(uuid, text, text, text);
DROP FUNCTION ledger_hold_json(holds);
DROP FUNCTION ledger_txn_json(transactions, uuid, uuid);
DROP FUNCTION ledger_wallet_json(accounts);
DROP FUNCTION ledger_move(uuid, uuid, uuid, bigint, bigint);
DROP FUNCTION ledger_idempotency_store(uuid, text, text, text, jsonb);
DROP FUNCTION ledger_idempotency_begin(uuid, text, text, text);
DROP TABLE idempotency_keys, postings, transactions, holds, accounts;
DROP FUNCTION holds_guard_update();
DROP FUNCTION transactions_guard_update();
DROP FUNCTION postings_check_balanced();
DROP FUNCTION ledger_refuse_change();
DROP SEQUENCE receipt_number_seq;
"""


def upgrade() -> None:
    for script in UPGRADE:
        execute_sql_script(script)


def downgrade() -> None:
    execute_sql_script(DROP)
