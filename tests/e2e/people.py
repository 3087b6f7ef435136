"""The people and the money of the end-to-end tests, through the edge as a client would:
registering and logging in over REST, a bank that opens, funds and moves money, and the
ledger's audit of the mesh's database."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from services.catalogue import TRANSACTION, USER
from services.localmesh.mesh import Mesh

PASSWORD = "correct horse battery"
_emails = itertools.count()


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{next(_emails)}-{id(_emails)}@example.com"


@dataclass(frozen=True)
class Person:
    user_id: str
    email: str
    access_token: str
    refresh_token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.access_token}"}


def register_and_login(rest: httpx.Client, prefix: str = "user") -> Person:
    email = unique_email(prefix)
    created = rest.post(
        "/v1/users", json={"email": email, "password": PASSWORD, "display_name": prefix.title()}
    )
    assert created.status_code == 200, created.text
    login = rest.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    body = login.json()
    return Person(body["user_id"], email, body["access_token"], body["refresh_token"])


def grant_admin(mesh: Mesh, email: str) -> None:
    """The documented way to make an admin: the user service's grant-admin command."""
    result = mesh.run_command(USER, "grant-admin", email, timeout=60)
    assert result.returncode == 0, result.stderr


class Bank:
    """Helpers for ledger tests through the edge (REST)."""

    def __init__(self, rest: httpx.Client, mesh: Mesh) -> None:
        self.rest = rest
        self.mesh = mesh
        self._admin: Person | None = None

    @property
    def admin(self) -> Person:
        if self._admin is None:
            person = register_and_login(self.rest, "operator")
            grant_admin(self.mesh, person.email)
            login = self.rest.post(
                "/v1/auth/login", json={"email": person.email, "password": PASSWORD}
            ).json()
            self._admin = Person(
                person.user_id, person.email, login["access_token"], login["refresh_token"]
            )
        return self._admin

    def open_wallet(self, person: Person, currency: str = "EUR") -> str:
        response = self.rest.post(
            "/v1/wallets",
            json={"currency": currency},
            headers={**person.auth, "idempotency-key": f"open-{person.user_id}-{currency}"},
        )
        assert response.status_code == 200, response.text
        return str(response.json()["wallet"]["wallet_id"])

    def credit(self, wallet_id: str, amount: int, currency: str = "EUR") -> None:
        response = self.rest.post(
            f"/v1/wallets/{wallet_id}:adjust",
            json={
                "request_id": f"credit-{wallet_id}-{next(_emails)}",
                "amount": {"currency": currency, "amount": amount},
                "reason": "test funding",
            },
            headers=self.admin.auth,
        )
        assert response.status_code == 200, response.text

    def balance(self, person: Person, wallet_id: str) -> tuple[int, int]:
        """(balance, available) in minor units."""
        response = self.rest.get(f"/v1/wallets/{wallet_id}", headers=person.auth)
        assert response.status_code == 200, response.text
        wallet = response.json()["wallet"]
        return int(wallet["balance"]["amount"]), int(wallet["available_balance"]["amount"])

    def top_up(
        self,
        person: Person,
        wallet_id: str,
        amount: int,
        payment_method: str = "pm_card_visa",
        key: str | None = None,
        provider: str = "",
    ) -> httpx.Response:
        return self.rest.post(
            f"/v1/wallets/{wallet_id}:top-up",
            json={
                "request_id": key or str(uuid.uuid4()),
                "amount": {"currency": "EUR", "amount": amount},
                "payment_method": payment_method,
                "provider": provider,
            },
            headers=person.auth,
        )

    def withdraw(
        self,
        person: Person,
        wallet_id: str,
        amount: int,
        destination: str = "ba_sandbox_ok",
        provider: str = "",
    ) -> httpx.Response:
        return self.rest.post(
            f"/v1/wallets/{wallet_id}:withdraw",
            json={
                "request_id": str(uuid.uuid4()),
                "amount": {"currency": "EUR", "amount": amount},
                "destination": destination,
                "provider": provider,
            },
            headers=person.auth,
        )

    def transaction(self, person: Person, transaction_id: str) -> dict[str, Any]:
        response = self.rest.get(f"/v1/transactions/{transaction_id}", headers=person.auth)
        assert response.status_code == 200, response.text
        return dict(response.json()["transaction"])

    def funded_person(self, prefix: str, amount: int = 10_000) -> tuple[Person, str]:
        person = register_and_login(self.rest, prefix)
        wallet_id = self.open_wallet(person)
        if amount:
            self.credit(wallet_id, amount)
        return person, wallet_id


def audit_ledger(mesh: Mesh) -> str:
    """Runs the documented audit command against the mesh's ledger."""
    result = mesh.run_command(TRANSACTION, "audit", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
