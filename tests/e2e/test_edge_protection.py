"""Edge protection with small, shared token buckets (a mesh of its own, with
tests/e2e/limits-tight.yaml): per-user limits, per-address limits on anonymous
calls, buckets shared by Envoy replicas, failure modes when the rate-limit service
is down (Redis faults: tests/e2e/test_redis_faults.py), CORS and security headers."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator

import grpc
import httpx
import pytest

from services.localmesh.mesh import Mesh
from services.ratelimit.limits import load_limits
from tests.e2e.mesh_setup import TIGHT_LIMITS, mesh_config_for_tests
from tests.e2e.people import PASSWORD, Person, register_and_login
from wallet.transaction.v1 import transaction_service_pb2 as pb
from wallet.transaction.v1 import transaction_service_pb2_grpc

LIMITS = load_limits(TIGHT_LIMITS)


@pytest.fixture(scope="module")
def tight_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with Mesh(mesh_config_for_tests(tmp_path_factory.mktemp("tight"), TIGHT_LIMITS)) as mesh:
        yield mesh


@pytest.fixture
def edge(tight_mesh: Mesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tight_mesh.edge_url, timeout=10) as client:
        yield client


def client_from(mesh: Mesh, source_address: str) -> httpx.Client:
    """A client whose connections come from another loopback address (its own
    per-address bucket)."""
    transport = httpx.HTTPTransport(local_address=source_address)
    return httpx.Client(base_url=mesh.edge_url, timeout=10, transport=transport)


_addresses = iter(range(10, 250))


def person(mesh: Mesh, prefix: str) -> Person:
    """Registers and logs in from an address of its own: registrations must not
    spend the anonymous bucket the tests measure."""
    with client_from(mesh, f"127.0.1.{next(_addresses)}") as client:
        return register_and_login(client, prefix)


def burst(edge: httpx.Client, person: Person, count: int) -> list[httpx.Response]:
    return [edge.get("/v1/wallets", headers=person.auth) for _ in range(count)]


def upstream_requests(mesh: Mesh, cluster: str) -> int:
    stats = httpx.get(f"{mesh.admin_url}/stats?filter=^cluster\\.{cluster}\\.upstream_rq_total$")
    return int(stats.text.split(":")[1])


def test_a_user_over_the_limit_gets_429_while_another_is_served(
    tight_mesh: Mesh, edge: httpx.Client
) -> None:
    ada = person(tight_mesh, "greedy")
    bob = person(tight_mesh, "patient")
    answers = burst(edge, ada, 20)
    served = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code == 429]
    assert len(served) + len(refused) == 20
    burst_size = LIMITS.classes["default"].burst
    assert burst_size <= len(served) <= burst_size + 4  # a little refill during the burst
    limited = refused[0]
    assert limited.headers["content-type"].startswith("application/json")
    assert limited.json()["code"] == 429
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert "x-ratelimit-limit" in limited.headers
    assert int(served[0].headers["x-ratelimit-remaining"]) >= 0
    # Bob's bucket is his own.
    assert edge.get("/v1/wallets", headers=bob.auth).status_code == 200


def test_grpc_callers_get_resource_exhausted(tight_mesh: Mesh, edge: httpx.Client) -> None:
    ada = person(tight_mesh, "grpcgreedy")
    codes: list[grpc.StatusCode] = []
    with grpc.insecure_channel(tight_mesh.edge_grpc_target) as channel:
        stub = transaction_service_pb2_grpc.TransactionServiceStub(channel)
        for _ in range(15):
            try:
                stub.ListWallets(
                    pb.ListWalletsRequest(),
                    metadata=(("authorization", f"Bearer {ada.access_token}"),),
                )
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as error:
                codes.append(error.code())
    assert grpc.StatusCode.OK in codes
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}


def test_an_empty_bucket_refills_at_the_configured_rate(
    tight_mesh: Mesh, edge: httpx.Client
) -> None:
    ada = person(tight_mesh, "refill")
    burst(edge, ada, 12)  # empty the bucket
    rate = LIMITS.classes["default"].rate_per_second
    served = 0
    started = time.monotonic()
    while time.monotonic() - started < 2.0:
        served += edge.get("/v1/wallets", headers=ada.auth).status_code == 200
    elapsed = time.monotonic() - started
    expected = rate * elapsed
    # Measured against the configuration, with room for a noisy machine.
    assert expected * 0.5 <= served <= expected * 1.5 + 1, (served, expected)


def test_two_envoys_share_one_bucket_per_user(tight_mesh: Mesh, edge: httpx.Client) -> None:
    ada = person(tight_mesh, "twoedges")
    replica = tight_mesh.start_edge_replica()
    try:
        with httpx.Client(base_url=replica.url, timeout=10) as other:
            started = time.monotonic()
            served = 0
            for _ in range(10):
                served += edge.get("/v1/wallets", headers=ada.auth).status_code == 200
                served += other.get("/v1/wallets", headers=ada.auth).status_code == 200
            elapsed = time.monotonic() - started
    finally:
        replica.process.terminate()
    default = LIMITS.classes["default"]
    allowed = default.burst + default.rate_per_second * elapsed + 1
    # Separate buckets would serve about twice the burst.
    assert default.burst <= served <= allowed, (served, allowed)


def test_login_flood_from_one_address_is_stopped_at_the_edge(
    tight_mesh: Mesh, edge: httpx.Client
) -> None:
    victim = person(tight_mesh, "victim")
    before = upstream_requests(tight_mesh, "user_grpc")
    anonymous = LIMITS.classes["anonymous"]
    started = time.monotonic()
    with client_from(tight_mesh, "127.0.0.3") as attacker:
        answers = [
            attacker.post(
                "/v1/auth/login",
                # A new email each time: the per-account limit is not what this tests.
                json={"email": f"guess{i}.{victim.email}", "password": f"guess {i}"},
            )
            for i in range(25)
        ]
    # The bucket refills while the flood runs (slowly on a loaded machine: each failed
    # login costs an argon2 hash), so the burst plus what it earned meanwhile may pass.
    earned = math.ceil((time.monotonic() - started) * anonymous.rate_per_second)
    reached = upstream_requests(tight_mesh, "user_grpc") - before
    refused = sum(r.status_code == 429 for r in answers)
    tried = sum(r.status_code == 401 for r in answers)
    assert tried + refused == 25
    assert tried <= anonymous.burst + earned
    assert refused >= 25 - anonymous.burst - earned
    # Refused attempts never reached the user service (one more request may be Envoy's
    # own JWKS fetch, which goes to the same cluster).
    assert tried <= reached <= tried + 1
    # Another address still logs in.
    with client_from(tight_mesh, "127.0.0.4") as other:
        login = other.post("/v1/auth/login", json={"email": victim.email, "password": PASSWORD})
        assert login.status_code == 200


def _transfer(edge: httpx.Client, person: Person, source: str, destination: str) -> httpx.Response:
    return edge.post(
        "/v1/transfers",
        json={
            "source_wallet_id": source,
            "destination_wallet_id": destination,
            "amount": {"currency": "EUR", "amount": 1},
        },
        headers={**person.auth, "idempotency-key": str(uuid.uuid4())},
    )


def _wallet(edge: httpx.Client, person: Person) -> str:
    response = edge.post(
        "/v1/wallets",
        json={"currency": "EUR"},
        headers={**person.auth, "idempotency-key": str(uuid.uuid4())},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["wallet"]["wallet_id"])


def test_cors_preflight_and_security_headers(tight_mesh: Mesh, edge: httpx.Client) -> None:
    allowed = edge.options(
        "/v1/wallets",
        headers={
            "origin": "http://localhost:3000",
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, idempotency-key",
        },
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "idempotency-key" in allowed.headers["access-control-allow-headers"]
    stranger = edge.options(
        "/v1/wallets",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in stranger.headers
    answer = edge.get("/.well-known/jwks.json")
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["cache-control"] == "no-store"


def test_rate_limit_service_down_same_failure_modes(tight_mesh: Mesh, edge: httpx.Client) -> None:
    """Both rate-limit instances gone (Redis fine): reads pass, money is refused."""
    ada = person(tight_mesh, "nolimiter")
    bob = person(tight_mesh, "nolimiterto")
    ada_wallet, bob_wallet = _wallet(edge, ada), _wallet(edge, bob)
    for index in range(2):
        tight_mesh.kill_instance("ratelimit", index)
    try:
        assert edge.get("/v1/wallets", headers=ada.auth).status_code == 200
        refused = _transfer(edge, ada, ada_wallet, bob_wallet)
        assert refused.status_code == 503, refused.text
    finally:
        for index in range(2):
            tight_mesh.restart_instance("ratelimit", index, wait_for_edge=False)
        tight_mesh.wait_for_edge()
    assert _transfer(edge, ada, ada_wallet, bob_wallet).status_code == 400  # reached the ledger
