"""StripeProvider through the official SDK, unpatched, against the local Stripe server."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from services.gateway.adapters.stripe_provider import StripeProvider
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
from services.localmesh.processes import free_port
from tests.fakes.stripe_api import FakeStripe

pytestmark = [
    # stripe 16.1.0's HTTPXClient posts its form body as `data=<str>`, which httpx 0.28
    # deprecates; the SDK's, not ours.
    pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning"),
]

API_KEY = "sk_test_connector4242424242"
WEBHOOK_SECRET = "whsec_connector_tests"


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe(api_key=API_KEY, webhook_secret=WEBHOOK_SECRET) as server:
        yield server


@pytest.fixture
async def provider(fake: FakeStripe) -> AsyncIterator[StripeProvider]:
    stripe_provider = StripeProvider(API_KEY, WEBHOOK_SECRET, fake.url, timeout_seconds=5)
    yield stripe_provider
    await stripe_provider.aclose()


def charge(payment_method: str = "pm_card_visa", amount: int = 2_500) -> ChargeRequest:
    return ChargeRequest(
        payment_id=str(uuid.uuid4()),
        amount=amount,
        currency="EUR",
        payment_method=payment_method,
        description="wallet top-up",
    )


def payout(destination: str = "ba_1234567890", amount: int = 1_000) -> PayoutRequest:
    return PayoutRequest(str(uuid.uuid4()), amount, "EUR", destination, "withdrawal")


# -- charges -------------------------------------------------------------------------------


async def test_a_charge_succeeds_and_goes_over_the_wire_as_stripe_expects(
    provider: StripeProvider, fake: FakeStripe
) -> None:
    request = charge()

    result = await provider.create_charge(request)

    assert result.status is PaymentStatus.SUCCEEDED
    assert result.reference.startswith("pi_")
    assert fake.payment_intents[result.reference]["status"] == "succeeded"
    [sent] = fake.requests_to("POST", "/v1/payment_intents")
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.headers["idempotency-key"] == request.payment_id
    assert sent.form["amount"] == "2500"
    assert sent.form["currency"] == "eur"
    assert sent.form["confirm"] == "true"
    assert sent.form["payment_method"] == "pm_card_visa"
    assert sent.form["automatic_payment_methods[enabled]"] == "true"
    assert sent.form["automatic_payment_methods[allow_redirects]"] == "never"
    assert sent.form["metadata[payment_id]"] == request.payment_id
    assert sent.form["description"] == "wallet top-up"


@pytest.mark.parametrize(
    ("payment_method", "failure_code", "failure_message"),
    [
        ("pm_card_chargeDeclined", "generic_decline", "Your card was declined."),
        (
            "pm_card_chargeDeclinedInsufficientFunds",
            "insufficient_funds",
            "Your card has insufficient funds.",
        ),
    ],
)
async def test_a_declined_card_is_a_failed_payment_not_an_error(
    provider: StripeProvider,
    fake: FakeStripe,
    payment_method: str,
    failure_code: str,
    failure_message: str,
) -> None:
    result = await provider.create_charge(charge(payment_method))

    assert result.status is PaymentStatus.FAILED
    assert result.failure_code == failure_code
    assert result.failure_message == failure_message
    assert fake.payment_intents[result.reference]["status"] == "requires_payment_method"
    [sent] = fake.requests_to("POST", "/v1/payment_intents")
    assert sent.status == 402


async def test_the_same_payment_id_twice_creates_one_payment_intent(
    provider: StripeProvider, fake: FakeStripe
) -> None:
    request = charge()

    first = await provider.create_charge(request)
    second = await provider.create_charge(request)

    assert second == first
    assert fake.payment_intents_created == 1
    assert fake.idempotent_replays == 1
    assert [r.replayed for r in fake.requests_to("POST", "/v1/payment_intents")] == [False, True]


async def test_a_replayed_decline_is_the_same_decline(
    provider: StripeProvider, fake: FakeStripe
) -> None:
    request = charge("pm_card_chargeDeclinedInsufficientFunds")

    first = await provider.create_charge(request)
    second = await provider.create_charge(request)

    assert second == first
    assert first.failure_code == "insufficient_funds"
    assert fake.payment_intents_created == 1


async def test_the_same_payment_id_with_other_parameters_is_rejected(
    provider: StripeProvider, fake: FakeStripe
) -> None:
    request = charge(amount=2_500)
    await provider.create_charge(request)

    with pytest.raises(ProviderRejected, match="IdempotencyError"):
        await provider.create_charge(
            ChargeRequest(request.payment_id, 9_999, "EUR", "pm_card_visa", "wallet top-up")
        )
    assert fake.payment_intents_created == 1


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_a_server_error_is_unavailable_and_the_retry_charges_once(
    provider: StripeProvider, fake: FakeStripe, status: int
) -> None:
    request = charge()
    fake.fail_next(1, status=status)

    with pytest.raises(ProviderUnavailable) as raised:
        await provider.create_charge(request)
    assert raised.value.retryable
    assert fake.payment_intents_created == 0

    retried = await provider.create_charge(request)
    assert retried.status is PaymentStatus.SUCCEEDED
    assert fake.payment_intents_created == 1


async def test_an_outage_is_unavailable(provider: StripeProvider, fake: FakeStripe) -> None:
    fake.outage(True)
    with pytest.raises(ProviderUnavailable):
        await provider.create_charge(charge())
    with pytest.raises(ProviderUnavailable):
        await provider.retrieve(PaymentKind.CHARGE, "pi_anything")
    assert fake.payment_intents_created == 0
    assert {r.status for r in fake.requests} == {0}

    fake.outage(False)
    assert (await provider.create_charge(charge())).status is PaymentStatus.SUCCEEDED


async def test_a_refused_connection_is_unavailable() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    stripe_provider = StripeProvider(API_KEY, WEBHOOK_SECRET, closed, timeout_seconds=5)
    try:
        with pytest.raises(ProviderUnavailable):
            await stripe_provider.create_charge(charge())
    finally:
        await stripe_provider.aclose()


async def test_a_timeout_after_stripe_acted_is_unavailable_and_the_retry_replays(
    fake: FakeStripe,
) -> None:
    stripe_provider = StripeProvider(API_KEY, WEBHOOK_SECRET, fake.url, timeout_seconds=0.3)
    request = charge()
    fake.stall_next(1)
    try:
        with pytest.raises(ProviderUnavailable):
            await stripe_provider.create_charge(request)
        assert fake.payment_intents_created == 1  # Stripe charged, the answer was lost
        fake.release()

        retried = await stripe_provider.create_charge(request)
    finally:
        fake.release()
        await stripe_provider.aclose()

    assert retried.status is PaymentStatus.SUCCEEDED
    assert retried.reference in fake.payment_intents
    assert fake.payment_intents_created == 1
    assert fake.idempotent_replays == 1


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(ChargeRequest(str(uuid.uuid4()), 2_500, "ZZZ", "pm_card_visa"), id="currency"),
        pytest.param(ChargeRequest(str(uuid.uuid4()), 0, "EUR", "pm_card_visa"), id="amount"),
        pytest.param(ChargeRequest(str(uuid.uuid4()), 2_500, "EUR", "pm_unknown"), id="method"),
    ],
)
async def test_a_malformed_charge_is_rejected(
    provider: StripeProvider, fake: FakeStripe, request_: ChargeRequest
) -> None:
    with pytest.raises(ProviderRejected) as raised:
        await provider.create_charge(request_)
    assert not raised.value.retryable
    assert fake.payment_intents_created == 0
    [sent] = fake.requests_to("POST", "/v1/payment_intents")
    assert sent.status == 400


@pytest.mark.parametrize(
    ("kind", "reference"),
    [
        (PaymentKind.CHARGE, "pi_doesnotexist"),
        (PaymentKind.PAYOUT, "po_doesnotexist"),
        (PaymentKind.REFUND, "re_doesnotexist"),
    ],
)
async def test_an_unknown_reference_is_rejected(
    provider: StripeProvider, fake: FakeStripe, kind: PaymentKind, reference: str
) -> None:
    with pytest.raises(ProviderRejected, match="resource_missing"):
        await provider.retrieve(kind, reference)
    assert [r.status for r in fake.requests] == [404]


async def test_an_empty_reference_is_rejected_without_a_request(
    provider: StripeProvider, fake: FakeStripe
) -> None:
    with pytest.raises(ProviderRejected):
        await provider.retrieve(PaymentKind.PAYOUT, "")
    assert fake.requests == []


async def test_a_wrong_api_key_is_rejected_and_never_echoed(fake: FakeStripe) -> None:
    wrong_key = "sk_test_wrongkey0987654321"
    stripe_provider = StripeProvider(wrong_key, WEBHOOK_SECRET, fake.url, timeout_seconds=5)
    try:
        with pytest.raises(ProviderRejected) as raised:
            await stripe_provider.create_charge(charge())
    finally:
        await stripe_provider.aclose()
    assert "AuthenticationError" in str(raised.value)
    assert "wrongkey" not in str(raised.value)
    assert "0987654321" not in str(raised.value)
    assert fake.payment_intents_created == 0


async def test_a_processing_charge_is_pending_until_stripe_settles_it(
    provider: StripeProvider, fake: FakeStripe
) -> None:
    created = await provider.create_charge(charge("pm_card_processing"))
    assert created.status is PaymentStatus.PENDING

    still = await provider.retrieve(PaymentKind.CHARGE, created.reference)
    assert still == ProviderPayment(created.reference, PaymentStatus.PENDING)

    fake.settle(created.reference, "succeeded")
    settled = await provider.retrieve(PaymentKind.CHARGE, created.reference)
    assert settled == ProviderPayment(created.reference, PaymentStatus.SUCCEEDED)


async def test_a_canceled_charge_is_failed(provider: StripeProvider, fake: FakeStripe) -> None:
    created = await provider.create_charge(charge("pm_card_processing"))
    fake.settle(created.reference, "canceled", cancellation_reason="abandoned")

    found = await provider.retrieve(PaymentKind.CHARGE, created.reference)

    assert found.status is PaymentStatus.FAILED
    assert found.failure_code == "abandoned"


# -- payouts -------------------------------------------------------------------------------


async def test_a_payout_is_paid(provider: StripeProvider, fake: FakeStripe) -> None:
    request = payout()

    result = await provider.create_payout(request)

    assert result.status is PaymentStatus.SUCCEEDED
    assert result.reference.startswith("po_")
    stored = fake.payouts[result.reference]
    assert (stored["amount"], stored["currency"], stored["destination"]) == (
        1_000,
        "eur",
        "ba_1234567890",
    )
    assert stored["metadata"] == {"payment_id": request.payment_id}
    [sent] = fake.requests_to("POST", "/v1/payouts")
    assert sent.headers["idempotency-key"] == request.payment_id
    assert await provider.retrieve(PaymentKind.PAYOUT, result.reference) == result


async def test_a_payout_to_a_closed_account_fails(
    provider: StripeProvider, fake: FakeStripe
) -> None:
    result = await provider.create_payout(payout("ba_fails"))

    assert result.status is PaymentStatus.FAILED
    assert result.failure_code == "account_closed"
    assert result.failure_message
    assert fake.payouts[result.reference]["status"] == "failed"


async def test_a_payout_sent_twice_pays_once(provider: StripeProvider, fake: FakeStripe) -> None:
    request = payout()

    first = await provider.create_payout(request)
    second = await provider.create_payout(request)

    assert first == second
    assert fake.payouts_created == 1


async def test_a_payout_to_an_unknown_destination_is_rejected(
    provider: StripeProvider, fake: FakeStripe
) -> None:
    with pytest.raises(ProviderRejected):
        await provider.create_payout(payout("acct_nothing"))
    assert fake.payouts_created == 0


async def test_an_in_transit_payout_is_pending(provider: StripeProvider, fake: FakeStripe) -> None:
    created = await provider.create_payout(payout())
    fake.settle(created.reference, "in_transit")

    assert (await provider.retrieve(PaymentKind.PAYOUT, created.reference)).status is (
        PaymentStatus.PENDING
    )


# -- refunds -------------------------------------------------------------------------------


async def test_a_refund_succeeds_once_and_no_more_than_the_charge(
    provider: StripeProvider, fake: FakeStripe
) -> None:
    charged = await provider.create_charge(charge(amount=2_500))
    request = RefundRequest(str(uuid.uuid4()), charged.reference, 1_000, "EUR")

    refunded = await provider.refund(request)
    again = await provider.refund(request)

    assert refunded.status is PaymentStatus.SUCCEEDED
    assert refunded.reference.startswith("re_")
    assert again == refunded
    assert fake.refunds_created == 1
    stored = fake.refunds[refunded.reference]
    assert (stored["payment_intent"], stored["amount"]) == (charged.reference, 1_000)
    assert stored["metadata"] == {"payment_id": request.payment_id}
    assert await provider.retrieve(PaymentKind.REFUND, refunded.reference) == refunded

    with pytest.raises(ProviderRejected, match="amount_too_large"):
        await provider.refund(RefundRequest(str(uuid.uuid4()), charged.reference, 2_000, "EUR"))
    assert fake.refunds_created == 1


async def test_refunding_a_declined_charge_is_rejected(
    provider: StripeProvider, fake: FakeStripe
) -> None:
    declined = await provider.create_charge(charge("pm_card_chargeDeclined"))

    with pytest.raises(ProviderRejected):
        await provider.refund(RefundRequest(str(uuid.uuid4()), declined.reference, 100, "EUR"))
    assert fake.refunds_created == 0


async def test_a_failed_refund_is_failed(provider: StripeProvider, fake: FakeStripe) -> None:
    charged = await provider.create_charge(charge())
    refunded = await provider.refund(
        RefundRequest(str(uuid.uuid4()), charged.reference, 500, "EUR")
    )
    fake.settle(refunded.reference, "failed", failure_reason="expired_or_canceled_card")

    found = await provider.retrieve(PaymentKind.REFUND, refunded.reference)

    assert found.status is PaymentStatus.FAILED
    assert found.failure_code == "expired_or_canceled_card"


# -- webhooks ------------------------------------------------------------------------------


async def test_a_signed_payment_intent_event_is_read(
    provider: StripeProvider, fake: FakeStripe
) -> None:
    request = charge()
    charged = await provider.create_charge(request)
    body = fake.event(
        "payment_intent.succeeded", fake.payment_intents[charged.reference], event_id="evt_1"
    )

    event = await provider.parse_webhook(body, {"stripe-signature": fake.sign_webhook(body)})

    assert event == WebhookEvent(
        event_id="evt_1",
        kind=PaymentKind.CHARGE,
        payment_id=request.payment_id,
        payment=ProviderPayment(charged.reference, PaymentStatus.SUCCEEDED),
    )


async def test_a_payment_failed_event_carries_the_decline(
    provider: StripeProvider, fake: FakeStripe
) -> None:
    request = charge("pm_card_chargeDeclinedInsufficientFunds")
    declined = await provider.create_charge(request)
    body = fake.event("payment_intent.payment_failed", fake.payment_intents[declined.reference])

    event = await provider.parse_webhook(body, {"stripe-signature": fake.sign_webhook(body)})

    assert event is not None
    assert (event.kind, event.payment_id) == (PaymentKind.CHARGE, request.payment_id)
    assert event.payment.status is PaymentStatus.FAILED
    assert event.payment.failure_code == "insufficient_funds"
    assert event.payment.reference == declined.reference


async def test_payout_and_refund_events_are_read(
    provider: StripeProvider, fake: FakeStripe
) -> None:
    paid_out = payout("ba_fails")
    failed = await provider.create_payout(paid_out)
    charged = await provider.create_charge(charge())
    refund_request = RefundRequest(str(uuid.uuid4()), charged.reference, 700, "EUR")
    refunded = await provider.refund(refund_request)

    payout_body = fake.event("payout.failed", fake.payouts[failed.reference])
    refund_body = fake.event("charge.refund.updated", fake.refunds[refunded.reference])
    payout_event = await provider.parse_webhook(
        payout_body, {"stripe-signature": fake.sign_webhook(payout_body)}
    )
    refund_event = await provider.parse_webhook(
        refund_body, {"stripe-signature": fake.sign_webhook(refund_body)}
    )

    assert payout_event is not None
    assert (payout_event.kind, payout_event.payment_id) == (
        PaymentKind.PAYOUT,
        paid_out.payment_id,
    )
    assert payout_event.payment.failure_code == "account_closed"
    assert refund_event is not None
    assert (refund_event.kind, refund_event.payment_id) == (
        PaymentKind.REFUND,
        refund_request.payment_id,
    )
    assert refund_event.payment == ProviderPayment(refunded.reference, PaymentStatus.SUCCEEDED)


async def test_a_tampered_body_is_refused(provider: StripeProvider, fake: FakeStripe) -> None:
    body = fake.event("payment_intent.succeeded", {"id": "pi_1", "object": "payment_intent"})
    signature = fake.sign_webhook(body)
    tampered = body.replace(b'"pi_1"', b'"pi_2"')

    with pytest.raises(WebhookSignatureInvalid):
        await provider.parse_webhook(tampered, {"stripe-signature": signature})


async def test_a_signature_with_another_secret_is_refused(
    provider: StripeProvider, fake: FakeStripe
) -> None:
    body = fake.event("payment_intent.succeeded", {"id": "pi_1", "object": "payment_intent"})

    with pytest.raises(WebhookSignatureInvalid):
        await provider.parse_webhook(
            body, {"stripe-signature": fake.sign_webhook(body, secret="whsec_someone_else")}
        )


async def test_an_old_signature_is_refused(provider: StripeProvider, fake: FakeStripe) -> None:
    body = fake.event("payment_intent.succeeded", {"id": "pi_1", "object": "payment_intent"})
    stale = fake.sign_webhook(body, timestamp=int(time.time()) - 3_600)

    with pytest.raises(WebhookSignatureInvalid, match="tolerance"):
        await provider.parse_webhook(body, {"stripe-signature": stale})


@pytest.mark.parametrize("headers", [{}, {"stripe-signature": "garbage"}])
async def test_a_missing_or_unreadable_signature_is_refused(
    provider: StripeProvider, fake: FakeStripe, headers: dict[str, str]
) -> None:
    body = fake.event("payment_intent.succeeded", {"id": "pi_1", "object": "payment_intent"})

    with pytest.raises(WebhookSignatureInvalid):
        await provider.parse_webhook(body, headers)


async def test_a_signed_body_that_is_not_an_event_is_refused(
    provider: StripeProvider, fake: FakeStripe
) -> None:
    body = b"not json"

    with pytest.raises(WebhookSignatureInvalid):
        await provider.parse_webhook(body, {"stripe-signature": fake.sign_webhook(body)})


async def test_events_the_gateway_does_not_act_on_are_none(
    provider: StripeProvider, fake: FakeStripe
) -> None:
    charged = await provider.create_charge(charge())
    ours = fake.payment_intents[charged.reference]
    foreign = {**ours, "metadata": {}}  # a payment made outside the gateway

    for body in (
        fake.event("customer.created", {"id": "cus_1", "object": "customer", "metadata": {}}),
        fake.event("payment_intent.created", ours),
        fake.event("payment_intent.succeeded", foreign),
    ):
        assert (
            await provider.parse_webhook(body, {"stripe-signature": fake.sign_webhook(body)})
            is None
        )
