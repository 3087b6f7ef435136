-- The ledger's tables: accounts, holds, transactions, postings, idempotency keys.
-- CHECK constraints make bad states unstorable; every constraint is named here, so that a
-- later revision can drop or change it by a name of ours.

-- Receipt numbers: R- and 11 digits. The sequence stops (errors) rather than wrap or
-- outgrow the format; CACHE 1 (the default) keeps numbers monotonic across sessions.
CREATE SEQUENCE receipt_number_seq AS bigint MINVALUE 1 MAXVALUE 99999999999 NO CYCLE;

CREATE TABLE accounts (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    kind text NOT NULL,
    owner_id uuid,
    currency char(3) NOT NULL,
    status text NOT NULL DEFAULT 'active',
    balance bigint NOT NULL DEFAULT 0,
    held bigint NOT NULL DEFAULT 0,
    overdraft_limit bigint NOT NULL DEFAULT 0,
    -- The number of postings of the account; postings carry it as account_version.
    version bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT accounts_pkey PRIMARY KEY (id),
    CONSTRAINT accounts_kind_check CHECK (kind IN ('user_wallet', 'settlement')),
    CONSTRAINT accounts_currency_check CHECK (currency ~ '^[A-Z]{3}$'),
    CONSTRAINT accounts_status_check CHECK (status IN ('active', 'frozen', 'closed')),
    CONSTRAINT accounts_held_check CHECK (held >= 0),
    CONSTRAINT accounts_overdraft_limit_check CHECK (overdraft_limit >= 0),
    CONSTRAINT accounts_version_check CHECK (version >= 0),
    CONSTRAINT accounts_owner_iff_wallet CHECK (
        (kind = 'user_wallet') = (owner_id IS NOT NULL)
    ),
    -- Settlement accounts go negative by design: their balance is money that came in from
    -- outside. Wallets never go below their overdraft limit.
    CONSTRAINT accounts_available_check CHECK (
        kind = 'settlement' OR balance - held + overdraft_limit >= 0
    ),
    CONSTRAINT accounts_closed_empty_check CHECK (
        status <> 'closed' OR (balance = 0 AND held = 0)
    ),
    CONSTRAINT accounts_settlement_active_check CHECK (
        kind = 'user_wallet' OR status = 'active'
    ),
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
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    account_id uuid NOT NULL,
    merchant_account_id uuid NOT NULL,
    currency char(3) NOT NULL,
    amount bigint NOT NULL,
    captured_amount bigint NOT NULL DEFAULT 0,
    status text NOT NULL DEFAULT 'active',
    expires_at timestamptz NOT NULL,
    memo text,
    created_by uuid NOT NULL,
    capture_transaction_id uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT holds_pkey PRIMARY KEY (id),
    CONSTRAINT holds_currency_check CHECK (currency ~ '^[A-Z]{3}$'),
    CONSTRAINT holds_amount_check CHECK (amount > 0),
    CONSTRAINT holds_captured_amount_check CHECK (captured_amount BETWEEN 0 AND amount),
    CONSTRAINT holds_status_check CHECK (
        status IN ('active', 'captured', 'voided', 'expired')
    ),
    CONSTRAINT holds_memo_check CHECK (char_length(memo) <= 500),
    CONSTRAINT holds_account_id_currency_fkey FOREIGN KEY (account_id, currency)
    REFERENCES accounts (id, currency),
    CONSTRAINT holds_merchant_account_id_currency_fkey FOREIGN KEY (
        merchant_account_id, currency
    ) REFERENCES accounts (id, currency),
    CONSTRAINT holds_distinct_accounts_check CHECK (account_id <> merchant_account_id),
    CONSTRAINT holds_expiry_check CHECK (expires_at > created_at),
    CONSTRAINT holds_capture_check CHECK (
        CASE
            WHEN status = 'captured'
                THEN capture_transaction_id IS NOT NULL AND captured_amount > 0
            ELSE capture_transaction_id IS NULL AND captured_amount = 0
        END
    )
);
-- ledger_expire_holds walks this index.
CREATE INDEX holds_active_expires_at_idx ON holds (expires_at) WHERE status = 'active';
CREATE INDEX holds_account_idx ON holds (account_id, created_at DESC);
CREATE INDEX holds_merchant_account_idx ON holds (merchant_account_id, created_at DESC);

-- Money in and out of the ledger (top_up, withdrawal) waits for its provider as pending,
-- then becomes posted or failed; every other transaction is posted at once.
CREATE TABLE transactions (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    type text NOT NULL,
    status text NOT NULL DEFAULT 'posted',
    amount bigint NOT NULL,
    currency char(3) NOT NULL,
    source_account_id uuid,
    destination_account_id uuid,
    fee bigint NOT NULL DEFAULT 0,
    memo text,
    metadata jsonb NOT NULL DEFAULT '{}',
    initiated_by uuid NOT NULL,
    receipt_number text NOT NULL
    DEFAULT 'R-' || lpad(nextval('receipt_number_seq')::text, 11, '0'),
    refunded_amount bigint NOT NULL DEFAULT 0,
    refund_of uuid,
    hold_id uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    payment_provider text,
    failure_code text,
    failure_message text,
    settled_at timestamptz,
    CONSTRAINT transactions_pkey PRIMARY KEY (id),
    CONSTRAINT transactions_receipt_number_key UNIQUE (receipt_number),
    CONSTRAINT transactions_type_check CHECK (
        type IN (
            'transfer', 'payment', 'refund', 'adjustment', 'freeze', 'unfreeze',
            'top_up', 'withdrawal'
        )
    ),
    CONSTRAINT transactions_status_check CHECK (
        status IN ('posted', 'partially_refunded', 'refunded', 'pending', 'failed')
    ),
    CONSTRAINT transactions_currency_check CHECK (currency ~ '^[A-Z]{3}$'),
    CONSTRAINT transactions_fee_check CHECK (fee >= 0),
    CONSTRAINT transactions_memo_check CHECK (char_length(memo) <= 500),
    CONSTRAINT transactions_metadata_check CHECK (jsonb_typeof(metadata) = 'object'),
    CONSTRAINT transactions_failure_code_check CHECK (char_length(failure_code) <= 100),
    CONSTRAINT transactions_failure_message_check CHECK (
        char_length(failure_message) <= 500
    ),
    CONSTRAINT transactions_refund_of_fkey FOREIGN KEY (refund_of)
    REFERENCES transactions (id),
    CONSTRAINT transactions_hold_id_fkey FOREIGN KEY (hold_id) REFERENCES holds (id),
    -- The accounts of a transaction exist and are in its currency (no NULL: no check).
    CONSTRAINT transactions_source_account_id_currency_fkey FOREIGN KEY (
        source_account_id, currency
    ) REFERENCES accounts (id, currency),
    CONSTRAINT transactions_destination_account_id_currency_fkey FOREIGN KEY (
        destination_account_id, currency
    ) REFERENCES accounts (id, currency),
    CONSTRAINT transactions_amount_positive_check CHECK (
        amount > 0 OR type IN ('freeze', 'unfreeze')
    ),
    -- Freezing and unfreezing move no money.
    CONSTRAINT transactions_status_change_amount_check CHECK (
        amount = 0 OR type NOT IN ('freeze', 'unfreeze')
    ),
    CONSTRAINT transactions_refunded_amount_check CHECK (
        refunded_amount BETWEEN 0 AND amount
    ),
    CONSTRAINT transactions_distinct_accounts_check CHECK (
        source_account_id <> destination_account_id
    ),
    CONSTRAINT transactions_refund_of_check CHECK ((type = 'refund') = (refund_of IS NOT NULL)),
    CONSTRAINT transactions_hold_check CHECK (hold_id IS NULL OR type = 'payment'),
    CONSTRAINT transactions_refundable_type_check CHECK (
        refunded_amount = 0 OR type IN ('transfer', 'payment')
    ),
    -- Only top-ups and withdrawals wait for a provider; refunds move a posted one.
    CONSTRAINT transactions_status_refunds_check CHECK (
        CASE
            WHEN status IN ('pending', 'failed')
                THEN type IN ('top_up', 'withdrawal') AND refunded_amount = 0
            ELSE status = CASE
                WHEN refunded_amount = 0 THEN 'posted'
                WHEN refunded_amount < amount THEN 'partially_refunded'
                ELSE 'refunded'
            END
        END
    ),
    CONSTRAINT transactions_provider_check CHECK (
        (type IN ('top_up', 'withdrawal')) = (payment_provider IS NOT NULL)
    ),
    CONSTRAINT transactions_failure_check CHECK (
        (status = 'failed') = (failure_code IS NOT NULL)
    )
);
-- A wallet's history, newest first, with keyset pagination on (created_at, id).
CREATE INDEX transactions_source_history_idx
ON transactions (source_account_id, created_at DESC, id DESC);
CREATE INDEX transactions_destination_history_idx
ON transactions (destination_account_id, created_at DESC, id DESC);
CREATE INDEX transactions_refund_of_idx ON transactions (refund_of);

ALTER TABLE holds
ADD CONSTRAINT holds_capture_transaction_id_fkey FOREIGN KEY (capture_transaction_id)
REFERENCES transactions (id);

CREATE TABLE postings (
    id bigserial NOT NULL,
    transaction_id uuid NOT NULL,
    account_id uuid NOT NULL,
    currency char(3) NOT NULL,
    amount bigint NOT NULL,
    balance_after bigint NOT NULL,
    account_version bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT postings_pkey PRIMARY KEY (id),
    CONSTRAINT postings_currency_check CHECK (currency ~ '^[A-Z]{3}$'),
    CONSTRAINT postings_amount_check CHECK (amount <> 0),
    CONSTRAINT postings_account_version_check CHECK (account_version > 0),
    CONSTRAINT postings_transaction_id_fkey FOREIGN KEY (transaction_id)
    REFERENCES transactions (id),
    -- A posting can only be in its account's currency.
    CONSTRAINT postings_account_id_currency_fkey FOREIGN KEY (account_id, currency)
    REFERENCES accounts (id, currency),
    -- Two postings can never claim the same place in an account's history.
    CONSTRAINT postings_account_id_account_version_key UNIQUE (account_id, account_version)
);
CREATE INDEX postings_transaction_idx ON postings (transaction_id);

CREATE TABLE idempotency_keys (
    owner_id uuid NOT NULL,
    idempotency_key text NOT NULL,
    operation text NOT NULL,
    request_hash text NOT NULL,
    result jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (owner_id, idempotency_key),
    CONSTRAINT idempotency_keys_idempotency_key_check CHECK (
        char_length(idempotency_key) BETWEEN 1 AND 255
    )
);
