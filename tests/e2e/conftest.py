"""End-to-end fixtures: the whole mesh (PostgreSQL, Redis, two instances of
each service, Envoy) started once per session on free loopback ports."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator

import grpc
import httpx
import pytest

from services.localmesh.mesh import Mesh
from tests.e2e.mesh_setup import GENEROUS_LIMITS, mesh_config_for_tests
from tests.e2e.people import Bank
from tests.fakes.paypal_api import FakePayPal
from tests.fakes.stripe_api import FakeStripe
from wallet.user.v1 import user_service_pb2_grpc


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


@pytest.fixture
def bank(rest: httpx.Client, mesh: Mesh) -> Bank:
    return Bank(rest, mesh)
