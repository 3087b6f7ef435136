"""In-memory stand-ins for the payment gateway's ports (domain tests only).

`FakePaymentStore` keeps the semantics of the SQL store
(services/gateway/adapters/payment_store.py); `ScriptedProvider` answers each
provider call from a script and remembers what it was asked.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from services.gateway.domain.model import NewPayment, Payment
from services.gateway.domain.providers import (
    ChargeRequest,
    PaymentKind,
    PaymentStatus,
    PayoutRequest,
    ProviderPayment,
    RefundRequest,
    WebhookEvent,
)

START = datetime(2026, 1, 1, tzinfo=UTC)


class FakePaymentStore:
    """The PaymentStore protocol over a dict, with the SQL store's rules."""

    def __init__(self) -> None:
        self.payments: dict[str, Payment] = {}
        self.events: set[tuple[str, str]] = set()  # (provider, event_id) already seen
        self._ticks = 0

    def _now(self) -> datetime:
        self._ticks += 1
        return START + timedelta(seconds=self._ticks)

    def _insert(self, new: NewPayment) -> Payment:
        now = self._now()
        payment = Payment(
            id=new.id,
            kind=new.kind,
            provider=new.provider,
            status=PaymentStatus.PENDING,
            amount=new.amount,
            currency=new.currency,
            instrument=new.instrument,
            description=new.description,
            reference="",
            failure_code="",
            failure_message="",
            charge_payment_id=new.charge_payment_id,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        self.payments[payment.id] = payment
        return payment

    async def create(self, payment: NewPayment) -> tuple[Payment, bool]:
        existing = self.payments.get(payment.id)
        if existing is not None:
            return existing, False
        return self._insert(payment), True

    async def create_refund(self, refund: NewPayment) -> tuple[Payment | None, str]:
        existing = self.payments.get(refund.id)
        if existing is not None:
            return existing, "exists"
        charge = self.payments.get(refund.charge_payment_id or "")
        if charge is None or charge.kind is not PaymentKind.CHARGE:
            return None, "charge_not_found"
        if charge.status is not PaymentStatus.SUCCEEDED:
            return None, "charge_not_refundable"
        refunded = sum(
            p.amount
            for p in self.payments.values()
            if p.charge_payment_id == charge.id and p.status is not PaymentStatus.FAILED
        )
        if refund.amount > charge.amount - refunded:
            return None, "amount_exceeds_refundable"
        return self._insert(refund), "ok"

    async def get(self, payment_id: str) -> Payment | None:
        return self.payments.get(payment_id)

    async def start_attempt(self, payment_id: str) -> Payment:
        payment = self.payments[payment_id]
        if payment.status is PaymentStatus.PENDING:
            payment = replace(payment, attempts=payment.attempts + 1, updated_at=self._now())
            self.payments[payment_id] = payment
        return payment

    async def fail_unsent(self, payment_id: str, code: str, message: str) -> Payment:
        payment = self.payments[payment_id]
        if payment.status is PaymentStatus.PENDING and payment.attempts == 0:
            payment = replace(
                payment,
                status=PaymentStatus.FAILED,
                failure_code=code,
                failure_message=message,
                updated_at=self._now(),
            )
            self.payments[payment_id] = payment
        return payment

    async def switch_provider(self, payment_id: str, provider: str) -> Payment:
        payment = self.payments[payment_id]
        if payment.status is PaymentStatus.PENDING and payment.attempts == 0:
            payment = replace(payment, provider=provider, updated_at=self._now())
            self.payments[payment_id] = payment
        return payment

    async def record(self, payment_id: str, answer: ProviderPayment) -> tuple[Payment, bool]:
        payment = self.payments[payment_id]
        if payment.status is not PaymentStatus.PENDING:
            return payment, False  # a final payment never changes
        failed = answer.status is PaymentStatus.FAILED
        payment = replace(
            payment,
            status=answer.status,
            reference=answer.reference[:255] or payment.reference,
            failure_code=(answer.failure_code or "failed")[:100] if failed else "",
            failure_message=answer.failure_message[:500] if failed else "",
            updated_at=self._now(),
        )
        self.payments[payment_id] = payment
        return payment, payment.status is not PaymentStatus.PENDING

    async def apply_event(
        self,
        provider: str,
        event_id: str,
        kind: PaymentKind,
        payment_id: str,
        answer: ProviderPayment,
    ) -> tuple[Payment | None, bool]:
        payment = self.payments.get(payment_id)
        if payment is not None and (payment.kind is not kind or payment.provider != provider):
            payment = None
        seen = (provider, event_id) in self.events
        self.events.add((provider, event_id))
        if payment is None or seen:
            return payment, False
        if payment.final:
            return payment, False  # an older event, arriving late
        return await self.record(payment.id, answer)


@dataclass(frozen=True)
class Hang:
    """A scripted call that never answers (the gateway's call_timeout ends it)."""


HANG = Hang()

Step = ProviderPayment | BaseException | Hang


@dataclass(frozen=True)
class ProviderCallRecord:
    operation: str  # "create_charge", "create_payout", "refund", "retrieve", "parse_webhook"
    argument: Any  # the request, (kind, reference) for retrieve, or the webhook body


class ScriptedProvider:
    """A PaymentProvider answering each payment call with the next scripted step:
    a ProviderPayment is returned, an exception raised, HANG waits forever.
    Webhooks take their answers (WebhookEvent, None or an exception) from
    `webhooks`. Every call is recorded in `calls`."""

    def __init__(
        self,
        name: str,
        script: Iterable[Step] = (),
        webhooks: Iterable[WebhookEvent | BaseException | None] = (),
    ) -> None:
        self._name = name
        self.script: deque[Step] = deque(script)
        self.webhooks: deque[WebhookEvent | BaseException | None] = deque(webhooks)
        self.calls: list[ProviderCallRecord] = []

    @property
    def name(self) -> str:
        return self._name

    def then(self, *steps: Step) -> ScriptedProvider:
        self.script.extend(steps)
        return self

    def operations(self) -> list[str]:
        return [call.operation for call in self.calls]

    async def _answer(self, operation: str, argument: Any) -> ProviderPayment:
        self.calls.append(ProviderCallRecord(operation, argument))
        if not self.script:
            raise AssertionError(f"{self._name}: unscripted call {operation}({argument!r})")
        step = self.script.popleft()
        if isinstance(step, Hang):
            await asyncio.Event().wait()  # never set: only a deadline ends it
            raise AssertionError("unreachable")
        if isinstance(step, BaseException):
            raise step
        return step

    async def create_charge(self, request: ChargeRequest) -> ProviderPayment:
        return await self._answer("create_charge", request)

    async def create_payout(self, request: PayoutRequest) -> ProviderPayment:
        return await self._answer("create_payout", request)

    async def refund(self, request: RefundRequest) -> ProviderPayment:
        return await self._answer("refund", request)

    async def retrieve(self, kind: PaymentKind, reference: str) -> ProviderPayment:
        return await self._answer("retrieve", (kind, reference))

    async def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent | None:
        self.calls.append(ProviderCallRecord("parse_webhook", body))
        if not self.webhooks:
            raise AssertionError(f"{self._name}: unscripted webhook {body!r}")
        step = self.webhooks.popleft()
        if isinstance(step, BaseException):
            raise step
        return step


class RecordingNotifier:
    def __init__(self) -> None:
        self.updated: list[str] = []

    async def payment_updated(self, payment_id: str) -> None:
        self.updated.append(payment_id)


class FakeMonotonicClock:
    """A monotonic clock (seconds) that only moves when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class NoSleep:
    """The gateway's `sleep`: returns at once and records each requested delay."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
