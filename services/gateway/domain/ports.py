"""What the gateway's use cases need from outside: its payments table and a way
to tell the ledger that a payment changed."""

from __future__ import annotations

from typing import Protocol

from services.gateway.domain.model import NewPayment, Payment
from services.gateway.domain.providers import PaymentKind, ProviderPayment


class PaymentStore(Protocol):
    async def create(self, payment: NewPayment) -> tuple[Payment, bool]:
        """Inserts the payment, or returns the one already stored under its id;
        True when this call created it."""
        ...

    async def create_refund(self, refund: NewPayment) -> tuple[Payment | None, str]:
        """Inserts a refund of a succeeded charge if what is left to refund allows it
        (checked under a lock on the charge). Returns (refund, "ok" | "exists" |
        "charge_not_found" | "charge_not_refundable" | "amount_exceeds_refundable")."""
        ...

    async def get(self, payment_id: str) -> Payment | None: ...

    async def start_attempt(self, payment_id: str) -> Payment:
        """Counts one more drive of a pending payment to its provider (and returns it)."""
        ...

    async def fail_unsent(self, payment_id: str, code: str, message: str) -> Payment:
        """Fails a pending payment no provider call was ever started for (attempts 0,
        checked in the same statement); otherwise leaves it. Returns it either way."""
        ...

    async def switch_provider(self, payment_id: str, provider: str) -> Payment:
        """Moves a payment no provider was ever called for to another provider."""
        ...

    async def record(self, payment_id: str, answer: ProviderPayment) -> tuple[Payment, bool]:
        """Applies a provider's answer to a payment that is still pending (a final
        payment never changes). True when the status changed."""
        ...

    async def apply_event(
        self,
        provider: str,
        event_id: str,
        kind: PaymentKind,
        payment_id: str,
        answer: ProviderPayment,
    ) -> tuple[Payment | None, bool]:
        """In one transaction: remembers the event (a repeated delivery changes
        nothing) and applies it to its payment like `record`. Returns the payment
        (None if unknown) and whether its status changed."""
        ...


class LedgerNotifier(Protocol):
    async def payment_updated(self, payment_id: str) -> None:
        """Best effort: the ledger's reconciler finds the payment anyway."""
        ...
