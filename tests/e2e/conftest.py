"""End-to-end fixtures: the whole mesh (PostgreSQL, Redis, two instances of
each service, Envoy) started once per session on free loopback ports."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
import httpx
import pytest

from services.localmesh.mesh import USER, Mesh, MeshConfig
from wallet.user.v1 import user_service_pb2_grpc

PASSWORD = "correct horse battery"
_emails = itertools.count()


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with Mesh(MeshConfig.for_tests(tmp_path_factory.mktemp("mesh"))) as running:
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
def users(edge_channel: grpc.aio.Channel) -> user_service_pb2_grpc.UserServiceStub:
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
    result = subprocess.run(
        mesh.service_command(USER, "grant-admin", email),
        env=mesh.service_env(USER, 0),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
