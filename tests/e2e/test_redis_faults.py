"""Redis faults through the edge (a mesh of its own, with tests/e2e/limits-tight.yaml):
money keeps moving while Redis is stopped or hung, never past the configured limit,
because each of the two rate-limit instances decides from its fair share meanwhile;
once Redis answers again, the shared buckets are back."""

from __future__ import annotations

import itertools
import os
import signal
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from services.localmesh.mesh import Mesh
from services.ratelimit.limits import load_limits
from tests.e2e.mesh_setup import TIGHT_LIMITS, mesh_config_for_tests
from tests.e2e.people import Bank, Person, register_and_login
from tests.eventually import eventually

MONEY = load_limits(TIGHT_LIMITS).classes["money"]  # 2 per second, burst 3
TRANSFERS = 20  # in a row, as fast as the edge answers: more than the limit lets through
_addresses = itertools.count(10)


@pytest.fixture(scope="module")
def faults_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with Mesh(mesh_config_for_tests(tmp_path_factory.mktemp("redis-faults"), TIGHT_LIMITS)) as mesh:
        yield mesh


@pytest.fixture(scope="module")
def edge(faults_mesh: Mesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=faults_mesh.edge_url, timeout=15) as client:
        yield client


@pytest.fixture(scope="module")
def faults_bank(edge: httpx.Client, faults_mesh: Mesh) -> Bank:
    return Bank(edge, faults_mesh)


def funded(bank: Bank, prefix: str, amount: int) -> tuple[Person, str]:
    """A person registered from a loopback address of their own (the anonymous bucket
    is per address and small), with a wallet holding `amount`."""
    transport = httpx.HTTPTransport(local_address=f"127.0.3.{next(_addresses)}")
    with httpx.Client(base_url=bank.mesh.edge_url, timeout=15, transport=transport) as client:
        person = register_and_login(client, prefix)
    wallet_id = bank.open_wallet(person)
    if amount:
        bank.credit(wallet_id, amount)
    return person, wallet_id


def transfer(edge: httpx.Client, payer: Person, source: str, destination: str) -> int:
    response = edge.post(
        "/v1/transfers",
        json={
            "source_wallet_id": source,
            "destination_wallet_id": destination,
            "amount": {"currency": "EUR", "amount": 1},
        },
        headers={**payer.auth, "idempotency-key": str(uuid.uuid4())},
    )
    return response.status_code


def degraded_gauges(mesh: Mesh) -> list[float]:
    """ratelimit_degraded of each rate-limit instance."""
    values = []
    for address in mesh.metrics_addresses("ratelimit"):
        text = httpx.get(f"http://{address}/metrics", timeout=5).text
        values += [
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "ratelimit_degraded"
        ]
    return values


def redis_pid(mesh: Mesh) -> int:
    with redis.Redis.from_url(mesh.redis.url) as client:
        return int(client.info("server")["process_id"])


def log_problems(mesh: Mesh) -> list[str]:
    """Tracebacks and errors in the rate-limit instances' logs."""
    return [
        line
        for path in sorted(mesh.logs_dir.glob("ratelimit-*.log"))
        for line in path.read_text().splitlines()
        if "Traceback" in line or '"ERROR"' in line or "ExecuteBatchError" in line
    ]


def test_redis_stopped_money_moves_at_most_at_the_limit(
    faults_mesh: Mesh, edge: httpx.Client, faults_bank: Bank
) -> None:
    payer, source = funded(faults_bank, "noredispayer", 1_000)
    payee, destination = funded(faults_bank, "noredispayee", 0)
    faults_mesh.stop_redis()
    try:
        started = time.monotonic()
        codes = [transfer(edge, payer, source, destination) for _ in range(TRANSFERS)]
        elapsed = time.monotonic() - started
        served, refused = codes.count(200), codes.count(429)
        assert served + refused == TRANSFERS, codes  # no 503: money does not fail closed
        # The two instances' shares add up to the limit: its burst plus its refill.
        assert 1 <= served <= MONEY.burst + MONEY.rate_per_second * elapsed, (served, elapsed)
        assert refused >= 1
        assert faults_bank.balance(payee, destination) == (served, served)
        assert degraded_gauges(faults_mesh) == [1.0, 1.0]
    finally:
        faults_mesh.start_redis()

    def shared_again() -> bool:
        transfer(edge, payer, source, destination)
        return degraded_gauges(faults_mesh) == [0.0, 0.0]

    eventually(shared_again, "both rate-limit instances on the shared buckets again")


def test_redis_hung_money_moves_and_nothing_is_logged_as_an_error(
    faults_mesh: Mesh, edge: httpx.Client, faults_bank: Bank
) -> None:
    payer, source = funded(faults_bank, "hungpayer", 1_000)
    payee, destination = funded(faults_bank, "hungpayee", 0)
    pid = redis_pid(faults_mesh)
    os.kill(pid, signal.SIGSTOP)
    try:
        # Slow (the ledger's cache and revocation check wait for their timeouts), but
        # the rate-limit decisions arrive within Envoy's timeout: never a 503.
        codes = [transfer(edge, payer, source, destination) for _ in range(4)]
        assert set(codes) <= {200, 429}, codes
        assert codes.count(200) >= 1
        assert degraded_gauges(faults_mesh).count(1.0) >= 1
    finally:
        os.kill(pid, signal.SIGCONT)
    assert faults_bank.balance(payee, destination)[0] == codes.count(200)
    assert log_problems(faults_mesh) == []
