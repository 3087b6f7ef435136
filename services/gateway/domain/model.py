"""A payment as the gateway keeps it: plain data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.gateway.domain.providers import PaymentKind, PaymentStatus


@dataclass(frozen=True)
class NewPayment:
    """What a caller asks for; `id` is theirs and is the idempotency key everywhere."""

    id: str
    kind: PaymentKind
    provider: str
    amount: int
    currency: str
    # The payment-method token (charge), destination token (payout), or "" (refund).
    instrument: str
    description: str = ""
    charge_payment_id: str | None = None  # refunds: the charge refunded


@dataclass(frozen=True)
class Payment:
    id: str
    kind: PaymentKind
    provider: str
    status: PaymentStatus
    amount: int
    currency: str
    instrument: str
    description: str
    reference: str  # the provider's id, "" until known
    failure_code: str
    failure_message: str
    charge_payment_id: str | None
    attempts: int  # times it was driven to its provider (each may be several tries)
    created_at: datetime
    updated_at: datetime

    @property
    def final(self) -> bool:
        return self.status is not PaymentStatus.PENDING

    def same_request(self, other: NewPayment) -> bool:
        """Whether a repeated id carries the same request (the idempotency rule)."""
        return (
            self.kind == other.kind
            and self.amount == other.amount
            and self.currency == other.currency
            and self.instrument == other.instrument
            and self.charge_payment_id == other.charge_payment_id
        )
