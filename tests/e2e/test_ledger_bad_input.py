"""Bad money input through the edge: exact status, the field and why, and no
money moved (balances checked before and after)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.people import Bank, Person
from tests.field_violations import rest_violations as violations


def key() -> dict[str, str]:
    return {"idempotency-key": str(uuid.uuid4())}


class Pair:
    def __init__(self, bank: Bank) -> None:
        self.bank = bank
        self.ada, self.ada_wallet = bank.funded_person("badpayer", 1_000)
        self.bob, self.bob_wallet = bank.funded_person("badpayee", 0)

    def balances(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return (
            self.bank.balance(self.ada, self.ada_wallet),
            self.bank.balance(self.bob, self.bob_wallet),
        )

    def transfer(self, person: Person | None = None, **body: object) -> httpx.Response:
        payload: dict[str, object] = {
            "source_wallet_id": self.ada_wallet,
            "destination_wallet_id": self.bob_wallet,
            "amount": {"currency": "EUR", "amount": 100},
        }
        payload |= body
        who = person or self.ada
        return self.bank.rest.post("/v1/transfers", json=payload, headers={**who.auth, **key()})


@pytest.fixture
def pair(bank: Bank) -> Iterator[Pair]:
    pair = Pair(bank)
    before = pair.balances()
    yield pair
    # Whatever a test sent, nothing moved.
    assert pair.balances() == before


@pytest.mark.parametrize(
    ("amount", "field", "why"),
    [
        ({"currency": "EUR", "amount": 0}, "amount.amount", "greater than zero"),
        ({"currency": "EUR", "amount": -100}, "amount.amount", "greater than zero"),
        ({"currency": "EUR", "amount": 10**13}, "amount.amount", "at most"),
        ({"currency": "XYZ", "amount": 100}, "amount.currency", "not a supported"),
        ({"currency": "EUR", "decimal": "1.005"}, "amount.decimal", "2 decimal places"),
        ({"amount": 100}, "amount.currency", "is required"),
    ],
)
def test_bad_amounts_are_400_naming_the_field(
    pair: Pair, amount: dict[str, object], field: str, why: str
) -> None:
    response = pair.transfer(amount=amount)
    assert response.status_code == 400, response.text
    assert why in violations(response)[field]


def test_int64_overflow_is_refused_before_the_service(pair: Pair) -> None:
    response = pair.transfer(amount={"currency": "EUR", "amount": "9223372036854775808"})
    assert response.status_code == 400


def test_mismatched_currency_is_400(pair: Pair) -> None:
    response = pair.transfer(amount={"currency": "USD", "amount": 100})
    assert response.status_code == 400
    assert "amount.currency" in violations(response)


def test_insufficient_funds_is_400_with_the_reason(pair: Pair) -> None:
    response = pair.transfer(amount={"currency": "EUR", "amount": 1_001})
    assert response.status_code == 400
    assert "insufficient funds" in response.json()["message"]


def test_unknown_and_other_peoples_wallets_are_404(pair: Pair) -> None:
    unknown = str(uuid.uuid4())
    assert pair.transfer(destination_wallet_id=unknown).status_code == 404
    assert pair.transfer(source_wallet_id=unknown).status_code == 404
    # Bob cannot spend from Ada's wallet, nor even see it.
    assert pair.transfer(person=pair.bob).status_code == 404
    rest = pair.bank.rest
    assert rest.get(f"/v1/wallets/{pair.ada_wallet}", headers=pair.bob.auth).status_code == 404


def test_transfer_to_self_is_400(pair: Pair) -> None:
    response = pair.transfer(destination_wallet_id=pair.ada_wallet)
    assert response.status_code == 400
    assert "destination" in violations(response)
    by_email = pair.transfer(destination_wallet_id="", recipient_email=pair.ada.email)
    assert by_email.status_code == 400


def test_missing_idempotency_key_is_400(pair: Pair) -> None:
    response = pair.bank.rest.post(
        "/v1/transfers",
        json={
            "source_wallet_id": pair.ada_wallet,
            "destination_wallet_id": pair.bob_wallet,
            "amount": {"currency": "EUR", "amount": 1},
        },
        headers=pair.ada.auth,
    )
    assert response.status_code == 400
    assert "request_id" in violations(response)


def test_closed_wallet_receives_nothing(bank: Bank) -> None:
    ada, ada_wallet = bank.funded_person("closer", 0)
    bob, bob_wallet = bank.funded_person("toclosed", 500)
    closed = bank.rest.post(
        f"/v1/wallets/{ada_wallet}:close", json={}, headers={**ada.auth, **key()}
    )
    assert closed.status_code == 200, closed.text
    response = bank.rest.post(
        "/v1/transfers",
        json={
            "source_wallet_id": bob_wallet,
            "destination_wallet_id": ada_wallet,
            "amount": {"currency": "EUR", "amount": 5},
        },
        headers={**bob.auth, **key()},
    )
    assert response.status_code == 400
    assert bank.balance(bob, bob_wallet) == (500, 500)
    # A wallet with money in it cannot be closed.
    refused = bank.rest.post(
        f"/v1/wallets/{bob_wallet}:close", json={}, headers={**bob.auth, **key()}
    )
    assert refused.status_code == 400


def test_non_admin_cannot_adjust_or_freeze(pair: Pair) -> None:
    rest = pair.bank.rest
    adjust = rest.post(
        f"/v1/wallets/{pair.ada_wallet}:adjust",
        json={"amount": {"currency": "EUR", "amount": 1_000_000}, "reason": "gift"},
        headers={**pair.ada.auth, **key()},
    )
    assert adjust.status_code == 403
    freeze = rest.post(
        f"/v1/wallets/{pair.bob_wallet}:freeze",
        json={"reason": "x"},
        headers={**pair.ada.auth, **key()},
    )
    assert freeze.status_code == 403
