"""The PayPal connector over real HTTP against a local server speaking PayPal's wire
format (tests/fakes/paypal_api.py): OAuth, order capture, payouts, refunds, lookups,
webhook verification, and the error contract the retry policy and the circuit breaker
rely on."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from services.gateway.adapters.paypal_provider import PayPalProvider
from services.gateway.domain.providers import (
    ChargeRequest,
    PaymentKind,
    PaymentStatus,
    PayoutRequest,
    ProviderPayment,
    ProviderRejected,
    ProviderUnavailable,
    RefundRequest,
    WebhookSignatureInvalid,
)
from tests.fakes.paypal_api import CLIENT_ID, CLIENT_SECRET, WEBHOOK_ID, FakePayPal

TOKEN_PATH = "/v1/oauth2/token"
PAYOUTS_PATH = "/v1/payments/payouts"


class ManualClock:
    """Monotonic seconds that move only when a test says so (token expiry)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def paypal() -> Iterator[FakePayPal]:
    with FakePayPal() as fake:
        yield fake


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def provider(paypal: FakePayPal, clock: ManualClock) -> AsyncIterator[PayPalProvider]:
    connector = PayPalProvider(
        CLIENT_ID, CLIENT_SECRET, WEBHOOK_ID, paypal.base_url, timeout_seconds=5, clock=clock
    )
    yield connector
    await connector.aclose()


def new_id() -> str:
    return str(uuid.uuid4())


def charge_for(order_id: str, payment_id: str, amount: int = 1050) -> ChargeRequest:
    return ChargeRequest(
        payment_id=payment_id, amount=amount, currency="EUR", payment_method=order_id
    )


async def captured(
    provider: PayPalProvider, paypal: FakePayPal, amount: int = 1050
) -> tuple[str, ProviderPayment]:
    """A completed charge of `amount` EUR cents: (payment_id, payment)."""
    payment_id = new_id()
    value = f"{amount // 100}.{amount % 100:02d}"
    order_id = paypal.approved_order(value, "EUR", custom_id=payment_id)
    payment = await provider.create_charge(charge_for(order_id, payment_id, amount))
    assert payment.status is PaymentStatus.SUCCEEDED
    return payment_id, payment


def bearer_tokens(paypal: FakePayPal) -> set[str]:
    return {r.headers.get("authorization", "") for r in paypal.requests if r.path != TOKEN_PATH}


# -- OAuth ----------------------------------------------------------------------------


async def test_the_token_is_fetched_once_and_reused(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    _, first = await captured(provider, paypal)
    await captured(provider, paypal)
    await provider.retrieve(PaymentKind.CHARGE, first.reference)

    assert paypal.counters["token_requests"] == 1
    (token_request,) = paypal.requests_to(TOKEN_PATH)
    credentials = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert token_request.headers["authorization"] == f"Basic {credentials}"
    assert token_request.body == b"grant_type=client_credentials"
    (authorization,) = bearer_tokens(paypal)  # one token on every API call
    assert authorization.startswith("Bearer A21AA")


async def test_the_token_is_renewed_shortly_before_it_expires(
    provider: PayPalProvider, paypal: FakePayPal, clock: ManualClock
) -> None:
    await captured(provider, paypal)
    clock.now += paypal.token_ttl_seconds - 300 - 1  # just inside the refresh margin
    await captured(provider, paypal)
    assert paypal.counters["token_requests"] == 1

    clock.now += 2
    await captured(provider, paypal)
    assert paypal.counters["token_requests"] == 2
    assert len(bearer_tokens(paypal)) == 2


async def test_a_revoked_token_is_replaced_once_and_the_call_goes_through(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    await captured(provider, paypal)
    paypal.revoke_tokens()

    await captured(provider, paypal)

    assert paypal.counters["unauthorized"] == 1
    assert paypal.counters["token_requests"] == 2
    assert paypal.counters["captures"] == 2


async def test_bad_credentials_are_rejected_without_leaking_the_secret(
    paypal: FakePayPal,
) -> None:
    secret = "s3cr3t-that-must-not-leak"
    connector = PayPalProvider(CLIENT_ID, secret, WEBHOOK_ID, paypal.base_url, 5)
    order_id = paypal.approved_order("10.50", "EUR")
    try:
        with pytest.raises(ProviderRejected) as caught:
            await connector.create_charge(charge_for(order_id, new_id()))
    finally:
        await connector.aclose()

    assert "invalid_client" in str(caught.value)
    assert secret not in str(caught.value)
    assert not caught.value.retryable
    assert paypal.counters["capture_attempts"] == 0


async def test_an_oauth_outage_is_unavailable(provider: PayPalProvider, paypal: FakePayPal) -> None:
    paypal.fail_next(1, status=503, path=TOKEN_PATH)
    order_id = paypal.approved_order("10.50", "EUR")

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.create_charge(charge_for(order_id, new_id()))

    assert caught.value.retryable
    assert "503" in str(caught.value)
    assert paypal.counters["capture_attempts"] == 0


# -- charges (order capture) ---------------------------------------------------------


async def test_a_capture_succeeds_and_its_reference_is_the_capture_id(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    payment_id = new_id()
    order_id = paypal.approved_order("10.50", "EUR", custom_id=payment_id)

    payment = await provider.create_charge(charge_for(order_id, payment_id))

    assert payment == ProviderPayment(paypal.capture_of(order_id), PaymentStatus.SUCCEEDED)
    assert payment.reference != order_id
    assert paypal.capture(payment.reference)["custom_id"] == payment_id
    (capture_request,) = paypal.requests_to(f"/v2/checkout/orders/{order_id}/capture")
    assert capture_request.headers["paypal-request-id"] == payment_id
    assert capture_request.headers["prefer"] == "return=representation"


@pytest.mark.parametrize(
    "issue", ["INSTRUMENT_DECLINED", "PAYER_ACTION_REQUIRED", "TRANSACTION_REFUSED"]
)
async def test_a_refused_capture_is_a_failed_charge(
    provider: PayPalProvider, paypal: FakePayPal, issue: str
) -> None:
    order_id = paypal.approved_order("10.50", "EUR", outcome="declined", decline_issue=issue)

    payment = await provider.create_charge(charge_for(order_id, new_id()))

    assert payment.status is PaymentStatus.FAILED
    assert payment.failure_code == issue.lower()
    assert payment.failure_message
    assert payment.reference == ""
    assert paypal.counters["captures"] == 0


async def test_a_capture_declined_by_the_processor_is_a_failed_charge(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    order_id = paypal.approved_order("10.50", "EUR", outcome="capture_declined")

    payment = await provider.create_charge(charge_for(order_id, new_id()))

    assert payment.status is PaymentStatus.FAILED
    assert payment.failure_code == "declined"
    assert payment.reference == paypal.capture_of(order_id)


async def test_a_pending_capture_is_pending_until_paypal_settles_it(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    order_id = paypal.approved_order("10.50", "EUR", outcome="pending")

    payment = await provider.create_charge(charge_for(order_id, new_id()))
    assert payment.status is PaymentStatus.PENDING
    assert payment.reference == paypal.capture_of(order_id)
    still = await provider.retrieve(PaymentKind.CHARGE, payment.reference)
    assert still.status is PaymentStatus.PENDING

    paypal.settle_capture(payment.reference)
    settled = await provider.retrieve(PaymentKind.CHARGE, payment.reference)
    assert settled == ProviderPayment(payment.reference, PaymentStatus.SUCCEEDED)


async def test_the_same_payment_twice_captures_once(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    payment_id = new_id()
    order_id = paypal.approved_order("10.50", "EUR", custom_id=payment_id)

    first = await provider.create_charge(charge_for(order_id, payment_id))
    second = await provider.create_charge(charge_for(order_id, payment_id))

    assert second == first
    assert paypal.counters["captures"] == 1
    assert paypal.counters["idempotent_replays"] == 1


async def test_a_capture_paypal_no_longer_remembers_is_found_by_its_custom_id(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    payment_id = new_id()
    order_id = paypal.approved_order("10.50", "EUR", custom_id=payment_id)
    first = await provider.create_charge(charge_for(order_id, payment_id))
    paypal.forget_request_ids()

    again = await provider.create_charge(charge_for(order_id, payment_id))

    assert again == first
    assert paypal.counters["captures"] == 1


async def test_an_order_reused_for_another_payment_never_pays_twice(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    order_id = paypal.approved_order("10.50", "EUR")  # no custom_id: nothing ties it
    assert (await provider.create_charge(charge_for(order_id, new_id()))).status is (
        PaymentStatus.SUCCEEDED
    )

    reused = await provider.create_charge(charge_for(order_id, new_id()))

    assert reused.status is PaymentStatus.FAILED
    assert reused.failure_code == "order_already_captured"
    assert paypal.counters["captures"] == 1


async def test_an_order_for_another_amount_or_payment_is_not_captured(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    payment_id = new_id()
    cheap = paypal.approved_order("1.00", "EUR", custom_id=payment_id)
    someone_elses = paypal.approved_order("10.50", "EUR", custom_id=new_id())

    too_much = await provider.create_charge(charge_for(cheap, payment_id, amount=10_000))
    not_ours = await provider.create_charge(charge_for(someone_elses, payment_id))

    assert too_much.status is PaymentStatus.FAILED
    assert too_much.failure_code == "order_mismatch"
    assert not_ours.status is PaymentStatus.FAILED
    assert not_ours.failure_code == "order_mismatch"
    assert paypal.counters["capture_attempts"] == 0


async def test_an_unknown_order_is_rejected(provider: PayPalProvider, paypal: FakePayPal) -> None:
    with pytest.raises(ProviderRejected) as caught:
        await provider.create_charge(charge_for("NOSUCHORDER00000", new_id()))

    assert "RESOURCE_NOT_FOUND" in str(caught.value)
    assert not caught.value.retryable


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_a_capture_answered_with_5xx_or_429_is_unavailable_and_captures_nothing(
    provider: PayPalProvider, paypal: FakePayPal, status: int
) -> None:
    payment_id = new_id()
    order_id = paypal.approved_order("10.50", "EUR", custom_id=payment_id)
    paypal.fail_next(1, status=status, path=f"/v2/checkout/orders/{order_id}/capture")

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.create_charge(charge_for(order_id, payment_id))

    assert caught.value.retryable
    assert str(status) in str(caught.value)
    assert paypal.counters["captures"] == 0
    (authorization,) = bearer_tokens(paypal)
    assert authorization.removeprefix("Bearer ") not in str(caught.value)
    # The retry, with the same idempotency key, captures once.
    retried = await provider.create_charge(charge_for(order_id, payment_id))
    assert retried.status is PaymentStatus.SUCCEEDED
    assert paypal.counters["captures"] == 1


async def test_an_outage_is_unavailable(provider: PayPalProvider, paypal: FakePayPal) -> None:
    await captured(provider, paypal)  # a token in hand: the outage hits the API call
    order_id = paypal.approved_order("10.50", "EUR")
    paypal.outage(on=True)

    with pytest.raises(ProviderUnavailable):
        await provider.create_charge(charge_for(order_id, new_id()))

    assert paypal.counters["dropped"] >= 1
    paypal.outage(on=False)
    recovered = await provider.create_charge(charge_for(order_id, new_id()))
    assert recovered.status is PaymentStatus.SUCCEEDED


async def test_a_timeout_is_unavailable(paypal: FakePayPal) -> None:
    connector = PayPalProvider(CLIENT_ID, CLIENT_SECRET, WEBHOOK_ID, paypal.base_url, 0.3)
    order_id = paypal.approved_order("10.50", "EUR")
    paypal.stall_next(1)
    try:
        with pytest.raises(ProviderUnavailable) as caught:
            await connector.create_charge(charge_for(order_id, new_id()))
    finally:
        paypal.release()
        await connector.aclose()

    assert "no answer within 0.3s" in str(caught.value)
    assert paypal.counters["stalled"] == 1
    assert paypal.counters["captures"] == 0


async def test_a_refused_connection_is_unavailable() -> None:
    with FakePayPal() as gone:
        base_url = gone.base_url  # a port nothing listens on once stopped
    connector = PayPalProvider(CLIENT_ID, CLIENT_SECRET, WEBHOOK_ID, base_url, 5)
    try:
        with pytest.raises(ProviderUnavailable) as caught:
            await connector.create_charge(charge_for("ANYORDER", new_id()))
    finally:
        await connector.aclose()

    assert "ConnectError" in str(caught.value)


# -- payouts ------------------------------------------------------------------------


async def test_a_payout_to_an_email_is_pending_then_succeeds(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    payment_id = new_id()
    request = PayoutRequest(payment_id, 1234, "EUR", "alice@example.com", "Withdrawal")

    payment = await provider.create_payout(request)

    assert payment.status is PaymentStatus.PENDING
    assert payment.reference
    (sent,) = paypal.requests_to(PAYOUTS_PATH)
    assert sent.headers["paypal-request-id"] == payment_id
    body = sent.json()
    assert body["sender_batch_header"]["sender_batch_id"] == payment_id
    (item,) = body["items"]
    assert item["recipient_type"] == "EMAIL"
    assert item["receiver"] == "alice@example.com"
    assert item["amount"] == {"value": "12.34", "currency": "EUR"}
    settled = await provider.retrieve(PaymentKind.PAYOUT, payment.reference)
    assert settled == ProviderPayment(payment.reference, PaymentStatus.SUCCEEDED)


async def test_a_payout_to_an_unregistered_receiver_fails(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    payment = await provider.create_payout(PayoutRequest(new_id(), 500, "EUR", "bob@fails.example"))

    result = await provider.retrieve(PaymentKind.PAYOUT, payment.reference)

    assert result.status is PaymentStatus.FAILED
    assert result.failure_code == "receiver_unregistered"
    assert result.reference == payment.reference


async def test_a_payout_to_a_paypal_account_id(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    await provider.create_payout(PayoutRequest(new_id(), 500, "USD", "N8T5H2WQ8Y4XU"))

    (sent,) = paypal.requests_to(PAYOUTS_PATH)
    assert sent.json()["items"][0]["recipient_type"] == "PAYPAL_ID"


@pytest.mark.parametrize(
    ("amount", "currency", "value"),
    [
        (1050, "EUR", "10.50"),
        (7, "USD", "0.07"),
        (500, "JPY", "500"),
        (1234, "KWD", "1.234"),
        (150_000, "HUF", "1500"),
    ],
)
async def test_payout_amounts_use_the_currency_exponent(
    provider: PayPalProvider, paypal: FakePayPal, amount: int, currency: str, value: str
) -> None:
    await provider.create_payout(PayoutRequest(new_id(), amount, currency, "carol@example.com"))

    (sent,) = paypal.requests_to(PAYOUTS_PATH)
    assert sent.json()["items"][0]["amount"] == {"value": value, "currency": currency}


async def test_a_fraction_of_a_whole_unit_currency_is_rejected_before_any_call(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    with pytest.raises(ProviderRejected, match="HUF"):
        await provider.create_payout(PayoutRequest(new_id(), 150_050, "HUF", "dan@example.com"))

    assert paypal.counters["requests"] == 0


async def test_the_same_payout_twice_pays_once(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    request = PayoutRequest(new_id(), 1000, "EUR", "erin@example.com")

    first = await provider.create_payout(request)
    second = await provider.create_payout(request)

    assert second == first
    assert paypal.payout_count == 1
    assert paypal.counters["idempotent_replays"] == 1


async def test_a_payout_whose_batch_already_exists_returns_that_batch(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    payment_id = new_id()
    existing = paypal.existing_payout(payment_id, "frank@example.com", "10.00", "EUR")

    payment = await provider.create_payout(
        PayoutRequest(payment_id, 1000, "EUR", "frank@example.com")
    )

    assert payment == ProviderPayment(existing, PaymentStatus.SUCCEEDED)
    assert paypal.counters["duplicate_payouts"] == 1
    assert paypal.payout_count == 1
    assert paypal.requests_to(f"{PAYOUTS_PATH}/{existing}", method="GET")


async def test_a_payout_refused_as_malformed_is_rejected(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    paypal.fail_next(1, status=400, path=PAYOUTS_PATH)
    await captured(provider, paypal)  # token and a charge first: the 400 hits the payout

    with pytest.raises(ProviderRejected) as caught:
        await provider.create_payout(PayoutRequest(new_id(), 1000, "EUR", "gina@example.com"))

    assert "HTTP 400" in str(caught.value)
    assert paypal.payout_count == 0


# -- refunds ------------------------------------------------------------------------


async def test_a_refund_succeeds_once_and_can_be_looked_up(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    _, charge = await captured(provider, paypal, amount=2000)
    refund_id = new_id()
    request = RefundRequest(refund_id, charge.reference, 500, "EUR")

    refund = await provider.refund(request)
    again = await provider.refund(request)

    assert refund.status is PaymentStatus.SUCCEEDED
    assert again == refund
    assert paypal.counters["refunds"] == 1
    stored = paypal.refund(refund.reference)
    assert stored["custom_id"] == refund_id
    assert stored["amount"] == {"currency_code": "EUR", "value": "5.00"}
    assert paypal.capture(charge.reference)["status"] == "PARTIALLY_REFUNDED"
    looked_up = await provider.retrieve(PaymentKind.REFUND, refund.reference)
    assert looked_up == ProviderPayment(refund.reference, PaymentStatus.SUCCEEDED)
    # The charge itself stays a succeeded charge.
    assert (await provider.retrieve(PaymentKind.CHARGE, charge.reference)).status is (
        PaymentStatus.SUCCEEDED
    )


async def test_a_refund_larger_than_the_capture_fails(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    _, charge = await captured(provider, paypal, amount=1000)

    refund = await provider.refund(RefundRequest(new_id(), charge.reference, 1001, "EUR"))

    assert refund.status is PaymentStatus.FAILED
    assert refund.failure_code == "refund_amount_exceeded"
    assert paypal.counters["refunds"] == 0


async def test_a_pending_refund_is_pending(provider: PayPalProvider, paypal: FakePayPal) -> None:
    _, charge = await captured(provider, paypal)
    paypal.refund_status = "PENDING"

    refund = await provider.refund(RefundRequest(new_id(), charge.reference, 1050, "EUR"))

    assert refund.status is PaymentStatus.PENDING
    assert refund.reference


async def test_a_refund_of_an_unknown_capture_is_rejected(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    with pytest.raises(ProviderRejected, match="RESOURCE_NOT_FOUND"):
        await provider.refund(RefundRequest(new_id(), "NOSUCHCAPTURE0000", 100, "EUR"))


# -- webhooks -----------------------------------------------------------------------


async def test_a_capture_webhook_is_verified_and_read(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    payment_id, charge = await captured(provider, paypal)
    body = paypal.capture_webhook(charge.reference)

    event = await provider.parse_webhook(body, paypal.sign_webhook(body))

    assert event is not None
    assert event.event_id == json.loads(body)["id"]
    assert event.event_id.startswith("WH-")
    assert event.kind is PaymentKind.CHARGE
    assert event.payment_id == payment_id
    assert event.payment == ProviderPayment(charge.reference, PaymentStatus.SUCCEEDED)
    assert paypal.counters["webhook_verifications"] == 1
    (verification,) = paypal.requests_to("/v1/notifications/verify-webhook-signature")
    assert verification.json()["webhook_id"] == WEBHOOK_ID


async def test_a_denied_capture_webhook_is_a_failed_charge(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    payment_id = new_id()
    order_id = paypal.approved_order("10.50", "EUR", custom_id=payment_id, outcome="pending")
    charge = await provider.create_charge(charge_for(order_id, payment_id))
    paypal.settle_capture(charge.reference, status="DECLINED")
    body = paypal.capture_webhook(charge.reference, "PAYMENT.CAPTURE.DENIED")

    event = await provider.parse_webhook(body, paypal.sign_webhook(body))

    assert event is not None
    assert event.payment_id == payment_id
    assert event.payment.status is PaymentStatus.FAILED
    assert event.payment.failure_code == "denied"


async def test_a_refund_webhook_is_read(provider: PayPalProvider, paypal: FakePayPal) -> None:
    _, charge = await captured(provider, paypal)
    refund_id = new_id()
    refund = await provider.refund(RefundRequest(refund_id, charge.reference, 1050, "EUR"))
    body = paypal.refund_webhook(refund.reference)

    event = await provider.parse_webhook(body, paypal.sign_webhook(body))

    assert event is not None
    assert event.kind is PaymentKind.REFUND
    assert event.payment_id == refund_id
    assert event.payment == ProviderPayment(refund.reference, PaymentStatus.SUCCEEDED)


async def test_payout_webhooks_carry_the_item_outcome(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    payment_id = new_id()
    payout = await provider.create_payout(
        PayoutRequest(payment_id, 500, "EUR", "hal@fails.example")
    )
    item_body = paypal.payout_item_webhook(payout.reference)
    # A finished batch (SUCCESS) holding a failed item: the item's outcome counts.
    batch_body = paypal.payout_batch_webhook(payout.reference)

    item_event = await provider.parse_webhook(item_body, paypal.sign_webhook(item_body))
    batch_event = await provider.parse_webhook(batch_body, paypal.sign_webhook(batch_body))

    for event in (item_event, batch_event):
        assert event is not None
        assert event.kind is PaymentKind.PAYOUT
        assert event.payment_id == payment_id
        assert event.payment.reference == payout.reference
        assert event.payment.status is PaymentStatus.FAILED
        assert event.payment.failure_code == "receiver_unregistered"
    assert json.loads(item_body)["event_type"] == "PAYMENT.PAYOUTS-ITEM.FAILED"


async def test_a_successful_payout_batch_webhook(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    payment_id = new_id()
    payout = await provider.create_payout(PayoutRequest(payment_id, 500, "EUR", "ivy@example.com"))
    body = paypal.payout_batch_webhook(payout.reference)

    event = await provider.parse_webhook(body, paypal.sign_webhook(body))

    assert event is not None
    assert event.payment_id == payment_id
    assert event.payment == ProviderPayment(payout.reference, PaymentStatus.SUCCEEDED)


async def test_a_tampered_webhook_is_refused(provider: PayPalProvider, paypal: FakePayPal) -> None:
    _, charge = await captured(provider, paypal)
    body = paypal.capture_webhook(charge.reference)
    headers = paypal.sign_webhook(body)
    tampered = body.replace(b'"value": "10.50"', b'"value": "99.50"')
    assert tampered != body

    with pytest.raises(WebhookSignatureInvalid):
        await provider.parse_webhook(tampered, headers)

    assert paypal.counters["webhook_verifications_failed"] == 1


async def test_a_reserialised_webhook_does_not_verify(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    """Why the connector forwards the raw body: same JSON, other bytes, no match."""
    _, charge = await captured(provider, paypal)
    body = paypal.capture_webhook(charge.reference)
    headers = paypal.sign_webhook(body)

    with pytest.raises(WebhookSignatureInvalid):
        await provider.parse_webhook(json.dumps(json.loads(body)).encode(), headers)


async def test_a_webhook_signed_for_another_webhook_is_refused(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    _, charge = await captured(provider, paypal)
    body = paypal.capture_webhook(charge.reference)

    with pytest.raises(WebhookSignatureInvalid):
        await provider.parse_webhook(body, paypal.sign_webhook(body, webhook_id="OTHERHOOK1"))


@pytest.mark.parametrize("dropped", ["paypal-transmission-sig", "paypal-cert-url"])
async def test_a_webhook_without_its_transmission_headers_is_refused_unasked(
    provider: PayPalProvider, paypal: FakePayPal, dropped: str
) -> None:
    body = paypal.webhook_event("PAYMENT.CAPTURE.COMPLETED", "capture", {"id": "X"})
    headers = paypal.sign_webhook(body)
    del headers[dropped]

    with pytest.raises(WebhookSignatureInvalid, match=dropped):
        await provider.parse_webhook(body, headers)

    assert paypal.counters["requests"] == 0


async def test_a_webhook_that_is_not_json_is_refused(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    body = b"not json"

    with pytest.raises(WebhookSignatureInvalid):
        await provider.parse_webhook(body, paypal.sign_webhook(body))


async def test_an_event_the_gateway_does_not_act_on_is_none(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    body = paypal.webhook_event("CHECKOUT.ORDER.APPROVED", "checkout-order", {"id": "5O1"})

    assert await provider.parse_webhook(body, paypal.sign_webhook(body)) is None
    assert paypal.counters["webhook_verifications"] == 1  # verified all the same


async def test_a_capture_webhook_without_our_payment_id_is_none(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    order_id = paypal.approved_order("10.50", "EUR")  # created without a custom_id
    charge = await provider.create_charge(charge_for(order_id, new_id()))
    body = paypal.capture_webhook(charge.reference)

    assert await provider.parse_webhook(body, paypal.sign_webhook(body)) is None


async def test_a_verification_outage_is_unavailable_so_paypal_redelivers(
    provider: PayPalProvider, paypal: FakePayPal
) -> None:
    body = paypal.webhook_event("PAYMENT.CAPTURE.COMPLETED", "capture", {"id": "X"})
    paypal.fail_next(1, status=503, path="/v1/notifications/")

    with pytest.raises(ProviderUnavailable):
        await provider.parse_webhook(body, paypal.sign_webhook(body))
