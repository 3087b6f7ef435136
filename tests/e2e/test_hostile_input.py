"""Hostile input through the edge: control characters in any text field, forged or
foreign page tokens and amounts in other scripts' digits are each 400 naming the
field, and nothing moves (balances and history are checked before and after)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest

from services.localmesh.mesh import Mesh
from tests.e2e.people import PASSWORD, Bank, Person
from tests.field_violations import grpc_violations
from tests.field_violations import rest_violations as violations
from wallet.transaction.v1 import transaction_service_pb2 as pb
from wallet.transaction.v1 import transaction_service_pb2_grpc
from wallet.type.v1 import money_pb2, page_pb2
from wallet.user.v1 import user_service_pb2 as user_pb
from wallet.user.v1 import user_service_pb2_grpc

NUL = "\u0000"
CONTROL = "control characters"
# Arabic-Indic zero, point, zero, one: 0.01 to Python's Decimal().
ARABIC_INDIC_CENT = "\u0660.\u0660\u0661"


def key() -> dict[str, str]:
    return {"idempotency-key": str(uuid.uuid4())}


def eur(amount: int) -> dict[str, object]:
    return {"currency": "EUR", "amount": amount}


class Scene:
    """Ada pays Bob twice (so her transfers fill two pages of one); then every hostile
    request must leave both as they were."""

    def __init__(self, bank: Bank) -> None:
        self.bank = bank
        self.rest = bank.rest
        self.ada, self.ada_wallet = bank.funded_person("hostile", 1_000)
        self.bob, self.bob_wallet = bank.funded_person("hostilepayee", 0)
        paid = self.post(
            "/v1/transfers",
            {
                "source_wallet_id": self.ada_wallet,
                "destination_wallet_id": self.bob_wallet,
                "amount": eur(100),
            },
        )
        assert paid.status_code == 200, paid.text
        self.paid_id = str(paid.json()["transaction"]["transaction_id"])
        again = self.post("/v1/transfers", self.transfer(amount=eur(1)))
        assert again.status_code == 200, again.text

    def post(self, path: str, body: dict[str, Any], person: Person | None = None) -> httpx.Response:
        who = person or self.ada
        return self.rest.post(path, json=body, headers={**who.auth, **key()})

    def history(self, person: Person) -> list[tuple[str, str]]:
        response = self.rest.get("/v1/transactions", params={"page_size": 100}, headers=person.auth)
        assert response.status_code == 200, response.text
        return [(t["transaction_id"], t["status"]) for t in response.json()["transactions"]]

    def state(self) -> object:
        return (
            self.bank.balance(self.ada, self.ada_wallet),
            self.bank.balance(self.bob, self.bob_wallet),
            self.history(self.ada),
            self.history(self.bob),
        )

    def transfer(self, **body: object) -> dict[str, object]:
        """A transfer from Ada to Bob with `body` (None: without that field)."""
        transfer = {
            "source_wallet_id": self.ada_wallet,
            "destination_wallet_id": self.bob_wallet,
            "amount": eur(100),
            **body,
        }
        return {name: value for name, value in transfer.items() if value is not None}


@pytest.fixture
def scene(bank: Bank) -> Iterator[Scene]:
    scene = Scene(bank)
    before = scene.state()
    yield scene
    assert scene.state() == before


def refused_naming(response: httpx.Response, field: str, why: str = CONTROL) -> None:
    assert response.status_code == 400, response.text
    found = violations(response)
    assert field in found, found
    assert why in found[field]


# --- control characters, over REST ---------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"memo": f"a{NUL}b"}, "memo"),
        ({"memo": "two\nlines"}, "memo"),
        ({"metadata": {"order": f"A{NUL}1"}}, "metadata[order]"),
        ({"metadata": {f"k{NUL}": "v"}}, "metadata[k\\u0000]"),
        ({"request_id": f"r{NUL}1"}, "request_id"),
        (
            {"destination_wallet_id": None, "recipient_email": f"bob{NUL}@example.com"},
            "recipient_email",
        ),
        ({"amount": {"currency": f"EU{NUL}R", "amount": 100}}, "amount.currency"),
    ],
)
def test_transfer_text_with_a_control_character_is_400(
    scene: Scene, body: dict[str, object], field: str
) -> None:
    refused_naming(scene.post("/v1/transfers", scene.transfer(**body)), field)


def test_every_bad_field_of_a_batch_is_named_by_its_path(scene: Scene) -> None:
    items = [
        scene.transfer(request_id=str(uuid.uuid4()), memo="fine"),
        scene.transfer(request_id=str(uuid.uuid4()), metadata={"k": f"v{NUL}"}),
        scene.transfer(request_id=str(uuid.uuid4())),
        scene.transfer(request_id=str(uuid.uuid4()), memo=f"x{NUL}"),
    ]
    response = scene.post("/v1/transfers:batchCreate", {"requests": items})
    refused_naming(response, "requests[1].metadata[k]")
    refused_naming(response, "requests[3].memo")
    assert len(violations(response)) == 2


def test_hold_memo_and_metadata_free_fields(scene: Scene) -> None:
    hold = {
        "wallet_id": scene.ada_wallet,
        "merchant_wallet_id": scene.bob_wallet,
        "amount": eur(100),
        "memo": f"deposit{NUL}",
    }
    refused_naming(scene.post("/v1/holds", hold), "memo")


def test_refund_reason(scene: Scene) -> None:
    response = scene.post(
        f"/v1/transactions/{scene.paid_id}:refund", {"reason": f"oops{NUL}"}, scene.bob
    )
    refused_naming(response, "reason")


def test_adjustment_and_freeze_reasons(scene: Scene) -> None:
    admin = scene.bank.admin
    adjusted = scene.post(
        f"/v1/wallets/{scene.ada_wallet}:adjust",
        {"amount": eur(100), "reason": f"bonus{NUL}"},
        admin,
    )
    refused_naming(adjusted, "reason")
    frozen = scene.post(f"/v1/wallets/{scene.ada_wallet}:freeze", {"reason": f"x{NUL}"}, admin)
    refused_naming(frozen, "reason")


def test_top_up_payment_method_and_withdrawal_destination(scene: Scene) -> None:
    top_up = scene.bank.top_up(scene.ada, scene.ada_wallet, 500, payment_method=f"pm_card{NUL}")
    refused_naming(top_up, "payment_method")
    withdrawal = scene.bank.withdraw(scene.ada, scene.ada_wallet, 100, destination=f"ba{NUL}")
    refused_naming(withdrawal, "destination")


def test_lookup_with_a_nul_in_the_query_string(scene: Scene) -> None:
    response = scene.rest.get("/v1/users:lookup?email=x%00y%40example.com", headers=scene.ada.auth)
    refused_naming(response, "email")


def test_login_without_a_token_with_a_nul_email(rest: httpx.Client) -> None:
    response = rest.post(
        "/v1/auth/login", json={"email": f"ada{NUL}@example.com", "password": PASSWORD}
    )
    refused_naming(response, "email")
    # Nothing but the field: no account, token or user detail is in the answer.
    assert set(violations(response)) == {"email"}


def test_registration_display_name(rest: httpx.Client) -> None:
    response = rest.post(
        "/v1/users",
        json={
            "email": f"n{uuid.uuid4().hex}@example.com",
            "password": PASSWORD,
            "display_name": "Ada\u001b[31m",
        },
    )
    refused_naming(response, "display_name")


# --- control characters, over gRPC ---------------------------------------------------


async def test_grpc_transfer_batch_login_and_lookup(scene: Scene, mesh: Mesh) -> None:
    as_ada = (("authorization", f"Bearer {scene.ada.access_token}"),)
    eur_100 = money_pb2.Money(currency="EUR", amount=100)
    async with grpc.aio.insecure_channel(mesh.edge_grpc_target) as channel:
        ledger = transaction_service_pb2_grpc.TransactionServiceStub(channel)
        users = user_service_pb2_grpc.UserServiceStub(channel)
        transfer = pb.CreateTransferRequest(
            request_id=str(uuid.uuid4()),
            source_wallet_id=scene.ada_wallet,
            destination_wallet_id=scene.bob_wallet,
            amount=eur_100,
        )
        bad_memo = pb.CreateTransferRequest(memo=f"m{NUL}")
        bad_memo.MergeFrom(transfer)
        bad_item = pb.CreateTransferRequest(metadata={"k": f"\x7f{NUL}"})
        bad_item.MergeFrom(transfer)
        calls: list[tuple[Callable[[], Awaitable[object]], str]] = [
            (lambda: ledger.CreateTransfer(bad_memo, metadata=as_ada), "memo"),
            (
                lambda: ledger.BatchCreateTransfers(
                    pb.BatchCreateTransfersRequest(requests=[bad_item]), metadata=as_ada
                ),
                "requests[0].metadata[k]",
            ),
            (
                lambda: users.Login(
                    user_pb.LoginRequest(email=f"a{NUL}@example.com", password=PASSWORD)
                ),
                "email",
            ),
            (
                lambda: users.LookupUser(
                    user_pb.LookupUserRequest(email=f"x{NUL}y@example.com"), metadata=as_ada
                ),
                "email",
            ),
        ]
        for call, field in calls:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call()
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
            assert CONTROL in grpc_violations(refused.value)[field]


# --- page tokens ---------------------------------------------------------------------


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unsigned_cursor(after_id: str) -> str:
    """What a forger can make: a well-formed PageCursor without this mesh's signature."""
    return b64(page_pb2.PageCursor(after_sort_key=1, after_id=after_id).SerializeToString())


def altered(token: str) -> str:
    """The token with one bit of its cursor flipped."""
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[len(raw) // 3] ^= 0x01
    return b64(bytes(raw))


def transactions_page(scene: Scene, person: Person, **params: str | int) -> httpx.Response:
    return scene.rest.get("/v1/transactions", params=params, headers=person.auth)


def test_history_page_tokens_that_this_query_did_not_make_are_400(scene: Scene) -> None:
    transfers = {"type": "TRANSACTION_TYPE_TRANSFER"}
    first = transactions_page(scene, scene.ada, page_size=1, **transfers)
    assert first.status_code == 200, first.text
    token = first.json()["next_page_token"]
    assert token
    second = transactions_page(scene, scene.ada, page_size=1, page_token=token, **transfers)
    assert second.status_code == 200, second.text
    assert (
        second.json()["transactions"][0]["transaction_id"]
        != (first.json()["transactions"][0]["transaction_id"])
    )

    for forged in (unsigned_cursor("x"), unsigned_cursor("' OR 1=1--"), altered(token)):
        response = transactions_page(scene, scene.ada, page_size=1, page_token=forged, **transfers)
        refused_naming(response, "page_token", "not a token returned by this list")
    # Another query's token: other filters, or the same filters of another user.
    other_filter = transactions_page(
        scene, scene.ada, page_token=token, type="TRANSACTION_TYPE_ADJUSTMENT"
    )
    refused_naming(other_filter, "page_token", "different query")
    other_wallet = transactions_page(scene, scene.ada, page_token=token, wallet_id=scene.ada_wallet)
    refused_naming(other_wallet, "page_token", "different query")
    other_user = transactions_page(scene, scene.bob, page_token=token, **transfers)
    refused_naming(other_user, "page_token", "different query")


def test_admin_user_list_page_tokens_that_it_did_not_make_are_400(scene: Scene) -> None:
    admin = scene.bank.admin
    first = scene.rest.get("/v1/users", params={"page_size": 1}, headers=admin.auth)
    assert first.status_code == 200, first.text
    token = first.json()["next_page_token"]
    assert token
    assert (
        scene.rest.get(
            "/v1/users", params={"page_size": 1, "page_token": token}, headers=admin.auth
        ).status_code
        == 200
    )
    history_token = transactions_page(scene, scene.ada, page_size=1).json()["next_page_token"]
    assert history_token
    for forged, why in [
        (unsigned_cursor("x"), "not a token"),
        (unsigned_cursor("' OR 1=1--"), "not a token"),
        (altered(token), "not a token"),
        (history_token, "different query"),  # a token of another list
    ]:
        response = scene.rest.get("/v1/users", params={"page_token": forged}, headers=admin.auth)
        refused_naming(response, "page_token", why)


# --- ASCII digits ---------------------------------------------------------------------


def test_an_amount_in_arabic_indic_digits_is_400(scene: Scene) -> None:
    body = scene.transfer(amount={"currency": "EUR", "decimal": ARABIC_INDIC_CENT})
    refused_naming(scene.post("/v1/transfers", body), "amount.decimal", "not a decimal amount")
    top_up = scene.post(
        f"/v1/wallets/{scene.ada_wallet}:top-up",
        {
            "amount": {"currency": "EUR", "decimal": "\uff11.00"},  # fullwidth 1
            "payment_method": "pm_card_visa",
        },
    )
    refused_naming(top_up, "amount.decimal", "not a decimal amount")
