"""PostgreSQL restarting (a fast shutdown, then a start: what `pg_ctl restart -m
fast` does) under a small concurrent load through the edge: no call answers 500,
every acknowledged transfer is booked exactly once, and the audit stays clean.
The session mesh's PostgreSQL is restarted; the test waits for every instance to
be healthy again at the edge before it ends, so later tests find the mesh whole."""

from __future__ import annotations

import collections
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from services.localmesh.mesh import Mesh
from tests.e2e.people import PASSWORD, Bank, Person, audit_ledger
from tests.eventually import eventually

FUNDS = 1_000_000
TRANSFER_WORKERS = 3
# A client that got 503 for a transfer sends it again with the same key, for as long
# as this: what a well-behaved client does, and safe because of the key.
CLIENT_RETRY_SECONDS = 30.0
OPERATIONS_AFTER_RESTART = 10  # per worker, before the load stops


@dataclass
class Load:
    """What the workers saw, shared between their threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    # (worker, idempotency key, amount, transaction id) of every 200 answer.
    acknowledged: list[tuple[int, str, int, str]] = field(default_factory=list)
    done: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: list[str] = field(default_factory=list)
    slowest: dict[str, float] = field(default_factory=dict)  # seconds, per worker
    stop: threading.Event = field(default_factory=threading.Event)

    def saw(self, worker: str, response: httpx.Response) -> None:
        with self.lock:
            self.statuses[response.status_code] += 1
            seconds = response.elapsed.total_seconds()
            self.slowest[worker] = max(self.slowest.get(worker, 0.0), seconds)
            if response.status_code >= 500:
                self.errors.append(f"{worker}: {response.status_code} {response.text[:200]}")

    def count(self, worker: str) -> None:
        with self.lock:
            self.done[worker] += 1

    def completed(self, workers: list[str]) -> dict[str, int]:
        with self.lock:
            return {worker: self.done[worker] for worker in workers}


def transfer_worker(
    mesh: Mesh, load: Load, index: int, payer: Person, source: str, destination: str
) -> Callable[[], None]:
    name = f"transfers-{index}"

    def run() -> None:
        with httpx.Client(base_url=mesh.edge_url, timeout=20) as client:
            amount = 0
            while not load.stop.is_set():
                amount = amount % 9 + 1
                key = f"pg-restart-{uuid.uuid4()}"
                body = {
                    "source_wallet_id": source,
                    "destination_wallet_id": destination,
                    "amount": {"currency": "EUR", "amount": amount},
                }
                headers = {**payer.auth, "idempotency-key": key}
                give_up = time.monotonic() + CLIENT_RETRY_SECONDS
                while True:
                    response = client.post("/v1/transfers", json=body, headers=headers)
                    load.saw(name, response)
                    if response.status_code == 200:
                        transaction_id = response.json()["transaction"]["transaction_id"]
                        with load.lock:
                            load.acknowledged.append((index, key, amount, transaction_id))
                        break
                    if response.status_code != 503 or time.monotonic() > give_up:
                        break
                load.count(name)

    return run


def read_worker(mesh: Mesh, load: Load, person: Person, wallet_id: str) -> Callable[[], None]:
    def run() -> None:
        with httpx.Client(base_url=mesh.edge_url, timeout=20) as client:
            while not load.stop.is_set():
                load.saw("reads", client.get(f"/v1/wallets/{wallet_id}", headers=person.auth))
                load.saw("reads", client.get("/v1/transactions", headers=person.auth))
                load.count("reads")

    return run


def login_worker(mesh: Mesh, load: Load, person: Person) -> Callable[[], None]:
    def run() -> None:
        with httpx.Client(base_url=mesh.edge_url, timeout=20) as client:
            while not load.stop.is_set():
                response = client.post(
                    "/v1/auth/login", json={"email": person.email, "password": PASSWORD}
                )
                load.saw("logins", response)
                load.count("logins")

    return run


def test_a_postgres_restart_under_load_answers_no_500_and_books_each_transfer_once(
    mesh: Mesh, bank: Bank, rest: httpx.Client
) -> None:
    pairs = [
        (bank.funded_person(f"pgpayer{i}", FUNDS), bank.funded_person(f"pgpayee{i}", 0))
        for i in range(TRANSFER_WORKERS)
    ]
    load = Load()
    (first_payer, first_wallet), _ = pairs[0]
    workers = {
        **{
            f"transfers-{i}": transfer_worker(mesh, load, i, payer, source, destination)
            for i, ((payer, source), (_, destination)) in enumerate(pairs)
        },
        "reads": read_worker(mesh, load, first_payer, first_wallet),
        "logins": login_worker(mesh, load, first_payer),
    }
    names = list(workers)
    threads = [threading.Thread(target=run, name=name) for name, run in workers.items()]
    for thread in threads:
        thread.start()
    try:
        eventually(lambda: min(load.completed(names).values()) >= 3, "the load to get going", 60)
        # pg_ctl stop --mode fast, then pg_ctl start: every connection of every
        # instance is cut, some in the middle of a call.
        started = time.monotonic()
        mesh.postgres.stop()
        mesh.postgres.start()
        restart_seconds = time.monotonic() - started
        restarted = load.completed(names)
        eventually(
            lambda: all(
                count - restarted[name] >= OPERATIONS_AFTER_RESTART
                for name, count in load.completed(names).items()
            ),
            "calls to go on after the restart",
            120,
        )
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)

    # No 500, nor any other 5xx than the retryable 503 (which the edge's and the
    # services' retries should make rare).
    seen = (load.statuses, load.errors, load.slowest, f"restart took {restart_seconds:.2f} s")
    assert set(load.statuses) <= {200, 503}, seen

    # Every acknowledged transfer exists once: one transaction per key, and the
    # money moved once per transfer.
    transaction_ids = [transaction_id for *_, transaction_id in load.acknowledged]
    assert len(set(transaction_ids)) == len(load.acknowledged)
    for index, ((payer, source), (payee, destination)) in enumerate(pairs):
        sent = sum(amount for worker, _, amount, _ in load.acknowledged if worker == index)
        assert sent > 0
        assert bank.balance(payer, source) == (FUNDS - sent, FUNDS - sent)
        assert bank.balance(payee, destination) == (sent, sent)
    # Sent again, each key answers its original transaction (and books nothing).
    sample = load.acknowledged[:: max(1, len(load.acknowledged) // 30)]
    for index, key, amount, transaction_id in sample:
        (payer, source), (_, destination) = pairs[index]
        again = rest.post(
            "/v1/transfers",
            json={
                "source_wallet_id": source,
                "destination_wallet_id": destination,
                "amount": {"currency": "EUR", "amount": amount},
            },
            headers={**payer.auth, "idempotency-key": key},
        )
        assert again.status_code == 200, again.text
        assert again.json()["transaction"]["transaction_id"] == transaction_id
    assert "ledger audit: OK" in audit_ledger(mesh)

    # The instances recovered by themselves: the edge sees every one healthy again.
    mesh.wait_for_edge(timeout=60)
    assert [
        f"{spec.name}-{index + 1}"
        for spec in mesh.config.services
        for index in range(mesh.config.instance_count(spec))
        if not mesh.instance(spec.name, index).is_running
    ] == []
