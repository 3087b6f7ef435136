"""Payments when the provider or the gateway fails: a provider that times out, a
sustained outage (circuit breakers), a gateway instance killed in a storm of
top-ups. In a mesh of their own: they open breakers on purpose."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from redis import Redis

from services.gateway.adapters.sandbox import OUTAGE_KEY
from services.localmesh.mesh import Mesh
from tests.e2e.mesh_setup import GENEROUS_LIMITS, mesh_config_for_tests
from tests.e2e.people import Bank, Person, audit_ledger
from tests.e2e.prometheus import scrape, scrape_all, total
from tests.eventually import eventually


@pytest.fixture(scope="module")
def troubled_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    config = mesh_config_for_tests(tmp_path_factory.mktemp("payments"), GENEROUS_LIMITS)
    # Breakers stay open long enough to observe both open at once.
    config = dataclasses.replace(
        config, extra_env={**config.extra_env, "GATEWAY_BREAKER_OPEN_MS": "4000"}
    )
    with Mesh(config) as mesh:
        yield mesh


@pytest.fixture
def troubled_bank(troubled_mesh: Mesh) -> Iterator[Bank]:
    with httpx.Client(base_url=troubled_mesh.edge_url, timeout=30) as client:
        yield Bank(client, troubled_mesh)


def pending_transactions(mesh: Mesh) -> int:
    with psycopg.connect(mesh.postgres.conninfo("ledger")) as connection:
        row = connection.execute(
            "SELECT count(*) FROM transactions WHERE status = 'pending'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def breaker_states(mesh: Mesh) -> list[float]:
    return [
        total(scrape(f"http://{a}/metrics"), "gateway_circuit_breaker_state", provider="sandbox")
        for a in mesh.metrics_addresses("gateway")
    ]


def close_the_breakers(bank: Bank, mesh: Mesh, person: Person, wallet: str) -> None:
    """Top-ups until every instance's breaker is closed (each closes on its own
    instance's successful probe; round robin spreads the top-ups)."""

    def closed() -> bool:
        bank.top_up(person, wallet, 100)
        return breaker_states(mesh) == [0.0, 0.0]

    eventually(closed, "every gateway instance's breaker to close")


def test_a_provider_timeout_leaves_the_top_up_pending_then_it_is_credited_once(
    troubled_bank: Bank, troubled_mesh: Mesh
) -> None:
    bank = troubled_bank
    ada, wallet = bank.funded_person("timeout", 0)
    response = bank.top_up(ada, wallet, 3_000, "pm_card_timeout")
    assert response.status_code == 200, response.text
    transaction_id = response.json()["transaction"]["transaction_id"]
    # The sandbox took the money but never answered in time: pending, not failed.
    assert response.json()["transaction"]["status"] == "TRANSACTION_STATUS_PENDING"
    assert bank.balance(ada, wallet) == (0, 0)
    eventually(
        lambda: bank.transaction(ada, transaction_id)["status"] == "TRANSACTION_STATUS_POSTED",
        "the webhook or the reconciler",
    )
    assert bank.balance(ada, wallet) == (3_000, 3_000)
    settled = total(scrape_all(troubled_mesh, "transaction"), "ledger_external_settled_total")
    assert settled >= 1


def test_a_sustained_outage_opens_the_breakers_and_they_close_after_recovery(
    troubled_bank: Bank, troubled_mesh: Mesh
) -> None:
    bank, mesh = troubled_bank, troubled_mesh
    ada, wallet = bank.funded_person("outage", 0)
    redis = Redis.from_url(mesh.redis.url)
    redis.set(OUTAGE_KEY, "1")
    try:
        answers: list[httpx.Response] = []

        def both_breakers_open() -> bool:
            answers.append(bank.top_up(ada, wallet, 100))
            return breaker_states(mesh) == [1.0, 1.0]

        eventually(both_breakers_open, "both gateway instances to open the sandbox's breaker")
        # Open: refused at once with UNAVAILABLE (503), nothing sent to the provider.
        key = str(uuid.uuid4())
        refused = bank.top_up(ada, wallet, 100, key=key)
        assert refused.status_code == 503, refused.text
        assert refused.json()["details"][0]["reason"] == "PROVIDER_UNAVAILABLE"
        # Nothing was sent, so the same request (its key) tries again: still refused
        # while the breakers are open, and a new attempt each time, never charged.
        again = bank.top_up(ada, wallet, 100, key=key)
        assert again.status_code == 503, again.text
        assert again.json()["message"] != refused.json()["message"]  # another attempt
        short_circuited = total(
            scrape_all(mesh, "gateway"), "gateway_provider_calls_total", outcome="circuit_open"
        )
        assert short_circuited >= 1
        assert bank.balance(ada, wallet) == (0, 0)
        # Those that reached the provider before the breakers opened stay pending:
        # never failed, as the provider may have taken the money.
        statuses = {a.json()["transaction"]["status"] for a in answers if a.status_code == 200}
        assert statuses <= {"TRANSACTION_STATUS_PENDING"}
        reached = len([a for a in answers if a.status_code == 200])
    finally:
        redis.delete(OUTAGE_KEY)

    # Recovered: after the open period, each instance lets a probe through, and its
    # success closes that instance's breaker.
    close_the_breakers(bank, mesh, ada, wallet)
    # The refused top-up, sent again with its key, is charged now, once.
    retried = bank.top_up(ada, wallet, 100, key=key)
    assert retried.status_code == 200, retried.text
    assert retried.json()["transaction"]["status"] == "TRANSACTION_STATUS_POSTED"
    assert bank.top_up(ada, wallet, 100, key=key).json() == retried.json()
    # The outage's pending top-ups are driven to the provider again and credited.
    eventually(lambda: pending_transactions(mesh) == 0, "the reconciler to settle everything")
    posted = bank.rest.get(
        "/v1/transactions",
        params={"status": "TRANSACTION_STATUS_POSTED", "page_size": 100},
        headers=ada.auth,
    ).json()["transactions"]
    assert bank.balance(ada, wallet)[0] == 100 * len(posted)
    assert len(posted) >= reached
    assert "ledger audit: OK" in audit_ledger(mesh)


def test_a_gateway_instance_killed_in_a_top_up_storm_loses_and_doubles_nothing(
    troubled_bank: Bank, troubled_mesh: Mesh
) -> None:
    bank, mesh = troubled_bank, troubled_mesh
    people = [bank.funded_person(f"storm{i}", 0) for i in range(4)]
    close_the_breakers(bank, mesh, *people[0])  # whatever an earlier test left
    assert pending_transactions(mesh) == 0
    # No card that fails on purpose: enough failures in a row would open the breaker.
    cards = ["pm_card_visa", "tok_visa", "pm_card_delayed", "pm_card_visa"]

    def top_up(n: int) -> int:
        person, wallet = people[n % len(people)]
        return bank.top_up(person, wallet, 100 + n, cards[n % len(cards)]).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(top_up, n) for n in range(60)]
        concurrent.futures.wait(futures[:10])
        mesh.kill_instance("gateway", 0)
        codes = [f.result() for f in futures]
    mesh.restart_instance("gateway", 0)
    # Every request got an answer: the transaction service retried on the other
    # instance, or kept the payment pending for the reconciler.
    assert set(codes) <= {200}, codes

    eventually(
        lambda: pending_transactions(mesh) == 0, "the reconciler to settle everything", timeout=60
    )
    assert "ledger audit: OK" in audit_ledger(mesh)
    # Every charge the provider made is credited exactly once, and nothing else is.
    with psycopg.connect(mesh.postgres.conninfo("payments")) as payments:
        charged = {
            str(key): amount
            for key, amount in payments.execute(
                "SELECT idempotency_key, amount FROM sandbox_payments"
                " WHERE kind = 'charge' AND status = 'succeeded'"
            ).fetchall()
        }
    with psycopg.connect(mesh.postgres.conninfo("ledger")) as ledger:
        credited = {
            str(txn): (amount, postings)
            for txn, amount, postings in ledger.execute(
                "SELECT t.id, t.amount, (SELECT count(*) FROM postings p"
                "  WHERE p.transaction_id = t.id)"
                " FROM transactions t WHERE t.type = 'top_up' AND t.status = 'posted'"
            ).fetchall()
        }
    assert set(charged) == set(credited)
    assert all(credited[k] == (amount, 2) for k, amount in charged.items())
