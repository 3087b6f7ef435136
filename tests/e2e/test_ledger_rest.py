"""The ledger through the edge over REST: what a person does with money."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx

from services.localmesh.mesh import Mesh
from tests.e2e.people import Bank, Person, audit_ledger
from tests.eventually import eventually


def key() -> dict[str, str]:
    return {"idempotency-key": str(uuid.uuid4())}


def eur(amount: int) -> dict[str, object]:
    return {"currency": "EUR", "amount": amount}


def test_operator_credit_then_pay_someone_by_email(bank: Bank, rest: httpx.Client) -> None:
    ada, ada_wallet = bank.funded_person("payer", 10_000)
    bob, bob_wallet = bank.funded_person("payee", 0)
    assert bank.balance(ada, ada_wallet) == (10_000, 10_000)

    paid = rest.post(
        "/process-transaction",
        json={
            "source_wallet_id": ada_wallet,
            "recipient_email": bob.email.upper(),
            "amount": {"currency": "EUR", "decimal": "25.50"},
            "memo": "dinner",
            "metadata": {"order": "42"},
        },
        headers={**ada.auth, **key()},
    )
    assert paid.status_code == 200, paid.text
    transfer = paid.json()["transaction"]
    assert transfer["type"] == "TRANSACTION_TYPE_TRANSFER"
    assert transfer["amount"] == {"currency": "EUR", "amount": "2550", "decimal": "25.50"}
    assert transfer["destination_wallet_id"] == bob_wallet
    assert transfer["metadata"] == {"order": "42"}
    assert bank.balance(ada, ada_wallet) == (7_450, 7_450)
    assert bank.balance(bob, bob_wallet) == (2_550, 2_550)

    # Both see it in their history, and both may read the receipt.
    for person in (ada, bob):
        history = rest.get("/v1/transactions", headers=person.auth).json()["transactions"]
        assert history[0]["transaction_id"] == transfer["transaction_id"]
    receipt = rest.get(
        f"/v1/transactions/{transfer['transaction_id']}/receipt", headers=bob.auth
    ).json()
    assert receipt["receipt"]["receipt_number"] == transfer["receipt_number"]
    assert receipt["receipt"]["payer"]["display_name"] == "Payer"
    assert receipt["receipt"]["payee"]["display_name"] == "Payee"
    assert "25.50 EUR" in receipt["text"]
    assert transfer["receipt_number"] in receipt["text"]


def test_same_idempotency_key_returns_the_original_and_moves_money_once(
    bank: Bank, rest: httpx.Client
) -> None:
    ada, ada_wallet = bank.funded_person("idem", 1_000)
    _, bob_wallet = bank.funded_person("idemto", 0)
    body = {"source_wallet_id": ada_wallet, "destination_wallet_id": bob_wallet, "amount": eur(100)}
    headers = {**ada.auth, **key()}
    first = rest.post("/v1/transfers", json=body, headers=headers)
    again = rest.post("/v1/transfers", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert bank.balance(ada, ada_wallet) == (900, 900)
    other = rest.post("/v1/transfers", json={**body, "amount": eur(200)}, headers=headers)
    assert other.status_code == 400
    assert "different request" in other.json()["message"]
    assert bank.balance(ada, ada_wallet) == (900, 900)


def test_a_retried_transfer_by_email_replays_the_original(bank: Bank, rest: httpx.Client) -> None:
    """The recipient is looked up only the first time; a retry with the same key is
    answered from the stored result (it was once refused as a key mismatch)."""
    ada, ada_wallet = bank.funded_person("idemmail", 1_000)
    bob, _ = bank.funded_person("idemmailto", 0)
    body = {"source_wallet_id": ada_wallet, "recipient_email": bob.email, "amount": eur(100)}
    headers = {**ada.auth, **key()}
    first = rest.post("/v1/transfers", json=body, headers=headers)
    again = rest.post("/v1/transfers", json=body, headers=headers)
    assert first.status_code == again.status_code == 200, again.text
    assert first.json() == again.json()
    assert bank.balance(ada, ada_wallet) == (900, 900)


def test_a_batch_of_transfers_has_one_result_each(bank: Bank, rest: httpx.Client) -> None:
    ada, ada_wallet = bank.funded_person("batcher", 1_000)
    bob, bob_wallet = bank.funded_person("batchee", 0)
    items = [
        {"request_id": str(uuid.uuid4()), "amount": eur(amount), "memo": f"item {n}"}
        | {"source_wallet_id": ada_wallet, "destination_wallet_id": bob_wallet}
        for n, amount in enumerate([300, 900, 700])
    ]
    first = rest.post("/v1/transfers:batchCreate", json={"requests": items}, headers=ada.auth)
    assert first.status_code == 200, first.text
    results = first.json()["results"]
    assert [sorted(r) for r in results] == [["transaction"], ["error"], ["transaction"]]
    assert results[1]["error"]["code"] == 9  # FAILED_PRECONDITION
    assert results[1]["error"]["details"][0]["reason"] == "INSUFFICIENT_FUNDS"
    assert results[2]["transaction"]["memo"] == "item 2"
    assert bank.balance(ada, ada_wallet) == (0, 0)
    assert bank.balance(bob, bob_wallet) == (1_000, 1_000)
    # Sent again (a lost answer): the same transfers, no money moves twice.
    again = rest.post("/v1/transfers:batchCreate", json={"requests": items}, headers=ada.auth)
    assert [r.get("transaction", {}).get("transaction_id") for r in again.json()["results"]] == [
        r.get("transaction", {}).get("transaction_id") for r in results
    ]
    assert bank.balance(bob, bob_wallet) == (1_000, 1_000)
    # A malformed item refuses the whole batch, naming it.
    bad = [items[0], {**items[1], "request_id": "", "amount": eur(-1)}]
    refused = rest.post("/v1/transfers:batchCreate", json={"requests": bad}, headers=ada.auth)
    assert refused.status_code == 400, refused.text
    fields = {v["field"] for v in refused.json()["details"][0]["field_violations"]}
    assert fields == {"requests[1].request_id", "requests[1].amount.amount"}


def test_hold_capture_partially_and_void(bank: Bank, rest: httpx.Client) -> None:
    ada, ada_wallet = bank.funded_person("shopper", 5_000)
    shop, shop_wallet = bank.funded_person("shop", 0)
    hold = rest.post(
        "/v1/holds",
        json={"wallet_id": ada_wallet, "merchant_wallet_id": shop_wallet, "amount": eur(3_000)},
        headers={**ada.auth, **key()},
    )
    assert hold.status_code == 200, hold.text
    hold_id = hold.json()["hold"]["hold_id"]
    assert bank.balance(ada, ada_wallet) == (5_000, 2_000)
    # The payer cannot capture; the merchant can, in part.
    assert (
        rest.post(
            f"/v1/holds/{hold_id}:capture", json={}, headers={**ada.auth, **key()}
        ).status_code
        == 403
    )
    captured = rest.post(
        f"/v1/holds/{hold_id}:capture", json={"amount": eur(1_200)}, headers={**shop.auth, **key()}
    )
    assert captured.status_code == 200, captured.text
    assert captured.json()["hold"]["status"] == "HOLD_STATUS_CAPTURED"
    assert captured.json()["transaction"]["type"] == "TRANSACTION_TYPE_PAYMENT"
    assert bank.balance(ada, ada_wallet) == (3_800, 3_800)
    assert bank.balance(shop, shop_wallet) == (1_200, 1_200)

    second = rest.post(
        "/v1/holds",
        json={"wallet_id": ada_wallet, "merchant_wallet_id": shop_wallet, "amount": eur(500)},
        headers={**ada.auth, **key()},
    ).json()["hold"]["hold_id"]
    voided = rest.post(f"/v1/holds/{second}:void", json={}, headers={**shop.auth, **key()})
    assert voided.json()["hold"]["status"] == "HOLD_STATUS_VOIDED"
    assert bank.balance(ada, ada_wallet) == (3_800, 3_800)
    again = rest.post(f"/v1/holds/{second}:capture", json={}, headers={**shop.auth, **key()})
    assert again.status_code == 400


def test_expired_hold_releases_itself(bank: Bank, rest: httpx.Client) -> None:
    ada, ada_wallet = bank.funded_person("expiring", 1_000)
    shop, shop_wallet = bank.funded_person("expshop", 0)
    hold_id = rest.post(
        "/v1/holds",
        json={
            "wallet_id": ada_wallet,
            "merchant_wallet_id": shop_wallet,
            "amount": eur(400),
            "expires_in_seconds": 1,
        },
        headers={**ada.auth, **key()},
    ).json()["hold"]["hold_id"]
    assert bank.balance(ada, ada_wallet) == (1_000, 600)

    def expired() -> list[str]:
        status = rest.get(f"/v1/holds/{hold_id}", headers=ada.auth).json()["hold"]["status"]
        return [] if status == "HOLD_STATUS_EXPIRED" else [status]

    eventually(expired, "the hold to expire", 15, interval=0.2)
    assert bank.balance(ada, ada_wallet) == (1_000, 1_000)
    late = rest.post(f"/v1/holds/{hold_id}:capture", json={}, headers={**shop.auth, **key()})
    assert late.status_code == 400


def test_refunds_partial_full_and_never_more(bank: Bank, rest: httpx.Client) -> None:
    ada, ada_wallet = bank.funded_person("buyer", 2_000)
    shop, shop_wallet = bank.funded_person("seller", 0)
    paid = rest.post(
        "/v1/transfers",
        json={
            "source_wallet_id": ada_wallet,
            "destination_wallet_id": shop_wallet,
            "amount": eur(1_000),
        },
        headers={**ada.auth, **key()},
    ).json()["transaction"]
    tid = paid["transaction_id"]
    # Only the recipient refunds.
    assert (
        rest.post(
            f"/v1/transactions/{tid}:refund", json={}, headers={**ada.auth, **key()}
        ).status_code
        == 403
    )
    part = rest.post(
        f"/v1/transactions/{tid}:refund",
        json={"amount": eur(300), "reason": "one item missing"},
        headers={**shop.auth, **key()},
    )
    assert part.status_code == 200, part.text
    assert part.json()["transaction"]["refund_of_transaction_id"] == tid
    original = rest.get(f"/v1/transactions/{tid}", headers=ada.auth).json()["transaction"]
    assert original["status"] == "TRANSACTION_STATUS_PARTIALLY_REFUNDED"
    assert original["refunded_amount"]["amount"] == "300"
    over = rest.post(
        f"/v1/transactions/{tid}:refund", json={"amount": eur(701)}, headers={**shop.auth, **key()}
    )
    assert over.status_code == 400
    rest_of_it = rest.post(
        f"/v1/transactions/{tid}:refund", json={}, headers={**shop.auth, **key()}
    )
    assert rest_of_it.status_code == 200
    assert rest_of_it.json()["transaction"]["amount"]["amount"] == "700"
    assert bank.balance(ada, ada_wallet) == (2_000, 2_000)
    assert bank.balance(shop, shop_wallet) == (0, 0)
    nothing_left = rest.post(
        f"/v1/transactions/{tid}:refund", json={"amount": eur(1)}, headers={**shop.auth, **key()}
    )
    assert nothing_left.status_code == 400


def test_history_filters_and_pages(bank: Bank, rest: httpx.Client) -> None:
    ada, ada_wallet = bank.funded_person("historian", 1_000)
    _, bob_wallet = bank.funded_person("counter", 0)
    for amount in (1, 2, 3, 4, 5):
        response = rest.post(
            "/v1/transfers",
            json={
                "source_wallet_id": ada_wallet,
                "destination_wallet_id": bob_wallet,
                "amount": eur(amount),
            },
            headers={**ada.auth, **key()},
        )
        assert response.status_code == 200
    seen: list[str] = []
    token = ""
    for _ in range(10):
        page = rest.get(
            "/transactions",
            params={"page_size": 2, "page_token": token, "type": "TRANSACTION_TYPE_TRANSFER"},
            headers=ada.auth,
        ).json()
        seen += [t["amount"]["amount"] for t in page["transactions"]]
        token = page["next_page_token"]
        if not token:
            break
    assert seen == ["5", "4", "3", "2", "1"]
    adjustments = rest.get(
        "/v1/transactions", params={"type": "TRANSACTION_TYPE_ADJUSTMENT"}, headers=ada.auth
    ).json()["transactions"]
    assert [t["amount"]["amount"] for t in adjustments] == ["1000"]


def test_summary_has_user_balances_and_recent_transactions(
    bank: Bank, rest: httpx.Client, mesh: Mesh
) -> None:
    ada, _ = bank.funded_person("summary", 1_234)
    summary = rest.get("/v1/summary", headers=ada.auth)
    assert summary.status_code == 200, summary.text
    body = summary.json()
    assert body["user"]["user_id"] == ada.user_id
    # The profile as the user service has it (through the domain's Directory port).
    profile = rest.get("/v1/users/me", headers=ada.auth).json()
    assert body["user"] == profile["user"]
    assert body["user"]["roles"] == ["ROLE_USER"]
    assert [w["balance"]["decimal"] for w in body["wallets"]] == ["12.34"]
    assert body["recent_transactions"][0]["type"] == "TRANSACTION_TYPE_ADJUSTMENT"
    audit_ledger(mesh)


def test_summary_survives_a_user_service_instance_dying(
    bank: Bank, rest: httpx.Client, mesh: Mesh
) -> None:
    ada, _ = bank.funded_person("resilient", 100)
    mesh.kill_instance("user", 1)
    try:
        for _ in range(10):
            response = rest.get("/v1/summary", headers=ada.auth)
            assert response.status_code == 200, response.text
            assert response.json()["user"]["user_id"] == ada.user_id
    finally:
        mesh.restart_instance("user", 1, wait_for_edge=True)


def test_operator_freeze_blocks_debits_not_credits(bank: Bank, rest: httpx.Client) -> None:
    ada, ada_wallet = bank.funded_person("frozen", 1_000)
    bob, bob_wallet = bank.funded_person("sender", 1_000)
    frozen = rest.post(
        f"/v1/wallets/{ada_wallet}:freeze",
        json={"reason": "fraud check"},
        headers={**bank.admin.auth, **key()},
    )
    assert frozen.status_code == 200, frozen.text
    assert frozen.json()["wallet"]["status"] == "WALLET_STATUS_FROZEN"
    out = rest.post(
        "/v1/transfers",
        json={
            "source_wallet_id": ada_wallet,
            "destination_wallet_id": bob_wallet,
            "amount": eur(1),
        },
        headers={**ada.auth, **key()},
    )
    assert out.status_code == 400
    assert "frozen" in out.json()["message"]
    incoming = rest.post(
        "/v1/transfers",
        json={
            "source_wallet_id": bob_wallet,
            "destination_wallet_id": ada_wallet,
            "amount": eur(1),
        },
        headers={**bob.auth, **key()},
    )
    assert incoming.status_code == 200
    history = rest.get(
        "/v1/transactions", params={"type": "TRANSACTION_TYPE_FREEZE"}, headers=ada.auth
    )
    assert history.json()["transactions"][0]["memo"] == "fraud check"
    rest.post(
        f"/v1/wallets/{ada_wallet}:unfreeze",
        json={"reason": "cleared"},
        headers={**bank.admin.auth, **key()},
    )
    assert bank.balance(ada, ada_wallet) == (1_001, 1_001)


def test_grpc_client_lists_wallets_through_the_edge(bank: Bank, mesh: Mesh) -> None:
    import grpc

    from wallet.transaction.v1 import transaction_service_pb2 as pb
    from wallet.transaction.v1 import transaction_service_pb2_grpc

    ada, ada_wallet = bank.funded_person("grpcwallet", 700)
    with grpc.insecure_channel(mesh.edge_grpc_target) as channel:
        stub = transaction_service_pb2_grpc.TransactionServiceStub(channel)
        wallets = stub.ListWallets(
            pb.ListWalletsRequest(), metadata=(("authorization", f"Bearer {ada.access_token}"),)
        )
    assert [(w.wallet_id, w.balance.amount) for w in wallets.wallets] == [(ada_wallet, 700)]


def test_balance_at_an_instant(bank: Bank, rest: httpx.Client) -> None:
    ada, ada_wallet = bank.funded_person("historian", 5_000)
    shop, shop_wallet = bank.funded_person("antiques", 0)
    before = datetime.now(UTC)
    hold = rest.post(
        "/v1/holds",
        json={"wallet_id": ada_wallet, "merchant_wallet_id": shop_wallet, "amount": eur(2_000)},
        headers={**ada.auth, **key()},
    )
    assert hold.status_code == 200, hold.text
    holding = datetime.now(UTC)
    captured = rest.post(
        f"/v1/holds/{hold.json()['hold']['hold_id']}:capture",
        json={"amount": eur(1_500)},
        headers={**shop.auth, **key()},
    )
    assert captured.status_code == 200, captured.text

    def balance_at(at: datetime | None, who: Person = ada) -> httpx.Response:
        query = {"at": at.isoformat().replace("+00:00", "Z")} if at else {}
        return rest.get(f"/v1/wallets/{ada_wallet}/balance", params=query, headers=who.auth)

    amounts = {}
    for name, at in (("before", before), ("holding", holding), ("now", None)):
        answer = balance_at(at)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["wallet_id"] == ada_wallet
        amounts[name] = tuple(
            int(body[field]["amount"]) for field in ("balance", "held", "available_balance")
        )
    assert amounts == {
        "before": (5_000, 0, 5_000),
        "holding": (5_000, 2_000, 3_000),
        "now": (3_500, 0, 3_500),
    }
    # Not another's, not the future, not before the wallet was opened: which field, why.
    assert balance_at(None, shop).status_code == 404
    future = balance_at(datetime.now(UTC) + timedelta(days=1))
    assert future.status_code == 400
    assert "at" in future.text
    assert "future" in future.text
    early = balance_at(before - timedelta(days=365))
    assert early.status_code == 400
    assert "before the wallet was opened" in early.text
    garbled = rest.get(
        f"/v1/wallets/{ada_wallet}/balance", params={"at": "yesterday"}, headers=ada.auth
    )
    assert garbled.status_code == 400
