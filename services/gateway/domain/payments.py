"""The gateway's use cases: charge, pay out, refund, read, and apply webhooks.

Every payment is written down (pending) before any provider is called, under the
caller's id, which is also the idempotency key the provider gets. A provider call
goes through the provider's circuit breaker, a per-call timeout and retries with
backoff on retryable failures only. Whatever happens to the call, the payment
stays what the provider last said: a timeout leaves it pending, never failed,
because the provider may have charged; the next call with the same id (the
ledger's reconciler) asks again. No grpc and no SQL here.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.gateway.domain.model import NewPayment, Payment
from services.gateway.domain.ports import LedgerNotifier, PaymentStore
from services.gateway.domain.providers import (
    ChargeRequest,
    PaymentKind,
    PaymentProvider,
    PaymentStatus,
    PayoutRequest,
    ProviderPayment,
    ProviderRejected,
    ProviderUnavailable,
    RefundRequest,
    WebhookSignatureInvalid,
)
from services.gateway.domain.resilience import BreakerState, CircuitBreaker, RetryPolicy
from services.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    Unavailable,
    ViolationCollector,
)
from services.runtime.money import MAX_AMOUNT, check_currency

log = logging.getLogger(__name__)

# How long after it was made a payment without a provider reference may still be sent
# again under its idempotency key (Stripe keeps keys 24 hours).
RESEND_WINDOW = timedelta(hours=23)
PROVIDER_UNAVAILABLE = "provider_unavailable"


@dataclass(frozen=True)
class ProviderCall:
    """A call's result for the metrics: provider, operation, outcome."""

    provider: str
    operation: str
    outcome: str  # "ok", "declined", "unavailable", "timeout", "rejected", "circuit_open"


class Gateway:
    def __init__(
        self,
        store: PaymentStore,
        providers: Mapping[str, PaymentProvider],
        breakers: Mapping[str, CircuitBreaker],
        notifier: LedgerNotifier,
        *,
        default_provider: str,
        fallback_provider: str | None = None,
        retry: RetryPolicy | None = None,
        call_timeout: float = 5.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        observe: Callable[[ProviderCall], None] = lambda call: None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if default_provider not in providers:
            raise ValueError(f"default provider {default_provider!r} is not configured")
        if fallback_provider is not None and fallback_provider not in providers:
            raise ValueError(f"fallback provider {fallback_provider!r} is not configured")
        self._store = store
        self._providers = providers
        self._breakers = breakers
        self._notifier = notifier
        self._default = default_provider
        self._fallback = fallback_provider
        self._retry = retry or RetryPolicy()
        self._call_timeout = call_timeout
        self._sleep = sleep
        self._observe = observe
        self._now = now

    # --- use cases ---------------------------------------------------------------------

    async def charge(
        self,
        payment_id: str,
        provider: str,
        amount: int,
        currency: str,
        method: str,
        description: str,
    ) -> Payment:
        new = self._checked(
            payment_id,
            PaymentKind.CHARGE,
            provider,
            amount,
            currency,
            method,
            "payment_method",
            description,
        )
        return await self._drive(await self._created(new))

    async def payout(
        self,
        payment_id: str,
        provider: str,
        amount: int,
        currency: str,
        destination: str,
        description: str,
    ) -> Payment:
        new = self._checked(
            payment_id,
            PaymentKind.PAYOUT,
            provider,
            amount,
            currency,
            destination,
            "destination",
            description,
        )
        return await self._drive(await self._created(new))

    async def refund(
        self, payment_id: str, charge_payment_id: str, amount: int | None, currency: str
    ) -> Payment:
        errors = ViolationCollector()
        payment_id = errors.uuid(payment_id, "payment_id")
        charge_payment_id = errors.uuid(charge_payment_id, "charge_payment_id")
        if amount is not None and not 0 < amount <= MAX_AMOUNT:
            errors.add("amount.amount", f"must be between 1 and {MAX_AMOUNT}")
        errors.raise_if_any()
        charge = await self._store.get(charge_payment_id)
        if charge is None or charge.kind is not PaymentKind.CHARGE:
            raise NotFound("no such charge", reason="CHARGE_NOT_FOUND")
        if currency and currency != charge.currency:
            raise InvalidArgument.single("amount.currency", "must be the charge's currency")
        new = NewPayment(
            id=payment_id,
            kind=PaymentKind.REFUND,
            provider=charge.provider,
            amount=amount if amount is not None else charge.amount,
            currency=charge.currency,
            # What the provider needs to refund: its own id of the charge.
            instrument=charge.reference,
            charge_payment_id=charge.id,
        )
        refund, outcome = await self._store.create_refund(new)
        if outcome == "charge_not_refundable":
            raise FailedPrecondition(
                "only a succeeded charge can be refunded", reason="CHARGE_NOT_REFUNDABLE"
            )
        if outcome == "amount_exceeds_refundable":
            raise InvalidArgument.single("amount.amount", "must not exceed what is left to refund")
        if outcome == "charge_not_found":
            raise NotFound("no such charge", reason="CHARGE_NOT_FOUND")
        assert refund is not None
        if outcome == "exists" and not refund.same_request(new):
            raise _reused_id()
        return await self._drive(refund)

    async def payment(self, payment_id: str) -> Payment:
        errors = ViolationCollector()
        payment_id = errors.uuid(payment_id, "payment_id")
        errors.raise_if_any()
        found = await self._store.get(payment_id)
        if found is None:
            raise NotFound("no such payment", reason="PAYMENT_NOT_FOUND")
        return found

    async def receive_webhook(self, provider: str, body: bytes, headers: Mapping[str, str]) -> bool:
        """Verifies and applies one delivery; True if it changed a payment."""
        connector = self._providers.get(provider)
        if connector is None:
            raise NotFound(f"no provider named {provider!r}", reason="PROVIDER_NOT_FOUND")
        try:
            event = await connector.parse_webhook(body, headers)
        except WebhookSignatureInvalid as error:
            raise Unauthenticated(
                "webhook signature not valid", reason="WEBHOOK_SIGNATURE_INVALID"
            ) from error
        except (ProviderUnavailable, ProviderRejected) as error:
            # PayPal verifies through its API: a provider that cannot answer now will
            # deliver again; 503 makes it do so.
            raise Unavailable("could not verify the webhook now; deliver it again") from error
        if event is None or not _is_uuid(event.payment_id):
            return False  # not ours to act on (no id of ours in it)
        payment, changed = await self._store.apply_event(
            provider, event.event_id, event.kind, event.payment_id, event.payment
        )
        if payment is None:
            log.info(
                "webhook for an unknown payment",
                extra={"provider": provider, "event_id": event.event_id},
            )
            return False
        if changed and payment.final and payment.kind is not PaymentKind.REFUND:
            await self._notifier.payment_updated(payment.id)
        return changed

    # --- driving a payment to an answer --------------------------------------------------

    def _checked(
        self,
        payment_id: str,
        kind: PaymentKind,
        provider: str,
        amount: int,
        currency: str,
        instrument: str,
        instrument_field: str,
        description: str,
    ) -> NewPayment:
        errors = ViolationCollector()
        payment_id = errors.uuid(payment_id, "payment_id")
        provider = provider or self._default
        if provider not in self._providers:
            errors.add("provider", f"must be one of: {', '.join(sorted(self._providers))}")
        if not 0 < amount <= MAX_AMOUNT:
            errors.add("amount.amount", f"must be between 1 and {MAX_AMOUNT}")
        check_currency(currency, "amount.currency", errors)
        instrument = instrument.strip()
        if not instrument:
            errors.add(instrument_field, "is required (a provider token)")
        elif len(instrument) > 255:
            errors.add(instrument_field, "must be at most 255 characters")
        if len(description) > 500:
            errors.add("description", "must be at most 500 characters")
        errors.raise_if_any()
        return NewPayment(payment_id, kind, provider, amount, currency, instrument, description)

    async def _created(self, new: NewPayment) -> Payment:
        payment, created = await self._store.create(new)
        if not created and not payment.same_request(new):
            raise _reused_id()
        return payment

    async def _drive(self, payment: Payment) -> Payment:
        """Asks the payment's provider (again) until it has an answer or cannot."""
        if payment.final:
            return payment
        breaker = self._breakers[payment.provider]
        if not breaker.allow():
            return await self._provider_down(payment)
        try:
            payment = await self._store.start_attempt(payment.id)
            if payment.final:  # a webhook settled it meanwhile
                return payment
            connector = self._providers[payment.provider]
            if not payment.reference and self._now() - payment.created_at > RESEND_WINDOW:
                # Providers forget idempotency keys (Stripe after 24 h): sending the
                # request again now could pay twice. An operator must look it up.
                log.error(
                    "payment pending past the resend window; not sent again",
                    extra={"payment_id": payment.id, "provider": payment.provider},
                )
                return payment
            try:
                answer = await self._call(payment, connector)
            except ProviderRejected as error:
                if payment.attempts > 1 or payment.reference:
                    # Refused now, but an earlier drive may have reached the provider
                    # (rotated keys, a forgotten request id): failing it could lose a
                    # charge. It stays pending, loudly.
                    log.error(
                        "provider refused a payment it may already have; kept pending",
                        extra={"payment_id": payment.id, "provider": payment.provider},
                    )
                    return payment
                # The provider refused the request itself (an unknown token, say): asking
                # again would be refused again, so the payment fails, with its words.
                answer = ProviderPayment("", PaymentStatus.FAILED, "provider_rejected", str(error))
            except ProviderUnavailable:
                return payment  # still pending: the provider may have it; ask again later
        finally:
            # A half-open probe that ended without a verdict (settled meanwhile, or
            # cancelled) must not keep the breaker waiting for it forever.
            breaker.release()
        recorded, _ = await self._store.record(payment.id, answer)
        return recorded

    async def _provider_down(self, payment: Payment) -> Payment:
        """The breaker is open. A charge no provider has seen yet may go to the
        fallback provider; one no provider has seen otherwise fails now (nothing
        was taken); one a provider may have stays pending. Then: UNAVAILABLE."""
        never_sent = payment.attempts == 0
        if (
            never_sent
            and payment.kind is PaymentKind.CHARGE
            and self._fallback is not None
            and self._fallback != payment.provider
            and self._breakers[self._fallback].state is not BreakerState.OPEN
        ):
            log.warning(
                "provider unavailable, charging through the fallback",
                extra={"provider": payment.provider, "fallback": self._fallback},
            )
            return await self._drive(await self._store.switch_provider(payment.id, self._fallback))
        self._observe(ProviderCall(payment.provider, payment.kind.value, "circuit_open"))
        if never_sent:
            # Only if still never sent: another instance may be sending it right now.
            await self._store.fail_unsent(
                payment.id,
                PROVIDER_UNAVAILABLE,
                f"{payment.provider} is unavailable; nothing was sent to it",
            )
        raise Unavailable(
            f"payment provider {payment.provider} is unavailable; try again later",
            reason="PROVIDER_UNAVAILABLE",
        )

    async def _call(self, payment: Payment, connector: PaymentProvider) -> ProviderPayment:
        operation = _operation(payment, connector)
        breaker = self._breakers[payment.provider]
        name = "retrieve" if payment.reference else payment.kind.value
        for attempt in range(self._retry.attempts):
            if attempt and not breaker.allow():
                self._observe(ProviderCall(payment.provider, name, "circuit_open"))
                raise ProviderUnavailable("circuit open")
            try:
                async with asyncio.timeout(self._call_timeout):
                    answer = await operation()
            except (ProviderUnavailable, TimeoutError) as error:
                breaker.record_failure()
                timed_out = isinstance(error, TimeoutError)
                self._observe(
                    ProviderCall(payment.provider, name, "timeout" if timed_out else "unavailable")
                )
                log.warning(
                    "provider call failed",
                    extra={
                        "provider": payment.provider,
                        "payment_id": payment.id,
                        "attempt": attempt + 1,
                        "error": "timeout" if timed_out else str(error),
                    },
                )
                if attempt + 1 < self._retry.attempts:
                    await self._sleep(self._retry.delay(attempt))
                    continue
                raise ProviderUnavailable(str(error) or "timeout") from error
            except ProviderRejected as error:
                breaker.record_success()  # it answered: the provider is up
                self._observe(ProviderCall(payment.provider, name, "rejected"))
                if attempt:
                    # An earlier try of this call went unanswered and may have landed.
                    raise ProviderUnavailable(
                        f"refused after an unanswered try: {error}"
                    ) from error
                raise
            breaker.record_success()
            declined = answer.status is PaymentStatus.FAILED
            self._observe(ProviderCall(payment.provider, name, "declined" if declined else "ok"))
            return answer
        raise AssertionError("unreachable")  # pragma: no cover


def _operation(
    payment: Payment, connector: PaymentProvider
) -> Callable[[], Awaitable[ProviderPayment]]:
    """The provider call that moves this payment on: the original request again (same
    idempotency key) until the provider has named it, then a lookup by its id."""
    if payment.reference:
        return lambda: connector.retrieve(payment.kind, payment.reference)
    if payment.kind is PaymentKind.CHARGE:
        request = ChargeRequest(
            payment.id, payment.amount, payment.currency, payment.instrument, payment.description
        )
        return lambda: connector.create_charge(request)
    if payment.kind is PaymentKind.PAYOUT:
        payout = PayoutRequest(
            payment.id, payment.amount, payment.currency, payment.instrument, payment.description
        )
        return lambda: connector.create_payout(payout)
    refund = RefundRequest(payment.id, payment.instrument, payment.amount, payment.currency)
    return lambda: connector.refund(refund)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _reused_id() -> FailedPrecondition:
    return FailedPrecondition(
        "this payment id was already used for a different request",
        reason="PAYMENT_ID_REUSED",
    )
