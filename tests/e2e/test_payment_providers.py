"""Top-ups and withdrawals through Stripe and PayPal, end to end: the edge, the
ledger, the gateway and the providers' official clients, talking to local servers
that speak each provider's wire format (tests/fakes), webhooks included."""

from __future__ import annotations

import httpx

from tests.e2e.people import Bank
from tests.eventually import eventually
from tests.fakes.paypal_api import FakePayPal
from tests.fakes.stripe_api import FakeStripe


def test_stripe_top_up_decline_and_payout(bank: Bank, fake_stripe: FakeStripe) -> None:
    ada, wallet = bank.funded_person("stripe", 0)
    created = fake_stripe.payment_intents_created

    paid = bank.top_up(ada, wallet, 1_999, "pm_card_visa", provider="stripe")
    assert paid.status_code == 200, paid.text
    transaction = paid.json()["transaction"]
    assert transaction["status"] == "TRANSACTION_STATUS_POSTED"
    assert transaction["payment_provider"] == "stripe"
    # Stripe saw our transaction id as the idempotency key and in the metadata.
    intent = next(
        i
        for i in fake_stripe.payment_intents.values()
        if i["metadata"].get("payment_id") == transaction["transaction_id"]
    )
    assert intent["amount"] == 1_999
    assert intent["status"] == "succeeded"

    declined = bank.top_up(ada, wallet, 500, "pm_card_chargeDeclined", provider="stripe")
    assert declined.status_code == 400, declined.text
    assert declined.json()["details"][0]["reason"] == "GENERIC_DECLINE"
    assert fake_stripe.payment_intents_created == created + 2

    payout = bank.withdraw(ada, wallet, 999, "ba_123456", provider="stripe")
    assert payout.status_code == 200, payout.text
    assert payout.json()["transaction"]["status"] == "TRANSACTION_STATUS_POSTED"
    assert bank.balance(ada, wallet) == (1_000, 1_000)


def test_stripe_processing_charge_settles_by_its_signed_webhook(
    bank: Bank, rest: httpx.Client, fake_stripe: FakeStripe
) -> None:
    ada, wallet = bank.funded_person("stripewebhook", 0)
    response = bank.top_up(ada, wallet, 4_000, "pm_card_processing", provider="stripe")
    assert response.status_code == 200, response.text
    transaction_id = response.json()["transaction"]["transaction_id"]
    assert response.json()["transaction"]["status"] == "TRANSACTION_STATUS_PENDING"
    intent_id = next(
        i["id"]
        for i in fake_stripe.payment_intents.values()
        if i["metadata"].get("payment_id") == transaction_id
    )
    succeeded = fake_stripe.settle(intent_id, "succeeded")
    body = fake_stripe.event("payment_intent.succeeded", succeeded)

    forged = rest.post(
        "/v1/webhooks/stripe",
        content=body,
        headers={"stripe-signature": fake_stripe.sign_webhook(body, secret="whsec_wrong")},
    )
    assert forged.status_code == 401, forged.text
    delivered = [
        rest.post(
            "/v1/webhooks/stripe",
            content=body,
            headers={
                "content-type": "application/json",
                "stripe-signature": fake_stripe.sign_webhook(body),
            },
        )
        for _ in range(2)
    ]
    assert [d.status_code for d in delivered] == [200, 200], [d.text for d in delivered]
    assert [d.json()["applied"] for d in delivered] == [True, False]
    eventually(
        lambda: bank.transaction(ada, transaction_id)["status"] == "TRANSACTION_STATUS_POSTED",
        "the webhook's credit",
        timeout=10,
    )
    assert bank.balance(ada, wallet) == (4_000, 4_000)


def test_paypal_order_capture_decline_and_payout(bank: Bank, fake_paypal: FakePayPal) -> None:
    ada, wallet = bank.funded_person("paypal", 0)
    order = fake_paypal.approved_order("12.34", "EUR")
    paid = bank.top_up(ada, wallet, 1_234, order, provider="paypal")
    assert paid.status_code == 200, paid.text
    assert paid.json()["transaction"]["status"] == "TRANSACTION_STATUS_POSTED"
    assert fake_paypal.capture_of(order) != ""

    refused_order = fake_paypal.approved_order("5.00", "EUR", outcome="declined")
    declined = bank.top_up(ada, wallet, 500, refused_order, provider="paypal")
    assert declined.status_code == 400, declined.text
    assert declined.json()["details"][0]["reason"] == "INSTRUMENT_DECLINED"

    # An approved order for another amount cannot fund this top-up.
    small = fake_paypal.approved_order("1.00", "EUR")
    mismatch = bank.top_up(ada, wallet, 10_000, small, provider="paypal")
    assert mismatch.status_code == 400, mismatch.text
    assert fake_paypal.capture_of(small) == ""

    # PayPal answers a payout batch PENDING, as it does: the amount is held until the
    # reconciler finds the batch done.
    payout = bank.withdraw(ada, wallet, 234, "ada@example.com", provider="paypal")
    assert payout.status_code == 200, payout.text
    transaction = payout.json()["transaction"]
    assert transaction["status"] == "TRANSACTION_STATUS_PENDING"
    assert bank.balance(ada, wallet) == (1_234, 1_000)
    eventually(
        lambda: (
            bank.transaction(ada, transaction["transaction_id"])["status"]
            == "TRANSACTION_STATUS_POSTED"
        ),
        "the reconciler to find the payout done",
    )
    assert bank.balance(ada, wallet) == (1_000, 1_000)
