-- Per pending top-up or withdrawal, what the gateway needs to drive the payment again
-- (provider and payment-method / destination token) and when the reconciler should next
-- look at it. (The transactions table has carried their type, status and provider columns
-- since 0001.)
CREATE TABLE external_payments (
    transaction_id uuid NOT NULL,
    provider text NOT NULL,
    -- The payment-method token (top-up) or destination token (withdrawal): a provider's
    -- reference, never card data.
    instrument text NOT NULL,
    pending boolean NOT NULL DEFAULT true,
    checks integer NOT NULL DEFAULT 0,
    next_check_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT external_payments_pkey PRIMARY KEY (transaction_id),
    CONSTRAINT external_payments_transaction_id_fkey FOREIGN KEY (transaction_id)
    REFERENCES transactions (id),
    CONSTRAINT external_payments_provider_check CHECK (provider ~ '^[a-z][a-z0-9_]{0,31}$'),
    CONSTRAINT external_payments_instrument_check CHECK (
        char_length(instrument) BETWEEN 1 AND 255
    ),
    CONSTRAINT external_payments_checks_check CHECK (checks >= 0)
);
-- The reconciler's queue.
CREATE INDEX external_payments_due_idx ON external_payments (next_check_at) WHERE pending;

CREATE OR REPLACE TRIGGER external_payments_permanent
BEFORE DELETE OR TRUNCATE ON external_payments
FOR EACH STATEMENT
EXECUTE FUNCTION ledger_refuse_change('external payments are permanent');
