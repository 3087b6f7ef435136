"""Top-ups and withdrawals through the edge, with the sandbox provider: money in
from a card and out to a bank account, exactly once, whatever the provider does."""

from __future__ import annotations

import uuid

import grpc
import httpx
import psycopg
import pytest

from services.gateway.adapters.sandbox import event_body, sign
from services.gateway.domain.providers import PaymentKind
from services.localmesh.mesh import SANDBOX_WEBHOOK_SECRET, Mesh
from services.runtime.auth import SERVICE_TOKEN_HEADER
from tests.e2e.people import Bank
from tests.e2e.prometheus import scrape_all, total
from tests.eventually import eventually
from wallet.gateway.v1 import gateway_service_pb2 as gateway_pb
from wallet.gateway.v1 import gateway_service_pb2_grpc
from wallet.transaction.v1 import funding_service_pb2 as funding_pb
from wallet.transaction.v1 import funding_service_pb2_grpc, transaction_service_pb2_grpc
from wallet.transaction.v1 import transaction_service_pb2 as pb
from wallet.type.v1 import money_pb2


def sandbox_rows(mesh: Mesh, payment_id: str) -> list[tuple[str, str, int]]:
    """What the sandbox provider itself recorded for a payment: (kind, status, calls)."""
    with psycopg.connect(mesh.postgres.conninfo("payments")) as connection:
        return connection.execute(
            "SELECT kind, status, calls FROM sandbox_payments WHERE idempotency_key = %s",
            (payment_id,),
        ).fetchall()


def postings_of(mesh: Mesh, transaction_id: str) -> int:
    with psycopg.connect(mesh.postgres.conninfo("ledger")) as connection:
        row = connection.execute(
            "SELECT count(*) FROM postings WHERE transaction_id = %s", (transaction_id,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_top_up_with_a_good_card_credits_once_and_has_a_receipt(
    bank: Bank, rest: httpx.Client, mesh: Mesh
) -> None:
    ada, wallet = bank.funded_person("topup", 0)
    key = str(uuid.uuid4())
    first = bank.top_up(ada, wallet, 2_500, "pm_card_visa", key=key)
    assert first.status_code == 200, first.text
    transaction = first.json()["transaction"]
    assert transaction["type"] == "TRANSACTION_TYPE_TOP_UP"
    assert transaction["status"] == "TRANSACTION_STATUS_POSTED"
    assert transaction["payment_provider"] == "sandbox"
    assert transaction["destination_wallet_id"] == wallet
    assert bank.balance(ada, wallet) == (2_500, 2_500)

    # The client retries (lost answer): the same transaction, no second charge.
    again = bank.top_up(ada, wallet, 2_500, "pm_card_visa", key=key)
    assert again.status_code == 200, again.text
    assert again.json()["transaction"]["transaction_id"] == transaction["transaction_id"]
    assert bank.balance(ada, wallet) == (2_500, 2_500)
    assert sandbox_rows(mesh, transaction["transaction_id"]) == [("charge", "succeeded", 1)]
    assert postings_of(mesh, transaction["transaction_id"]) == 2

    receipt = rest.get(
        f"/v1/transactions/{transaction['transaction_id']}/receipt", headers=ada.auth
    )
    assert receipt.status_code == 200, receipt.text
    assert receipt.json()["receipt"]["amount"]["decimal"] == "25.00"
    assert "Top-up" in receipt.json()["text"]


@pytest.mark.parametrize(
    ("card", "reason"),
    [
        ("pm_card_chargeDeclined", "CARD_DECLINED"),
        ("pm_card_chargeDeclinedInsufficientFunds", "INSUFFICIENT_FUNDS"),
    ],
)
def test_a_refused_card_fails_cleanly_with_the_reason_and_moves_no_money(
    bank: Bank, rest: httpx.Client, card: str, reason: str
) -> None:
    ada, wallet = bank.funded_person("declined", 0)
    response = bank.top_up(ada, wallet, 1_000, card)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == 9  # FAILED_PRECONDITION
    assert body["details"][0]["reason"] == reason
    assert bank.balance(ada, wallet) == (0, 0)
    history = rest.get("/v1/transactions", headers=ada.auth).json()["transactions"]
    assert [(t["status"], t["failure_code"]) for t in history] == [
        ("TRANSACTION_STATUS_FAILED", reason.lower())
    ]


def test_withdrawal_pays_out_or_releases_the_hold(bank: Bank, mesh: Mesh) -> None:
    ada, wallet = bank.funded_person("withdraw", 0)
    assert bank.top_up(ada, wallet, 5_000).status_code == 200

    paid = bank.withdraw(ada, wallet, 1_500, "ba_sandbox_ok")
    assert paid.status_code == 200, paid.text
    assert paid.json()["transaction"]["status"] == "TRANSACTION_STATUS_POSTED"
    assert bank.balance(ada, wallet) == (3_500, 3_500)

    refused = bank.withdraw(ada, wallet, 1_000, "ba_sandbox_fails")
    assert refused.status_code == 400, refused.text
    assert refused.json()["details"][0]["reason"] == "ACCOUNT_CLOSED"
    assert bank.balance(ada, wallet) == (3_500, 3_500)  # the hold is released

    too_much = bank.withdraw(ada, wallet, 3_501)
    assert too_much.status_code == 400, too_much.text
    assert too_much.json()["details"][0]["reason"] == "INSUFFICIENT_FUNDS"
    assert bank.balance(ada, wallet) == (3_500, 3_500)


def test_a_slow_payout_holds_the_money_until_it_settles(bank: Bank) -> None:
    ada, wallet = bank.funded_person("slowpayout", 0)
    assert bank.top_up(ada, wallet, 2_000).status_code == 200
    pending = bank.withdraw(ada, wallet, 1_200, "ba_sandbox_delayed")
    assert pending.status_code == 200, pending.text
    transaction = pending.json()["transaction"]
    assert transaction["status"] == "TRANSACTION_STATUS_PENDING"
    # Held: it cannot be spent twice while the payout is on its way.
    assert bank.balance(ada, wallet) == (2_000, 800)
    assert bank.withdraw(ada, wallet, 900).json()["details"][0]["reason"] == "INSUFFICIENT_FUNDS"
    eventually(
        lambda: (
            bank.transaction(ada, transaction["transaction_id"])["status"]
            == "TRANSACTION_STATUS_POSTED"
        ),
        "the payout's webhook",
    )
    assert bank.balance(ada, wallet) == (800, 800)


def test_provider_errors_twice_then_success_charges_and_credits_once(
    bank: Bank, mesh: Mesh
) -> None:
    ada, wallet = bank.funded_person("unstable", 0)
    response = bank.top_up(ada, wallet, 700, "pm_card_unstable")
    assert response.status_code == 200, response.text
    transaction = response.json()["transaction"]
    assert transaction["status"] == "TRANSACTION_STATUS_POSTED"
    # Three calls reached the sandbox (two answered 500), one charge exists.
    assert sandbox_rows(mesh, transaction["transaction_id"]) == [("charge", "succeeded", 3)]
    assert bank.balance(ada, wallet) == (700, 700)


def deliver(
    rest: httpx.Client, body: bytes, secret: str = SANDBOX_WEBHOOK_SECRET
) -> httpx.Response:
    return rest.post(
        "/v1/webhooks/sandbox",
        content=body,
        headers={"content-type": "application/json", "sandbox-signature": sign(secret, body)},
    )


def _event(payment_id: str, status: str, reference: str, event_id: str | None = None) -> bytes:
    row = {"reference": reference, "status": status, "failure_code": "", "failure_message": ""}
    return event_body(event_id or f"evt_{uuid.uuid4().hex}", PaymentKind.CHARGE, payment_id, row)


def _reference(mesh: Mesh, payment_id: str) -> str:
    with psycopg.connect(mesh.postgres.conninfo("payments")) as connection:
        row = connection.execute(
            "SELECT reference FROM sandbox_payments WHERE idempotency_key = %s", (payment_id,)
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_webhooks_three_times_and_out_of_order_credit_once(
    bank: Bank, rest: httpx.Client, mesh: Mesh
) -> None:
    ada, wallet = bank.funded_person("webhooks", 0)
    response = bank.top_up(ada, wallet, 1_100, "pm_card_delayed")
    assert response.status_code == 200, response.text
    transaction_id = response.json()["transaction"]["transaction_id"]
    assert response.json()["transaction"]["status"] == "TRANSACTION_STATUS_PENDING"
    assert bank.balance(ada, wallet) == (0, 0)
    reference = _reference(mesh, transaction_id)
    ignored_before = total(
        scrape_all(mesh, "gateway"), "gateway_webhooks_total", provider="sandbox", result="ignored"
    )

    succeeded = _event(transaction_id, "succeeded", reference, "evt_success_1")
    stale = _event(transaction_id, "pending", reference, "evt_processing_0")
    answers = [deliver(rest, succeeded) for _ in range(3)] + [deliver(rest, stale)]
    assert [a.status_code for a in answers] == [200, 200, 200, 200], [a.text for a in answers]
    assert [a.json()["applied"] for a in answers] == [True, False, False, False]

    # The notice settles it at once (no reconciler needed), and only once.
    eventually(
        lambda: bank.transaction(ada, transaction_id)["status"] == "TRANSACTION_STATUS_POSTED",
        "the webhook's credit",
        timeout=10,
    )
    # The sandbox's own delivery of the same outcome arrives later: ignored too.
    eventually(
        lambda: (
            total(
                scrape_all(mesh, "gateway"),
                "gateway_webhooks_total",
                provider="sandbox",
                result="ignored",
            )
            >= ignored_before + 3
        ),
        "the sandbox's own webhook",
    )
    assert bank.balance(ada, wallet) == (1_100, 1_100)
    assert postings_of(mesh, transaction_id) == 2


def test_a_webhook_with_a_bad_signature_is_refused_and_changes_nothing(
    bank: Bank, rest: httpx.Client, mesh: Mesh
) -> None:
    ada, wallet = bank.funded_person("forged", 0)
    response = bank.top_up(ada, wallet, 900, "pm_card_delayed")
    transaction_id = response.json()["transaction"]["transaction_id"]
    forged = _event(transaction_id, "succeeded", _reference(mesh, transaction_id))

    wrong_secret = deliver(rest, forged, secret="whsec_guessed")
    assert wrong_secret.status_code == 401, wrong_secret.text
    assert wrong_secret.json()["details"][0]["reason"] == "WEBHOOK_SIGNATURE_INVALID"
    tampered = forged.replace(b'"succeeded"', b'"failed"')
    signature = sign(SANDBOX_WEBHOOK_SECRET, forged)
    refused = rest.post(
        "/v1/webhooks/sandbox",
        content=tampered,
        headers={"content-type": "application/json", "sandbox-signature": signature},
    )
    assert refused.status_code == 401, refused.text
    unsigned = rest.post("/v1/webhooks/sandbox", content=forged)
    assert unsigned.status_code == 401, unsigned.text

    assert bank.transaction(ada, transaction_id)["status"] == "TRANSACTION_STATUS_PENDING"
    assert bank.balance(ada, wallet) == (0, 0)
    with psycopg.connect(mesh.postgres.conninfo("payments")) as connection:
        row = connection.execute(
            "SELECT status FROM payments WHERE id = %s", (transaction_id,)
        ).fetchone()
    assert row == ("pending",)


def test_webhooks_for_unknown_providers_are_404(rest: httpx.Client) -> None:
    response = rest.post("/v1/webhooks/nobody", content=b"{}")
    assert response.status_code == 404, response.text


async def test_top_up_over_grpc_through_the_edge(bank: Bank, mesh: Mesh) -> None:
    ada, wallet = bank.funded_person("grpctopup", 0)
    auth = (("authorization", f"Bearer {ada.access_token}"),)
    async with grpc.aio.insecure_channel(mesh.edge_grpc_target) as channel:
        ledger = transaction_service_pb2_grpc.TransactionServiceStub(channel)
        response = await ledger.TopUpWallet(
            pb.TopUpWalletRequest(
                wallet_id=wallet,
                request_id=str(uuid.uuid4()),
                amount=money_pb2.Money(currency="EUR", amount=4_200),
                payment_method="tok_visa",
            ),
            metadata=auth,
        )
        assert response.transaction.status == pb.TRANSACTION_STATUS_POSTED
        with pytest.raises(grpc.aio.AioRpcError) as declined:
            await ledger.TopUpWallet(
                pb.TopUpWalletRequest(
                    wallet_id=wallet,
                    request_id=str(uuid.uuid4()),
                    amount=money_pb2.Money(currency="EUR", amount=1),
                    payment_method="pm_card_chargeDeclined",
                ),
                metadata=auth,
            )
        assert declined.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        withdrawal = await ledger.WithdrawFromWallet(
            pb.WithdrawFromWalletRequest(
                wallet_id=wallet,
                request_id=str(uuid.uuid4()),
                amount=money_pb2.Money(currency="EUR", amount=200),
                destination="ba_sandbox_ok",
            ),
            metadata=auth,
        )
        assert withdrawal.transaction.status == pb.TRANSACTION_STATUS_POSTED
    assert bank.balance(ada, wallet) == (4_000, 4_000)


def test_bad_input_is_refused_field_by_field(bank: Bank) -> None:
    ada, wallet = bank.funded_person("badtopup", 0)
    response = bank.rest.post(
        f"/v1/wallets/{wallet}:top-up",
        json={"request_id": "k", "amount": {"currency": "EUR", "amount": -5}, "provider": "Bad!"},
        headers=ada.auth,
    )
    assert response.status_code == 400, response.text
    fields = {v["field"] for v in response.json()["details"][0]["field_violations"]}
    assert fields == {"amount.amount", "payment_method", "provider"}
    assert bank.balance(ada, wallet) == (0, 0)
    other, _ = bank.funded_person("notmine", 0)
    stranger = bank.top_up(other, wallet, 100)
    assert stranger.status_code == 404, stranger.text


def test_an_unknown_provider_is_refused_by_field_and_holds_nothing(bank: Bank) -> None:
    """The gateway knows which providers it has; its refusal fails the transaction at
    once (nothing was sent anywhere), and a withdrawal's hold is released."""
    ada, wallet = bank.funded_person("noprovider", 0)
    assert bank.top_up(ada, wallet, 1_000).status_code == 200
    for response in (
        bank.top_up(ada, wallet, 500, provider="nosuchpay"),
        bank.withdraw(ada, wallet, 500, provider="nosuchpay"),
    ):
        assert response.status_code == 400, response.text
        violations = response.json()["details"][0]["field_violations"]
        assert [v["field"] for v in violations] == ["provider"]
    assert bank.balance(ada, wallet) == (1_000, 1_000)
    history = bank.rest.get("/v1/transactions", headers=ada.auth).json()["transactions"]
    assert [(t["status"], t["failure_code"]) for t in history[:2]] == [
        ("TRANSACTION_STATUS_FAILED", "invalid_payment_request")
    ] * 2


async def test_internal_apis_need_the_service_credential(bank: Bank, mesh: Mesh) -> None:
    ada, _ = bank.funded_person("internal", 0)
    payment_id = str(uuid.uuid4())
    charge = gateway_pb.CreateChargeRequest(
        payment_id=payment_id,
        amount=money_pb2.Money(currency="EUR", amount=100),
        payment_method="pm_card_visa",
    )
    # Not routed at the edge, whatever a client sends (even the real credential): the
    # edge answers UNIMPLEMENTED itself, token or not.
    async with grpc.aio.insecure_channel(mesh.edge_grpc_target) as channel:
        stub = gateway_service_pb2_grpc.PaymentGatewayServiceStub(channel)
        token = mesh.service_token_path.read_text().strip()
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await stub.CreateCharge(charge, metadata=((SERVICE_TOKEN_HEADER, token),))
        assert anonymous.value.code() is grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.aio.AioRpcError) as signed_in:
            await stub.CreateCharge(
                charge,
                metadata=(
                    ("authorization", f"Bearer {ada.access_token}"),
                    (SERVICE_TOKEN_HEADER, token),
                ),
            )
        assert signed_in.value.code() is grpc.StatusCode.UNIMPLEMENTED
    # At an instance: no credential, or a wrong one, is refused.
    async with grpc.aio.insecure_channel(mesh.instance_addresses("gateway")[0]) as channel:
        stub = gateway_service_pb2_grpc.PaymentGatewayServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.CreateCharge(charge)
        assert missing.value.code() is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await stub.CreateCharge(charge, metadata=((SERVICE_TOKEN_HEADER, "guess"),))
        assert wrong.value.code() is grpc.StatusCode.PERMISSION_DENIED
    async with grpc.aio.insecure_channel(mesh.instance_addresses("transaction")[0]) as channel:
        funding = funding_service_pb2_grpc.FundingServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as notice:
            await funding.NotifyPaymentUpdated(
                funding_pb.NotifyPaymentUpdatedRequest(payment_id=payment_id)
            )
        assert notice.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert sandbox_rows(mesh, payment_id) == []
