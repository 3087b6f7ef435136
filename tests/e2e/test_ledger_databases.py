"""The mesh with the ledger on two databases of two PostgreSQL servers
(`sharded_databases=2` and a shard server; `make run` with WALLET_LEDGER_SERVERS=2): each
holds half of the logical shards, a user's wallets live in the database of their home
shard, money moves within a database through the edge, and the audit covers both.
Between the two a transfer is two legs (the saga, services/transaction/SHARDS.md), and
so are captures of holds, refunds and batches."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from services.catalogue import TRANSACTION
from services.localmesh.mesh import Mesh
from services.localmesh.processes import free_port
from tests.e2e.mesh_setup import GENEROUS_LIMITS, mesh_config_for_tests
from tests.e2e.people import Bank, Person, audit_ledger
from tests.e2e.prometheus import scrape_all, total
from tests.eventually import eventually

DATABASES = ("ledger", "ledger_2")


@pytest.fixture(scope="module")
def two_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    config = mesh_config_for_tests(tmp_path_factory.mktemp("ledger-databases"), GENEROUS_LIMITS)
    two = dataclasses.replace(config, sharded_databases=2, shard_server_ports=(free_port(),))
    with Mesh(two) as mesh:
        yield mesh


@pytest.fixture(scope="module")
def edge(two_databases: Mesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=two_databases.edge_url, timeout=10) as client:
        yield client


def home_database(person: Person) -> str:
    """Shards 0-127 in the first database, 128-255 in the second (the first split)."""
    return DATABASES[uuid.UUID(person.user_id).bytes[15] // 128]


def people_in(bank: Bank, database: str, count: int) -> list[tuple[Person, str]]:
    """Registers people until `count` live in `database` (each funded with 1,000)."""
    found: list[tuple[Person, str]] = []
    for _ in range(60):
        person, wallet = bank.funded_person("sharded", 1_000)
        if home_database(person) == database:
            found.append((person, wallet))
            if len(found) == count:
                return found
    raise AssertionError(f"60 registrations and not {count} people in {database}")


def wallets_in(mesh: Mesh, database: str) -> set[str]:
    server = mesh.database_server(mesh.spec(TRANSACTION.name), database)
    with psycopg.connect(server.conninfo(database)) as connection:
        rows = connection.execute("SELECT id::text FROM accounts WHERE kind = 'user_wallet'")
        return {row[0] for row in rows}


def delivered_within_calls(mesh: Mesh) -> float:
    return total(
        scrape_all(mesh, "transaction"),
        "ledger_leg_deliveries_total",
        path="sync",
        outcome="delivered",
    )


def transfer(
    edge: httpx.Client, payer: Person, source: str, destination: str, key: str = ""
) -> httpx.Response:
    """100 EUR cents from source to destination (a fresh idempotency key unless given)."""
    return edge.post(
        "/v1/transfers",
        json={
            "source_wallet_id": source,
            "destination_wallet_id": destination,
            "amount": {"currency": "EUR", "amount": 100},
        },
        headers={**payer.auth, "idempotency-key": key or str(uuid.uuid4())},
    )


def test_each_user_lives_in_the_database_of_their_home_shard(
    two_databases: Mesh, edge: httpx.Client
) -> None:
    # Two PostgreSQL servers (WALLET_LEDGER_SERVERS=2): ledger on the mesh's, ledger_2 on
    # the other.
    spec = two_databases.spec(TRANSACTION.name)
    ports = {two_databases.database_server(spec, name).port for name in DATABASES}
    assert ports == {two_databases.config.postgres_port, *two_databases.config.shard_server_ports}
    assert len(ports) == 2
    bank = Bank(edge, two_databases)
    (ada, a), (bob, b) = people_in(bank, "ledger", 2)
    [(cat, c)] = people_in(bank, "ledger_2", 1)
    assert {a, b} <= wallets_in(two_databases, "ledger")
    assert c in wallets_in(two_databases, "ledger_2")
    assert c not in wallets_in(two_databases, "ledger")

    # Within a database: as ever, and both see it.
    paid = transfer(edge, ada, a, b)
    assert paid.status_code == 200, paid.text
    shown = paid.json()["transaction"]["transaction_id"]
    history = edge.get("/v1/transactions", headers=bob.auth).json()["transactions"]
    assert history[0]["transaction_id"] == shown
    assert bank.balance(bob, b) == (1_100, 1_100)

    # Between the two: two legs (a debit in ledger, a credit in ledger_2), delivered
    # within the call; cat sees the transfer ada sees.
    delivered_before = delivered_within_calls(two_databases)
    across = transfer(edge, ada, a, c)
    assert across.status_code == 200, across.text
    shown = across.json()["transaction"]
    assert shown["status"] == "TRANSACTION_STATUS_POSTED"
    history = edge.get("/v1/transactions", headers=cat.auth).json()["transactions"]
    assert history[0]["transaction_id"] == shown["transaction_id"]
    assert bank.balance(ada, a) == (800, 800)
    assert bank.balance(cat, c) == (1_100, 1_100)
    # Counted as delivered within its call; the relay of every instance runs, and finds
    # nothing on its way.
    assert delivered_within_calls(two_databases) - delivered_before == 1
    ledger = scrape_all(two_databases, "transaction")
    assert total(ledger, "ledger_leg_relay_passes_total", result="ok") >= 1
    # (Each instance sets the gauge at its next relay pass.)
    eventually(
        lambda: (
            [
                s.value
                for s in scrape_all(two_databases, "transaction")
                if s.name == "ledger_legs_in_flight"
            ]
            == [0.0, 0.0]
        ),
        "no leg in flight, as every instance counts",
    )

    # A hold for a merchant of the other database, captured by the merchant.
    hold = edge.post(
        "/v1/holds",
        json={
            "wallet_id": a,
            "merchant_wallet_id": c,
            "amount": {"currency": "EUR", "amount": 100},
        },
        headers={**ada.auth, "idempotency-key": str(uuid.uuid4())},
    )
    assert hold.status_code == 200, hold.text
    hold_id = hold.json()["hold"]["hold_id"]
    captured = edge.post(
        f"/v1/holds/{hold_id}:capture",
        json={},
        headers={**cat.auth, "idempotency-key": str(uuid.uuid4())},
    )
    assert captured.status_code == 200, captured.text
    assert captured.json()["transaction"]["status"] == "TRANSACTION_STATUS_POSTED"
    assert bank.balance(ada, a) == (700, 700)
    assert bank.balance(cat, c) == (1_200, 1_200)

    # A batch from ada to both: one transfer within her database, one to the other.
    batch = edge.post(
        "/v1/transfers:batchCreate",
        json={
            "requests": [
                {
                    "request_id": str(uuid.uuid4()),
                    "source_wallet_id": a,
                    "destination_wallet_id": destination,
                    "amount": {"currency": "EUR", "amount": 50},
                }
                for destination in (c, b)
            ]
        },
        headers=ada.auth,
    )
    assert batch.status_code == 200, batch.text
    statuses = [r["transaction"]["status"] for r in batch.json()["results"]]
    assert statuses == ["TRANSACTION_STATUS_POSTED"] * 2
    assert bank.balance(ada, a) == (600, 600)
    assert bank.balance(cat, c) == (1_250, 1_250)

    # The merchant refunds the payment, back across.
    refunded = edge.post(
        f"/v1/transactions/{captured.json()['transaction']['transaction_id']}:refund",
        json={},
        headers={**cat.auth, "idempotency-key": str(uuid.uuid4())},
    )
    assert refunded.status_code == 200, refunded.text
    assert bank.balance(ada, a) == (700, 700)
    assert bank.balance(cat, c) == (1_150, 1_150)

    report = audit_ledger(two_databases)
    assert "ledger audit: OK" in report


def test_a_shard_moves_to_the_other_database_while_the_mesh_serves(
    two_databases: Mesh, edge: httpx.Client
) -> None:
    """`make move-shard` (python -m services.transaction move-shard) moves a person's home
    shard to the other server while every instance serves; they keep their wallet,
    history and balance, and pay as before (a client that meets UNAVAILABLE in the
    second of the switch retries with the same key); moved back, the audit is clean."""
    bank = Bank(edge, two_databases)
    [(ada, a)] = people_in(bank, "ledger", 1)
    [(cat, c)] = people_in(bank, "ledger_2", 1)
    paid = transfer(edge, ada, a, c)
    assert paid.status_code == 200, paid.text
    shard = str(uuid.UUID(ada.user_id).bytes[15])

    moved = two_databases.run_command(TRANSACTION, "move-shard", shard, "--to", "2")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert f"shard {shard}: moved to database 2" in moved.stdout
    assert a in wallets_in(two_databases, "ledger_2")
    assert a not in wallets_in(two_databases, "ledger")

    # Every instance finds her wallet where it is now (reads), and her payment goes there.
    assert bank.balance(ada, a) == (900, 900)
    history = edge.get("/v1/transactions", headers=ada.auth).json()["transactions"]
    assert history[0]["transaction_id"] == paid.json()["transaction"]["transaction_id"]
    key = str(uuid.uuid4())

    def pay_again() -> httpx.Response:
        return transfer(edge, ada, a, c, key)

    answers = [pay_again() for _ in range(2)]
    while answers[-1].status_code == 503 and len(answers) < 20:
        answers.append(pay_again())
    assert {r.status_code for r in answers[:-1]} <= {200, 503}, [r.text for r in answers]
    assert answers[-1].status_code == 200, answers[-1].text
    assert bank.balance(ada, a) == (800, 800)
    assert bank.balance(cat, c) == (1_200, 1_200)

    back = two_databases.run_command(TRANSACTION, "move-shard", shard, "--to", "1")
    assert back.returncode == 0, back.stdout + back.stderr
    assert a in wallets_in(two_databases, "ledger")
    assert bank.balance(ada, a) == (800, 800)
    assert "ledger audit: OK" in audit_ledger(two_databases)
