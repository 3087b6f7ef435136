"""Prometheus metrics of the whole mesh: every instance's /metrics parses, and the
counters move by exactly what calls through the edge did. Other tests share the
mesh, so only differences between two scrapes are compared, summed over instances."""

from __future__ import annotations

import uuid

import grpc
import pytest

from services.localmesh.mesh import Mesh
from tests.e2e.people import PASSWORD, Bank
from tests.e2e.prometheus import scrape, scrape_all, total
from wallet.user.v1 import user_service_pb2, user_service_pb2_grpc

SERVICES = ("user", "transaction", "gateway", "ratelimit")


def test_every_instance_serves_metrics_that_parse(mesh: Mesh) -> None:
    for service in SERVICES:
        addresses = mesh.metrics_addresses(service)
        assert len(addresses) == 2
        for address in addresses:
            names = {sample.name for sample in scrape(f"http://{address}/metrics")}
            # Envoy health-checks every instance, so each has counted RPCs already.
            assert {"rpc_requests_total", "rpc_request_duration_seconds_bucket"} <= names
            if service != "ratelimit":
                assert "db_pool_connections" in names
    assert total(scrape_all(mesh, "transaction"), "db_pool_connections", state="size") > 0


def _transfer(bank: Bank, auth: dict[str, str], body: dict[str, object], key: str) -> None:
    response = bank.rest.post("/v1/transfers", json=body, headers={**auth, "idempotency-key": key})
    assert response.status_code == 200, response.text


def test_transfers_and_a_login_move_the_counters(bank: Bank, mesh: Mesh) -> None:
    ada, ada_wallet = bank.funded_person("metricspayer", 10_000)
    _, bob_wallet = bank.funded_person("metricspayee", 0)

    def snapshot() -> dict[str, float]:
        ledger = scrape_all(mesh, "transaction")
        transfers = "ledger_transactions_total"
        return {
            "transfers ok": total(ledger, transfers, type="transfer", outcome="ok"),
            "transfers replayed": total(ledger, transfers, type="transfer", outcome="replayed"),
            "EUR moved": total(
                ledger, "ledger_amount_minor_total", type="transfer", currency="EUR"
            ),
            "CreateTransfer OK": total(
                ledger, "rpc_requests_total", method="CreateTransfer", code="OK"
            ),
            "money decisions ok": total(
                scrape_all(mesh, "ratelimit"),
                "ratelimit_decisions_total",
                decision="ok",
                **{"class": "money"},
            ),
            "logins ok": total(scrape_all(mesh, "user"), "user_logins_total", result="ok"),
        }

    before = snapshot()
    body: dict[str, object] = {"source_wallet_id": ada_wallet, "destination_wallet_id": bob_wallet}
    first_key = str(uuid.uuid4())
    _transfer(bank, ada.auth, {**body, "amount": {"currency": "EUR", "amount": 125}}, first_key)
    _transfer(
        bank, ada.auth, {**body, "amount": {"currency": "EUR", "amount": 250}}, str(uuid.uuid4())
    )
    login = bank.rest.post("/v1/auth/login", json={"email": ada.email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    after = snapshot()
    change = {name: after[name] - before[name] for name in before}
    assert change["transfers ok"] == 2
    assert change["transfers replayed"] == 0
    assert change["EUR moved"] == 125 + 250
    assert change["CreateTransfer OK"] == 2
    assert change["logins ok"] == 1
    assert change["money decisions ok"] >= 2

    # The same key again: the stored answer, counted as replayed, and no money moves.
    _transfer(bank, ada.auth, {**body, "amount": {"currency": "EUR", "amount": 125}}, first_key)
    again = snapshot()
    assert again["transfers replayed"] - after["transfers replayed"] == 1
    assert again["transfers ok"] == after["transfers ok"]
    assert again["EUR moved"] == after["EUR moved"]


def test_refusals_and_authentication_failures_are_counted(bank: Bank, mesh: Mesh) -> None:
    ada, ada_wallet = bank.funded_person("metricspoor", 100)
    _, bob_wallet = bank.funded_person("metricsrich", 0)

    def refused() -> float:
        samples = scrape_all(mesh, "transaction")
        return total(samples, "ledger_transactions_total", outcome="INSUFFICIENT_FUNDS")

    def unauthenticated() -> float:
        samples = scrape_all(mesh, "user")
        return total(samples, "rpc_requests_total", method="GetUser", code="UNAUTHENTICATED")

    before = refused(), unauthenticated()
    response = bank.rest.post(
        "/v1/transfers",
        json={
            "source_wallet_id": ada_wallet,
            "destination_wallet_id": bob_wallet,
            "amount": {"currency": "EUR", "amount": 101},
        },
        headers={**ada.auth, "idempotency-key": str(uuid.uuid4())},
    )
    assert response.status_code == 400, response.text
    # Straight to an instance: the edge refuses a missing token before any service sees it.
    with (
        grpc.insecure_channel(mesh.instance_addresses("user")[0]) as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        user_service_pb2_grpc.UserServiceStub(channel).GetUser(
            user_service_pb2.GetUserRequest(user_id="me"), timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (refused() - before[0], unauthenticated() - before[1]) == (1, 1)


def test_envoy_serves_its_own_prometheus_stats(mesh: Mesh) -> None:
    samples = scrape(f"{mesh.admin_url}/stats/prometheus")
    assert any(
        sample.name == "envoy_cluster_upstream_rq_total"
        and sample.labels.get("envoy_cluster_name") == "transaction_grpc"
        for sample in samples
    )


def test_payments_show_breakers_settlements_and_the_reconciler_backlog(
    bank: Bank, mesh: Mesh
) -> None:
    ada, wallet = bank.funded_person("metricstopup", 0)

    def settled() -> float:
        return total(
            scrape_all(mesh, "transaction"),
            "ledger_external_settled_total",
            type="top_up",
            result="posted",
            path="sync",
        )

    before = settled()
    response = bank.top_up(ada, wallet, 321)
    assert response.status_code == 200, response.text
    assert settled() - before == 1
    gateway = scrape_all(mesh, "gateway")
    # Each instance shows a breaker per configured provider, all closed (0).
    states = [s for s in gateway if s.name == "gateway_circuit_breaker_state"]
    assert sorted((s.labels["provider"], s.value) for s in states) == [
        (provider, 0.0) for provider in ("paypal", "sandbox", "stripe") for _ in range(2)
    ]
    assert total(gateway, "gateway_provider_calls_total", provider="sandbox", outcome="ok") >= 1
    # The reconciler's backlog is published by every transaction instance.
    ledger = scrape_all(mesh, "transaction")
    assert len([s for s in ledger if s.name == "ledger_external_pending"]) == 2
    assert total(ledger, "ledger_reconciler_passes_total", result="ok") >= 1
