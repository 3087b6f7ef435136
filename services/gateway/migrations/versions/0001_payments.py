"""The gateway's payments, the webhook events it has applied, and the sandbox
provider's own records.

A payment is written (pending) before any provider is called and changes once,
to succeeded or failed (a trigger refuses anything else). Webhook events are
remembered by (provider, event id), so a repeated delivery changes nothing.
`sandbox_payments` is the built-in sandbox provider's side of the story — what
a real provider would keep on its servers — so that every gateway instance sees
the same sandbox.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from services.runtime.migrations import execute_sql_script

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE payments (
    id                uuid PRIMARY KEY,
    kind              text NOT NULL CHECK (kind IN ('charge', 'payout', 'refund')),
    provider          text NOT NULL CHECK (provider ~ '^[a-z][a-z0-9_]{0,31}$'),
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'succeeded', 'failed')),
    amount            bigint NOT NULL CHECK (amount > 0),
    currency          char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    instrument        text NOT NULL CHECK (char_length(instrument) <= 255),
    description       text NOT NULL DEFAULT '' CHECK (char_length(description) <= 500),
    reference         text NOT NULL DEFAULT '',
    failure_code      text NOT NULL DEFAULT '',
    failure_message   text NOT NULL DEFAULT '',
    charge_payment_id uuid REFERENCES payments (id),
    attempts          integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'refund') = (charge_payment_id IS NOT NULL)),
    CHECK ((status = 'failed') = (failure_code <> ''))
);
CREATE INDEX payments_charge_idx ON payments (charge_payment_id)
    WHERE charge_payment_id IS NOT NULL;
CREATE INDEX payments_pending_idx ON payments (created_at) WHERE status = 'pending';

CREATE FUNCTION payments_guard_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status <> 'pending' AND NEW.status IS DISTINCT FROM OLD.status THEN
        RAISE EXCEPTION 'payment % is % and can no longer change', OLD.id, OLD.status
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF (NEW.id, NEW.kind, NEW.amount, NEW.currency, NEW.instrument, NEW.charge_payment_id)
       IS DISTINCT FROM
       (OLD.id, OLD.kind, OLD.amount, OLD.currency, OLD.instrument, OLD.charge_payment_id) THEN
        RAISE EXCEPTION 'payment %: the request itself cannot change', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER payments_guard_update BEFORE UPDATE ON payments
    FOR EACH ROW EXECUTE FUNCTION payments_guard_update();

CREATE TABLE webhook_events (
    provider    text NOT NULL,
    event_id    text NOT NULL CHECK (char_length(event_id) BETWEEN 1 AND 255),
    payment_id  uuid,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, event_id)
);

CREATE TABLE sandbox_payments (
    idempotency_key text PRIMARY KEY,
    reference       text NOT NULL UNIQUE,
    kind            text NOT NULL,
    amount          bigint NOT NULL,
    currency        char(3) NOT NULL,
    instrument      text NOT NULL,
    status          text NOT NULL,
    failure_code    text NOT NULL DEFAULT '',
    failure_message text NOT NULL DEFAULT '',
    calls           integer NOT NULL DEFAULT 1,
    settle_at       timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
"""

DOWNGRADE = r"""
DROP TABLE sandbox_payments, webhook_events, payments;
DROP FUNCTION payments_guard_update();
"""


def upgrade() -> None:
    execute_sql_script(UPGRADE)


def downgrade() -> None:
    execute_sql_script(DOWNGRADE)
