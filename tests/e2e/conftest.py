"""End-to-end fixtures: the whole mesh (PostgreSQL, Redis, two instances of
each service, Envoy) started once per session on free loopback ports."""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from services.catalogue import TRANSACTION, USER
from services.localmesh.mesh import Mesh, MeshConfig
from tests.fakes.paypal_api import FakePayPal
from tests.fakes.stripe_api import FakeStripe
from wallet.user.v1 import user_service_pb2_grpc

PASSWORD = "correct horse battery"
_emails = itertools.count()


GENEROUS_LIMITS = Path(__file__).with_name("limits-generous.yaml")
TIGHT_LIMITS = Path(__file__).with_name("limits-tight.yaml")


# Payment timings of the test meshes: provider calls give up after 0.5 s (3 tries),
# the sandbox's slow cards settle (and send their webhook) after 3 s, and the
# reconciler looks at a pending payment 2 s after it was made, then every 0.3 s pass.
PAYMENT_TIMINGS = {
    "GATEWAY_CALL_TIMEOUT_MS": "500",
    "GATEWAY_RETRY_BASE_DELAY_MS": "50",
    "GATEWAY_SANDBOX_WEBHOOK_DELAY_MS": "3000",
    "GATEWAY_BREAKER_FAILURES": "5",
    "GATEWAY_BREAKER_OPEN_MS": "1500",
    "TRANSACTION_GATEWAY_TIMEOUT_MS": "4500",
    "TRANSACTION_RECONCILE_AFTER_MS": "2000",
    "TRANSACTION_RECONCILE_INTERVAL_MS": "300",
}


def mesh_config_for_tests(run_dir: Path, limits: Path) -> MeshConfig:
    return dataclasses.replace(
        MeshConfig.for_tests(run_dir), ratelimit_config=limits, extra_env=PAYMENT_TIMINGS
    )


@pytest.fixture(scope="session")
def fake_stripe() -> Iterator[FakeStripe]:
    """Stripe's API on loopback, for the session mesh's gateway (tests/fakes)."""
    with FakeStripe() as server:
        yield server


@pytest.fixture(scope="session")
def fake_paypal() -> Iterator[FakePayPal]:
    with FakePayPal() as server:
        yield server


@pytest.fixture(scope="session")
def mesh(
    tmp_path_factory: pytest.TempPathFactory, fake_stripe: FakeStripe, fake_paypal: FakePayPal
) -> Iterator[Mesh]:
    config = mesh_config_for_tests(tmp_path_factory.mktemp("mesh"), GENEROUS_LIMITS)
    # Stripe and PayPal on too: the gateway's official clients, pointed at the fakes
    # by base URL, exactly as they would be at the providers.
    providers = {
        "GATEWAY_STRIPE_API_KEY": "sk_test_wallet_mesh",
        "GATEWAY_STRIPE_WEBHOOK_SECRET": fake_stripe.webhook_secret,
        "GATEWAY_STRIPE_API_BASE": fake_stripe.url,
        "GATEWAY_PAYPAL_CLIENT_ID": fake_paypal.client_id,
        "GATEWAY_PAYPAL_CLIENT_SECRET": fake_paypal.client_secret,
        "GATEWAY_PAYPAL_WEBHOOK_ID": fake_paypal.webhook_id,
        "GATEWAY_PAYPAL_API_BASE": fake_paypal.base_url,
    }
    config = dataclasses.replace(config, extra_env={**config.extra_env, **providers})
    with Mesh(config) as running:
        yield running


@pytest.fixture
def rest(mesh: Mesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mesh.edge_url, timeout=10) as client:
        yield client


@pytest.fixture
async def edge_channel(mesh: Mesh) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(mesh.edge_grpc_target) as channel:
        yield channel


@pytest.fixture
def users(edge_channel: grpc.aio.Channel) -> user_service_pb2_grpc.UserServiceAsyncStub:
    return user_service_pb2_grpc.UserServiceStub(edge_channel)


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


@pytest.fixture
def bank(rest: httpx.Client, mesh: Mesh) -> Bank:
    return Bank(rest, mesh)


def audit_ledger(mesh: Mesh) -> str:
    """Runs the documented audit command against the mesh's ledger."""
    result = mesh.run_command(TRANSACTION, "audit", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
