"""The gateway's use cases against in-memory fakes: retries, breaker, fallback,
idempotency, refunds and webhooks, without a provider, a database or a wait."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest

from services.gateway.domain.model import NewPayment, Payment
from services.gateway.domain.payments import Gateway, ProviderCall
from services.gateway.domain.providers import (
    ChargeRequest,
    PaymentKind,
    PaymentStatus,
    PayoutRequest,
    ProviderPayment,
    ProviderRejected,
    ProviderUnavailable,
    RefundRequest,
    WebhookEvent,
    WebhookSignatureInvalid,
)
from services.gateway.domain.resilience import BreakerState, CircuitBreaker, RetryPolicy
from services.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from tests.fakes.gateway import (
    HANG,
    START,
    FakeMonotonicClock,
    FakePaymentStore,
    NoSleep,
    RecordingNotifier,
    ScriptedProvider,
)

PAY_1 = "00000000-0000-4000-8000-000000000001"
PAY_2 = "00000000-0000-4000-8000-000000000002"
REFUND_1 = "00000000-0000-4000-8000-0000000000a1"
REFUND_2 = "00000000-0000-4000-8000-0000000000b2"
THRESHOLD = 5

OK = ProviderPayment("pi_1", PaymentStatus.SUCCEEDED)
PENDING = ProviderPayment("pi_1", PaymentStatus.PENDING)
DECLINED = ProviderPayment("pi_1", PaymentStatus.FAILED, "card_declined", "Your card was declined")


def down() -> ProviderUnavailable:
    return ProviderUnavailable("503 from the provider")


@dataclass(frozen=True)
class MaxJitter(RetryPolicy):
    """The retry policy with its random source pinned to 1: delays are the caps."""

    def delay(self, retry: int, rand: Callable[[], float] = lambda: 1.0) -> float:
        return super().delay(retry, rand)


class World:
    def __init__(self, *, fallback: bool = False, attempts: int = 3) -> None:
        self.store = FakePaymentStore()
        self.notifier = RecordingNotifier()
        self.clock = FakeMonotonicClock()
        self.sleep = NoSleep()
        self.now = START + timedelta(minutes=1)  # the gateway's wall clock
        self.observed: list[ProviderCall] = []
        self.primary = ScriptedProvider("primary")
        self.fallback = ScriptedProvider("fallback")
        self.breakers = {
            name: CircuitBreaker(failure_threshold=THRESHOLD, open_seconds=30.0, clock=self.clock)
            for name in ("primary", "fallback")
        }
        self.gateway = Gateway(
            self.store,
            {"primary": self.primary, "fallback": self.fallback},
            self.breakers,
            self.notifier,
            default_provider="primary",
            fallback_provider="fallback" if fallback else None,
            retry=MaxJitter(attempts=attempts, base_delay=0.1, max_delay=2.0),
            call_timeout=0.01,  # a deadline for HANG, never waited for otherwise
            sleep=self.sleep,
            observe=self.observed.append,
            now=lambda: self.now,
        )

    def open_breaker(self, name: str = "primary") -> None:
        for _ in range(THRESHOLD):
            self.breakers[name].record_failure()
        assert self.breakers[name].state is BreakerState.OPEN

    def outcomes(self) -> list[str]:
        return [call.outcome for call in self.observed]

    async def charge(
        self, payment_id: str = PAY_1, amount: int = 1500, provider: str = ""
    ) -> Payment:
        return await self.gateway.charge(
            payment_id, provider, amount, "EUR", "pm_card_visa", "top-up"
        )

    async def payout(self, payment_id: str = PAY_2, amount: int = 700) -> Payment:
        return await self.gateway.payout(payment_id, "", amount, "EUR", "ba_123", "withdrawal")

    async def succeeded_charge(self, amount: int = 1500) -> Payment:
        self.primary.then(ProviderPayment("ch_9", PaymentStatus.SUCCEEDED))
        charge = await self.charge(amount=amount)
        assert charge.status is PaymentStatus.SUCCEEDED
        self.primary.calls.clear()
        self.observed.clear()
        return charge


@pytest.fixture
def world() -> World:
    return World()


# --- charges and payouts ---------------------------------------------------------------


async def test_a_charge_that_succeeds_is_stored_with_its_reference(world: World) -> None:
    world.primary.then(OK)

    payment = await world.charge()

    assert payment.status is PaymentStatus.SUCCEEDED
    assert payment.reference == "pi_1"
    assert payment.provider == "primary"
    assert payment.attempts == 1
    assert world.store.payments[PAY_1] == payment
    assert world.primary.operations() == ["create_charge"]
    request = world.primary.calls[0].argument
    assert request == ChargeRequest(PAY_1, 1500, "EUR", "pm_card_visa", "top-up")
    assert world.sleep.delays == []
    assert world.observed == [ProviderCall("primary", "charge", "ok")]


async def test_the_payment_id_is_normalised_before_anything(world: World) -> None:
    world.primary.then(OK)

    payment = await world.charge(payment_id=PAY_1.upper())

    assert payment.id == PAY_1
    assert world.primary.calls[0].argument.payment_id == PAY_1


async def test_unavailable_twice_then_success_retries_with_the_same_key(world: World) -> None:
    world.primary.then(down(), down(), OK)

    payment = await world.charge()

    assert payment.status is PaymentStatus.SUCCEEDED
    assert world.primary.operations() == ["create_charge"] * 3
    assert {call.argument.payment_id for call in world.primary.calls} == {PAY_1}
    assert len({call.argument for call in world.primary.calls}) == 1  # the same request
    assert world.sleep.delays == pytest.approx([0.1, 0.2])  # base * 2**n, full jitter at 1
    # One drive of the payment, whatever its retries: counted once.
    assert payment.attempts == 1
    assert world.outcomes() == ["unavailable", "unavailable", "ok"]
    assert world.breakers["primary"].state is BreakerState.CLOSED


async def test_every_drive_of_a_pending_payment_counts_an_attempt(world: World) -> None:
    world.primary.then(PENDING, ProviderPayment("pi_1", PaymentStatus.PENDING))

    first = await world.charge()
    second = await world.charge()

    assert (first.attempts, second.attempts) == (1, 2)
    assert second.status is PaymentStatus.PENDING


async def test_a_provider_down_on_every_attempt_leaves_the_payment_pending(world: World) -> None:
    world.primary.then(down(), down(), down())

    payment = await world.charge()

    assert payment.status is PaymentStatus.PENDING
    assert payment.failure_code == ""
    assert world.store.payments[PAY_1].status is PaymentStatus.PENDING
    assert len(world.primary.calls) == 3
    assert world.sleep.delays == pytest.approx([0.1, 0.2])  # none after the last attempt
    assert world.outcomes() == ["unavailable"] * 3


async def test_a_timeout_on_every_attempt_leaves_the_payment_pending(world: World) -> None:
    world.primary.then(HANG, HANG, HANG)

    payment = await world.charge()

    assert payment.status is PaymentStatus.PENDING
    assert world.store.payments[PAY_1].status is PaymentStatus.PENDING
    assert len(world.primary.calls) == 3
    assert world.outcomes() == ["timeout"] * 3


async def test_a_timeout_then_an_answer_succeeds(world: World) -> None:
    world.primary.then(HANG, OK)

    payment = await world.charge()

    assert payment.status is PaymentStatus.SUCCEEDED
    assert world.outcomes() == ["timeout", "ok"]
    assert world.sleep.delays == pytest.approx([0.1])


async def test_a_decline_fails_the_payment_and_does_not_count_against_the_breaker(
    world: World,
) -> None:
    for index in range(THRESHOLD + 2):
        world.primary.then(DECLINED)
        payment = await world.charge(payment_id=f"00000000-0000-4000-8000-{index:012d}")
        assert payment.status is PaymentStatus.FAILED
        assert payment.failure_code == "card_declined"
        assert payment.failure_message == "Your card was declined"

    assert len(world.primary.calls) == THRESHOLD + 2  # a decline is never retried
    assert world.sleep.delays == []
    assert world.breakers["primary"].state is BreakerState.CLOSED
    assert set(world.outcomes()) == {"declined"}


async def test_a_decline_without_a_code_is_stored_as_failed(world: World) -> None:
    world.primary.then(ProviderPayment("pi_1", PaymentStatus.FAILED))

    payment = await world.charge()

    assert payment.status is PaymentStatus.FAILED
    assert payment.failure_code == "failed"


async def test_a_rejected_request_fails_the_payment_and_is_not_retried(world: World) -> None:
    world.primary.then(ProviderRejected("No such PaymentMethod: 'pm_nope'"))

    payment = await world.charge()

    assert payment.status is PaymentStatus.FAILED
    assert payment.failure_code == "provider_rejected"
    assert "pm_nope" in payment.failure_message
    assert len(world.primary.calls) == 1
    assert world.sleep.delays == []
    assert world.outcomes() == ["rejected"]


async def test_a_rejection_after_failures_closes_the_count(world: World) -> None:
    world.primary.then(down(), down(), ProviderRejected("bad token"))

    payment = await world.charge()

    # Refused after two unanswered tries, which may have landed: not failed.
    assert payment.status is PaymentStatus.PENDING
    assert world.outcomes() == ["unavailable", "unavailable", "rejected"]
    # The provider answered: the failures before it no longer count.
    for _ in range(THRESHOLD - 1):
        world.breakers["primary"].record_failure()
    assert world.breakers["primary"].state is BreakerState.CLOSED


async def test_a_payout_is_sent_as_a_payout(world: World) -> None:
    world.primary.then(ProviderPayment("po_1", PaymentStatus.PENDING))

    payment = await world.payout()

    assert payment.kind is PaymentKind.PAYOUT
    assert payment.status is PaymentStatus.PENDING
    assert payment.reference == "po_1"
    assert world.primary.calls[0].argument == PayoutRequest(
        PAY_2, 700, "EUR", "ba_123", "withdrawal"
    )
    assert world.observed == [ProviderCall("primary", "payout", "ok")]


# --- idempotency -----------------------------------------------------------------------


async def test_the_same_request_again_returns_the_final_payment_without_a_call(
    world: World,
) -> None:
    world.primary.then(OK)
    first = await world.charge()

    again = await world.charge()

    assert again == first
    assert len(world.primary.calls) == 1
    assert len(world.observed) == 1


async def test_the_same_id_with_another_amount_is_refused(world: World) -> None:
    world.primary.then(OK)
    await world.charge(amount=1500)

    with pytest.raises(FailedPrecondition) as raised:
        await world.charge(amount=1600)

    assert raised.value.reason == "PAYMENT_ID_REUSED"
    assert len(world.primary.calls) == 1
    assert world.store.payments[PAY_1].amount == 1500


async def test_the_same_id_for_a_payout_is_refused(world: World) -> None:
    world.primary.then(OK)
    await world.charge(payment_id=PAY_2, amount=700)

    with pytest.raises(FailedPrecondition) as raised:
        await world.payout(payment_id=PAY_2, amount=700)

    assert raised.value.reason == "PAYMENT_ID_REUSED"


async def test_a_pending_payment_with_a_reference_is_looked_up_not_created_again(
    world: World,
) -> None:
    world.primary.then(PENDING, ProviderPayment("pi_1", PaymentStatus.SUCCEEDED))
    first = await world.charge()
    assert first.status is PaymentStatus.PENDING
    assert first.reference == "pi_1"

    second = await world.charge()

    assert second.status is PaymentStatus.SUCCEEDED
    assert world.primary.operations() == ["create_charge", "retrieve"]
    assert world.primary.calls[1].argument == (PaymentKind.CHARGE, "pi_1")
    assert [call.operation for call in world.observed] == ["charge", "retrieve"]


async def test_a_pending_payment_without_a_reference_is_sent_again_with_its_key(
    world: World,
) -> None:
    world.primary.then(down(), down(), down(), OK)
    assert (await world.charge()).status is PaymentStatus.PENDING

    payment = await world.charge()

    assert payment.status is PaymentStatus.SUCCEEDED
    assert world.primary.operations() == ["create_charge"] * 4
    assert {call.argument.payment_id for call in world.primary.calls} == {PAY_1}


async def test_an_answer_without_a_reference_keeps_the_known_one(world: World) -> None:
    world.primary.then(PENDING, ProviderPayment("", PaymentStatus.SUCCEEDED))
    await world.charge()

    payment = await world.charge()

    assert payment.status is PaymentStatus.SUCCEEDED
    assert payment.reference == "pi_1"


# --- circuit breaker and fallback ------------------------------------------------------


async def test_an_open_breaker_fails_a_payment_never_sent(world: World) -> None:
    world.open_breaker()

    with pytest.raises(Unavailable) as raised:
        await world.charge()

    assert raised.value.reason == "PROVIDER_UNAVAILABLE"
    stored = world.store.payments[PAY_1]
    assert stored.status is PaymentStatus.FAILED
    assert stored.failure_code == "provider_unavailable"
    assert stored.attempts == 0
    assert world.primary.calls == []
    assert world.observed == [ProviderCall("primary", "charge", "circuit_open")]


async def test_an_open_breaker_leaves_an_attempted_payment_pending(world: World) -> None:
    world.primary.then(down(), down(), down())
    assert (await world.charge()).status is PaymentStatus.PENDING
    world.open_breaker()
    world.observed.clear()

    with pytest.raises(Unavailable) as raised:
        await world.charge()

    assert raised.value.reason == "PROVIDER_UNAVAILABLE"
    stored = world.store.payments[PAY_1]
    assert stored.status is PaymentStatus.PENDING
    assert stored.failure_code == ""
    assert len(world.primary.calls) == 3  # none after the breaker opened
    assert world.outcomes() == ["circuit_open"]


async def test_failures_open_the_breaker_during_retries(world: World) -> None:
    # Threshold 5, 3 attempts a drive: the second drive's second failure opens it.
    world.primary.then(*(down() for _ in range(5)))
    await world.charge(payment_id=PAY_1)

    payment = await world.charge(payment_id=PAY_2)

    assert payment.status is PaymentStatus.PENDING
    assert len(world.primary.calls) == 5
    assert world.breakers["primary"].state is BreakerState.OPEN
    assert world.outcomes() == ["unavailable"] * 5 + ["circuit_open"]


async def test_a_half_open_breaker_lets_one_probe_through(world: World) -> None:
    world.open_breaker()
    world.clock.advance(30.0)
    world.primary.then(OK)

    payment = await world.charge()

    assert payment.status is PaymentStatus.SUCCEEDED
    assert world.breakers["primary"].state is BreakerState.CLOSED


async def test_a_failed_probe_is_not_retried(world: World) -> None:
    world.open_breaker()
    world.clock.advance(30.0)
    world.primary.then(down())

    payment = await world.charge()

    assert payment.status is PaymentStatus.PENDING
    assert len(world.primary.calls) == 1
    assert world.breakers["primary"].state is BreakerState.OPEN
    assert world.outcomes() == ["unavailable", "circuit_open"]


async def test_a_probe_without_a_verdict_gives_the_probe_back(world: World) -> None:
    """A half-open probe whose payment a webhook settled meanwhile (no provider call)
    must not leave the breaker waiting for a verdict forever."""
    world.primary.then(down(), down(), down())
    pending = await world.charge()  # attempted once: pending
    assert pending.status is PaymentStatus.PENDING
    world.open_breaker()
    world.clock.advance(30.0)
    await world.store.record(PAY_1, OK)  # the webhook, between allow() and the call

    settled = await world.charge()

    assert settled.status is PaymentStatus.SUCCEEDED
    assert world.breakers["primary"].state is BreakerState.HALF_OPEN
    assert world.breakers["primary"].allow()  # the next caller may probe


async def test_a_cancelled_probe_gives_the_probe_back(world: World) -> None:
    world.open_breaker()
    world.clock.advance(30.0)
    world.primary.then(HANG)
    charging = asyncio.ensure_future(
        world.gateway.charge(PAY_1, "", 1500, "EUR", "pm_card_visa", "top-up")
    )
    await asyncio.sleep(0)  # let it reach the provider
    assert len(world.primary.calls) == 1
    charging.cancel()
    with pytest.raises(asyncio.CancelledError):
        await charging

    assert world.breakers["primary"].allow()


async def test_a_charge_never_sent_goes_to_the_fallback_when_the_primary_is_down() -> None:
    world = World(fallback=True)
    world.open_breaker("primary")
    world.fallback.then(ProviderPayment("fb_1", PaymentStatus.SUCCEEDED))

    payment = await world.charge()

    assert payment.status is PaymentStatus.SUCCEEDED
    assert payment.provider == "fallback"
    assert payment.reference == "fb_1"
    assert world.store.payments[PAY_1].provider == "fallback"
    assert world.primary.calls == []
    assert world.fallback.calls[0].argument.payment_id == PAY_1
    assert world.observed == [ProviderCall("fallback", "charge", "ok")]


async def test_no_fallback_when_the_fallback_is_down_too() -> None:
    world = World(fallback=True)
    world.open_breaker("primary")
    world.open_breaker("fallback")

    with pytest.raises(Unavailable):
        await world.charge()

    stored = world.store.payments[PAY_1]
    assert stored.provider == "primary"
    assert stored.status is PaymentStatus.FAILED
    assert world.primary.calls == world.fallback.calls == []


async def test_an_attempted_charge_never_moves_to_the_fallback() -> None:
    world = World(fallback=True)
    world.primary.then(down(), down(), down())
    await world.charge()
    world.open_breaker("primary")

    with pytest.raises(Unavailable):
        await world.charge()

    stored = world.store.payments[PAY_1]
    assert stored.provider == "primary"
    assert stored.status is PaymentStatus.PENDING
    assert world.fallback.calls == []


async def test_payouts_never_fall_back() -> None:
    world = World(fallback=True)
    world.open_breaker("primary")

    with pytest.raises(Unavailable) as raised:
        await world.payout()

    assert raised.value.reason == "PROVIDER_UNAVAILABLE"
    stored = world.store.payments[PAY_2]
    assert stored.provider == "primary"
    assert stored.status is PaymentStatus.FAILED
    assert stored.failure_code == "provider_unavailable"
    assert world.fallback.calls == world.primary.calls == []


# --- validation ------------------------------------------------------------------------


async def test_invalid_input_lists_every_bad_field(world: World) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await world.gateway.charge("not-a-uuid", "nope", 0, "eur", "   ", "")

    fields = [violation.field for violation in raised.value.violations]
    assert fields == [
        "payment_id",
        "provider",
        "amount.amount",
        "amount.currency",
        "payment_method",
    ]
    assert world.store.payments == {}
    assert world.primary.calls == []


@pytest.mark.parametrize(
    ("payment_id", "provider", "amount", "currency", "method", "field"),
    [
        ("", "", 100, "EUR", "pm", "payment_id"),
        (PAY_1, "nope", 100, "EUR", "pm", "provider"),
        (PAY_1, "", 0, "EUR", "pm", "amount.amount"),
        (PAY_1, "", -5, "EUR", "pm", "amount.amount"),
        (PAY_1, "", 1_000_000_000_001, "EUR", "pm", "amount.amount"),
        (PAY_1, "", 100, "eur", "pm", "amount.currency"),
        (PAY_1, "", 100, "EURO", "pm", "amount.currency"),
        (PAY_1, "", 100, "E1R", "pm", "amount.currency"),
        (PAY_1, "", 100, "EUR", "", "payment_method"),
        (PAY_1, "", 100, "EUR", "x" * 256, "payment_method"),
    ],
)
async def test_each_invalid_charge_field_is_named(
    world: World,
    payment_id: str,
    provider: str,
    amount: int,
    currency: str,
    method: str,
    field: str,
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await world.gateway.charge(payment_id, provider, amount, currency, method, "")

    assert [violation.field for violation in raised.value.violations] == [field]


async def test_a_payout_needs_a_destination(world: World) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await world.gateway.payout(PAY_2, "", 100, "EUR", "", "x" * 501)

    fields = [violation.field for violation in raised.value.violations]
    assert fields == ["destination", "description"]


async def test_a_payment_is_read_by_id(world: World) -> None:
    world.primary.then(OK)
    charged = await world.charge()

    assert await world.gateway.payment(PAY_1) == charged
    with pytest.raises(NotFound) as raised:
        await world.gateway.payment(PAY_2)
    assert raised.value.reason == "PAYMENT_NOT_FOUND"
    with pytest.raises(InvalidArgument):
        await world.gateway.payment("nope")


def test_the_default_and_fallback_providers_must_be_configured() -> None:
    providers = {"primary": ScriptedProvider("primary")}
    breakers: dict[str, CircuitBreaker] = {}
    with pytest.raises(ValueError, match="default"):
        Gateway(FakePaymentStore(), providers, breakers, RecordingNotifier(), default_provider="x")
    with pytest.raises(ValueError, match="fallback"):
        Gateway(
            FakePaymentStore(),
            providers,
            breakers,
            RecordingNotifier(),
            default_provider="primary",
            fallback_provider="x",
        )


# --- refunds ---------------------------------------------------------------------------


async def test_a_refund_of_a_succeeded_charge_uses_the_charge_reference(world: World) -> None:
    await world.succeeded_charge(amount=1500)
    world.primary.then(ProviderPayment("re_1", PaymentStatus.SUCCEEDED))

    refund = await world.gateway.refund(REFUND_1, PAY_1, 500, "EUR")

    assert refund.kind is PaymentKind.REFUND
    assert refund.status is PaymentStatus.SUCCEEDED
    assert refund.charge_payment_id == PAY_1
    assert refund.reference == "re_1"
    assert world.primary.operations() == ["refund"]
    assert world.primary.calls[0].argument == RefundRequest(REFUND_1, "ch_9", 500, "EUR")
    assert world.observed == [ProviderCall("primary", "refund", "ok")]


async def test_a_refund_without_an_amount_refunds_the_whole_charge(world: World) -> None:
    await world.succeeded_charge(amount=1500)
    world.primary.then(ProviderPayment("re_1", PaymentStatus.PENDING))

    refund = await world.gateway.refund(REFUND_1, PAY_1, None, "")

    assert refund.amount == 1500
    assert refund.currency == "EUR"


async def test_a_refund_of_more_than_is_left_is_refused(world: World) -> None:
    await world.succeeded_charge(amount=1500)
    world.primary.then(ProviderPayment("re_1", PaymentStatus.SUCCEEDED))
    await world.gateway.refund(REFUND_1, PAY_1, 1000, "EUR")

    with pytest.raises(InvalidArgument) as raised:
        await world.gateway.refund(REFUND_2, PAY_1, 501, "EUR")

    assert [v.field for v in raised.value.violations] == ["amount.amount"]
    assert REFUND_2 not in world.store.payments
    assert world.primary.operations() == ["refund"]


async def test_a_refund_of_a_pending_charge_is_refused(world: World) -> None:
    world.primary.then(PENDING)
    await world.charge()

    with pytest.raises(FailedPrecondition) as raised:
        await world.gateway.refund(REFUND_1, PAY_1, 100, "EUR")

    assert raised.value.reason == "CHARGE_NOT_REFUNDABLE"
    assert world.primary.operations() == ["create_charge"]


async def test_a_refund_of_an_unknown_charge_or_a_payout_is_not_found(world: World) -> None:
    with pytest.raises(NotFound) as raised:
        await world.gateway.refund(REFUND_1, PAY_1, 100, "EUR")
    assert raised.value.reason == "CHARGE_NOT_FOUND"

    world.primary.then(ProviderPayment("po_1", PaymentStatus.SUCCEEDED))
    await world.payout()
    with pytest.raises(NotFound):
        await world.gateway.refund(REFUND_1, PAY_2, 100, "EUR")


async def test_a_refund_in_another_currency_is_refused(world: World) -> None:
    await world.succeeded_charge()

    with pytest.raises(InvalidArgument) as raised:
        await world.gateway.refund(REFUND_1, PAY_1, 100, "USD")

    assert [v.field for v in raised.value.violations] == ["amount.currency"]


async def test_a_repeated_refund_is_idempotent_and_a_changed_one_refused(world: World) -> None:
    await world.succeeded_charge()
    world.primary.then(ProviderPayment("re_1", PaymentStatus.SUCCEEDED))
    first = await world.gateway.refund(REFUND_1, PAY_1, 500, "EUR")

    assert await world.gateway.refund(REFUND_1, PAY_1, 500, "EUR") == first
    with pytest.raises(FailedPrecondition) as raised:
        await world.gateway.refund(REFUND_1, PAY_1, 400, "EUR")

    assert raised.value.reason == "PAYMENT_ID_REUSED"
    assert world.primary.operations() == ["refund"]


async def test_invalid_refund_ids_and_amounts_are_listed(world: World) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await world.gateway.refund("x", "", 0, "EUR")

    fields = [v.field for v in raised.value.violations]
    assert fields == ["payment_id", "charge_payment_id", "amount.amount"]


# --- webhooks --------------------------------------------------------------------------


def event(
    status: PaymentStatus,
    event_id: str = "evt_1",
    payment_id: str = PAY_1,
    kind: PaymentKind = PaymentKind.CHARGE,
) -> WebhookEvent:
    return WebhookEvent(event_id, kind, payment_id, ProviderPayment("pi_1", status))


async def pending_charge(world: World) -> None:
    world.primary.then(PENDING)
    await world.charge()
    world.primary.calls.clear()


async def test_a_bad_signature_is_unauthenticated(world: World) -> None:
    world.primary.webhooks.append(WebhookSignatureInvalid("bad signature"))

    with pytest.raises(Unauthenticated) as raised:
        await world.gateway.receive_webhook("primary", b"{}", {"stripe-signature": "x"})

    assert raised.value.reason == "WEBHOOK_SIGNATURE_INVALID"
    assert world.notifier.updated == []


async def test_a_provider_that_cannot_verify_now_is_unavailable(world: World) -> None:
    world.primary.webhooks.append(ProviderUnavailable("verification API down"))

    with pytest.raises(Unavailable):
        await world.gateway.receive_webhook("primary", b"{}", {})


async def test_a_verified_event_settles_a_pending_charge_and_tells_the_ledger(
    world: World,
) -> None:
    await pending_charge(world)
    world.primary.webhooks.append(event(PaymentStatus.SUCCEEDED))

    applied = await world.gateway.receive_webhook("primary", b"body", {"h": "v"})

    assert applied is True
    assert world.store.payments[PAY_1].status is PaymentStatus.SUCCEEDED
    assert world.notifier.updated == [PAY_1]
    assert world.primary.operations() == ["parse_webhook"]
    assert world.primary.calls[0].argument == b"body"


async def test_the_same_event_delivered_again_changes_nothing(world: World) -> None:
    await pending_charge(world)
    world.primary.webhooks.extend([event(PaymentStatus.SUCCEEDED)] * 2)
    assert await world.gateway.receive_webhook("primary", b"{}", {})

    again = await world.gateway.receive_webhook("primary", b"{}", {})

    assert again is False
    assert world.notifier.updated == [PAY_1]


async def test_a_redelivered_event_is_not_applied_even_if_the_payment_is_pending(
    world: World,
) -> None:
    await pending_charge(world)
    world.primary.webhooks.extend(
        [event(PaymentStatus.PENDING, "evt_1"), event(PaymentStatus.FAILED, "evt_1")]
    )
    assert await world.gateway.receive_webhook("primary", b"{}", {}) is False

    assert await world.gateway.receive_webhook("primary", b"{}", {}) is False

    assert world.store.payments[PAY_1].status is PaymentStatus.PENDING
    assert world.notifier.updated == []


async def test_an_older_pending_event_after_success_is_not_applied(world: World) -> None:
    await pending_charge(world)
    world.primary.webhooks.extend(
        [event(PaymentStatus.SUCCEEDED, "evt_2"), event(PaymentStatus.PENDING, "evt_1")]
    )
    assert await world.gateway.receive_webhook("primary", b"{}", {})

    late = await world.gateway.receive_webhook("primary", b"{}", {})

    assert late is False
    assert world.store.payments[PAY_1].status is PaymentStatus.SUCCEEDED
    assert world.notifier.updated == [PAY_1]


async def test_a_failed_event_fails_the_charge(world: World) -> None:
    await pending_charge(world)
    world.primary.webhooks.append(
        WebhookEvent(
            "evt_1",
            PaymentKind.CHARGE,
            PAY_1,
            ProviderPayment("pi_1", PaymentStatus.FAILED, "expired_card"),
        )
    )

    assert await world.gateway.receive_webhook("primary", b"{}", {})

    stored = world.store.payments[PAY_1]
    assert (stored.status, stored.failure_code) == (PaymentStatus.FAILED, "expired_card")
    assert world.notifier.updated == [PAY_1]


async def test_a_settled_refund_does_not_notify_the_ledger(world: World) -> None:
    await world.succeeded_charge()
    world.primary.then(ProviderPayment("re_1", PaymentStatus.PENDING))
    await world.gateway.refund(REFUND_1, PAY_1, 100, "EUR")
    world.primary.webhooks.append(
        event(PaymentStatus.SUCCEEDED, payment_id=REFUND_1, kind=PaymentKind.REFUND)
    )

    assert await world.gateway.receive_webhook("primary", b"{}", {})

    assert world.store.payments[REFUND_1].status is PaymentStatus.SUCCEEDED
    assert world.notifier.updated == []


@pytest.mark.parametrize(
    "answer",
    [
        None,
        event(PaymentStatus.SUCCEEDED, payment_id="not-ours"),
        event(PaymentStatus.SUCCEEDED, payment_id=""),
        event(PaymentStatus.SUCCEEDED, payment_id=PAY_2),  # a UUID we do not know
        event(PaymentStatus.SUCCEEDED, kind=PaymentKind.PAYOUT),  # ours, another kind
    ],
)
async def test_an_event_not_for_a_known_payment_is_ignored(
    world: World, answer: WebhookEvent | None
) -> None:
    await pending_charge(world)
    world.primary.webhooks.append(answer)

    assert await world.gateway.receive_webhook("primary", b"{}", {}) is False

    assert world.store.payments[PAY_1].status is PaymentStatus.PENDING
    assert world.notifier.updated == []


async def test_an_event_from_another_provider_than_the_payments_is_ignored(
    world: World,
) -> None:
    await pending_charge(world)
    world.fallback.webhooks.append(event(PaymentStatus.SUCCEEDED))

    assert await world.gateway.receive_webhook("fallback", b"{}", {}) is False

    assert world.store.payments[PAY_1].status is PaymentStatus.PENDING


async def test_a_webhook_for_an_unknown_provider_is_not_found(world: World) -> None:
    with pytest.raises(NotFound) as raised:
        await world.gateway.receive_webhook("paypal", b"{}", {})

    assert raised.value.reason == "PROVIDER_NOT_FOUND"
    assert world.primary.calls == []


async def test_a_webhook_settling_a_charge_stops_the_next_drive(world: World) -> None:
    await pending_charge(world)
    world.primary.webhooks.append(event(PaymentStatus.SUCCEEDED))
    await world.gateway.receive_webhook("primary", b"{}", {})

    payment = await world.charge()

    assert payment.status is PaymentStatus.SUCCEEDED
    assert world.primary.operations() == ["parse_webhook"]  # no retrieve


# --- observed provider calls -----------------------------------------------------------


async def test_observe_sees_every_outcome(world: World) -> None:
    world.primary.then(
        down(),
        HANG,
        OK,  # PAY_1: unavailable, timeout, ok
        DECLINED,  # PAY_2: declined
        ProviderRejected("bad"),  # third: rejected
    )
    await world.charge(payment_id=PAY_1)
    await world.charge(payment_id=PAY_2)
    await world.charge(payment_id="00000000-0000-4000-8000-000000000003")
    world.open_breaker()
    with pytest.raises(Unavailable):
        await world.charge(payment_id="00000000-0000-4000-8000-000000000004")

    assert world.observed == [
        ProviderCall("primary", "charge", "unavailable"),
        ProviderCall("primary", "charge", "timeout"),
        ProviderCall("primary", "charge", "ok"),
        ProviderCall("primary", "charge", "declined"),
        ProviderCall("primary", "charge", "rejected"),
        ProviderCall("primary", "charge", "circuit_open"),
    ]


# --- what must never be failed ---------------------------------------------------------


async def test_a_refusal_after_an_unanswered_try_keeps_the_payment_pending(world: World) -> None:
    """The first try may have landed (a timeout); a refusal of the second does not
    prove the provider has nothing: failing it could lose a charge."""
    world.primary.then(HANG, ProviderRejected("No such PaymentIntent"))
    payment = await world.charge()
    assert payment.status is PaymentStatus.PENDING


async def test_a_refusal_on_a_later_drive_keeps_the_payment_pending(world: World) -> None:
    world.primary.then(down(), down(), down())
    assert (await world.charge()).status is PaymentStatus.PENDING
    world.primary.then(ProviderRejected("401: key rotated"))
    again = await world.charge()
    assert again.status is PaymentStatus.PENDING
    assert again.attempts == 2


async def test_a_payment_past_the_resend_window_is_not_sent_again(world: World) -> None:
    world.primary.then(down(), down(), down())
    assert (await world.charge()).status is PaymentStatus.PENDING
    calls = len(world.primary.calls)
    world.now = START + timedelta(hours=24)
    assert (await world.charge()).status is PaymentStatus.PENDING
    assert len(world.primary.calls) == calls


async def test_an_open_breaker_does_not_fail_a_payment_another_instance_is_sending(
    world: World,
) -> None:
    """Instance B saw attempts 0, then instance A started sending it: B's open
    breaker must not fail it (the update is conditional on attempts 0)."""
    await world.store.create(
        NewPayment(PAY_1, PaymentKind.CHARGE, "primary", 1500, "EUR", "pm_card_visa", "top-up")
    )
    stale = world.store.payments[PAY_1]
    await world.store.start_attempt(PAY_1)  # instance A
    world.open_breaker()
    with pytest.raises(Unavailable):
        await world.gateway._provider_down(stale)  # instance B, with its stale read
    assert world.store.payments[PAY_1].status is PaymentStatus.PENDING
