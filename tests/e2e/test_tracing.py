"""One trace per request, from Envoy through the services into PostgreSQL and
Redis, collected by a test OTLP receiver; log lines carry the trace id; no
secret reaches any log."""

from __future__ import annotations

import dataclasses
import os
import secrets
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from services.localmesh.mesh import Mesh
from services.localmesh.otlp_sink import OtlpSink, ReceivedSpan
from services.localmesh.processes import free_port
from tests.e2e.mesh_setup import GENEROUS_LIMITS, mesh_config_for_tests
from tests.e2e.people import PASSWORD, Bank, register_and_login
from tests.eventually import eventually

SERVER, CLIENT = 2, 3  # OTLP span kinds


@pytest.fixture(scope="module")
def sink() -> Iterator[OtlpSink]:
    receiver = OtlpSink(free_port())
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def traced_mesh(tmp_path_factory: pytest.TempPathFactory, sink: OtlpSink) -> Iterator[Mesh]:
    config = dataclasses.replace(
        mesh_config_for_tests(tmp_path_factory.mktemp("traced"), GENEROUS_LIMITS),
        otlp_endpoint=f"127.0.0.1:{sink.port}",
    )
    with Mesh(config) as mesh:
        yield mesh


@pytest.fixture
def edge(traced_mesh: Mesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=traced_mesh.edge_url, timeout=10) as client:
        yield client


def traceparent() -> tuple[str, str, str]:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, parent_id, f"00-{trace_id}-{parent_id}-01"


def collect(
    sink: OtlpSink, trace_id: str, done: Callable[[list[ReceivedSpan]], bool]
) -> list[ReceivedSpan]:
    """Spans arrive in batches (each exporter flushes every few seconds): poll
    until the trace has everything `done` asks for."""
    spans: list[ReceivedSpan] = []

    def complete() -> list[str]:
        spans[:] = sink.store.trace(trace_id)
        return [] if done(spans) else [f"spans of {sorted({s.service for s in spans})} only"]

    eventually(complete, f"every span of trace {trace_id}", 30, interval=0.25)
    return spans


def test_a_transfer_is_one_trace_from_the_edge_to_sql_and_redis(
    traced_mesh: Mesh, edge: httpx.Client, sink: OtlpSink
) -> None:
    bank = Bank(edge, traced_mesh)
    ada, ada_wallet = bank.funded_person("tracedpayer", 1_000)
    bob, _ = bank.funded_person("tracedpayee", 0)
    trace_id, root_parent, header = traceparent()
    paid = edge.post(
        "/v1/transfers",
        json={
            "source_wallet_id": ada_wallet,
            "recipient_email": bob.email,
            "amount": {"currency": "EUR", "amount": 250},
        },
        headers={**ada.auth, "idempotency-key": str(uuid.uuid4()), "traceparent": header},
    )
    assert paid.status_code == 200, paid.text
    transaction_id = paid.json()["transaction"]["transaction_id"]

    def orphans(spans: list[ReceivedSpan]) -> list[tuple[str, str]]:
        ids = {span.span_id for span in spans} | {root_parent}
        return [(s.service, s.name) for s in spans if s.parent_span_id not in ids]

    def complete(spans: list[ReceivedSpan]) -> bool:
        services = {span.service for span in spans}
        return (
            {"wallet-edge", "wallet-transaction", "wallet-user"} <= services
            and any(span.attributes.get("db.system") == "postgresql" for span in spans)
            and not orphans(spans)
        )

    spans = collect(sink, trace_id, complete)
    assert complete(spans), (sorted({s.service for s in spans}), orphans(spans))
    # Correct parent links: every span hangs off another span of the trace, or
    # off the caller's own span given in traceparent.
    assert orphans(spans) == []

    by = {(s.service, s.kind, s.name): s for s in spans}
    transfer = by[
        ("wallet-transaction", SERVER, "/wallet.transaction.v1.TransactionService/CreateTransfer")
    ]
    assert transfer.attributes["wallet.source_wallet_id"] == ada_wallet
    assert transfer.attributes["wallet.transaction_id"] == transaction_id
    assert transfer.attributes["enduser.id"] == ada.user_id
    # The downstream call to the user service (recipient by email), client and server.
    lookup_client = by[("wallet-transaction", CLIENT, "/wallet.user.v1.UserService/LookupUser")]
    lookup_server = by[("wallet-user", SERVER, "/wallet.user.v1.UserService/LookupUser")]
    assert lookup_server.parent_span_id == lookup_client.span_id
    # The edge is the parent of the service's span.
    edge_spans = {s.span_id for s in spans if s.service == "wallet-edge"}
    assert transfer.parent_span_id in edge_spans
    # SQL and Redis spans under the transaction service's span.
    sql = [s for s in spans if s.attributes.get("db.system") == "postgresql"]
    assert any("ledger_transfer" in s.attributes.get("db.statement", s.name) for s in sql)
    assert any(s.attributes.get("db.system") == "redis" for s in spans)
    # Never a secret in an attribute.
    for span in spans:
        for value in span.attributes.values():
            assert ada.access_token not in value
            assert PASSWORD not in value


def test_a_rest_top_up_is_one_trace_through_the_gateway(
    traced_mesh: Mesh, edge: httpx.Client, sink: OtlpSink
) -> None:
    bank = Bank(edge, traced_mesh)
    ada, wallet = bank.funded_person("tracedtopup", 0)
    trace_id, root_parent, header = traceparent()
    topped = edge.post(
        f"/v1/wallets/{wallet}:top-up",
        json={"amount": {"currency": "EUR", "amount": 500}, "payment_method": "pm_card_visa"},
        headers={**ada.auth, "idempotency-key": str(uuid.uuid4()), "traceparent": header},
    )
    assert topped.status_code == 200, topped.text
    transaction_id = topped.json()["transaction"]["transaction_id"]
    charge = "/wallet.gateway.v1.PaymentGatewayService/CreateCharge"

    def orphans(spans: list[ReceivedSpan]) -> list[tuple[str, str]]:
        ids = {span.span_id for span in spans} | {root_parent}
        return [(s.service, s.name) for s in spans if s.parent_span_id not in ids]

    def complete(spans: list[ReceivedSpan]) -> bool:
        names = {(s.service, s.kind, s.name) for s in spans}
        return (
            ("wallet-gateway", SERVER, charge) in names
            and any(
                s.service == "wallet-gateway" and s.attributes.get("db.system") == "postgresql"
                for s in spans
            )
            and not orphans(spans)
        )

    spans = collect(sink, trace_id, complete)
    assert complete(spans), (sorted({(s.service, s.name) for s in spans}), orphans(spans))
    assert orphans(spans) == []
    by = {(s.service, s.kind, s.name): s for s in spans}
    top_up = by[
        ("wallet-transaction", SERVER, "/wallet.transaction.v1.TransactionService/TopUpWallet")
    ]
    assert top_up.attributes["wallet.transaction_id"] == transaction_id
    charge_client = by[("wallet-transaction", CLIENT, charge)]
    charge_server = by[("wallet-gateway", SERVER, charge)]
    assert charge_client.parent_span_id == top_up.span_id
    assert charge_server.parent_span_id == charge_client.span_id
    # The payment's id is the ledger transaction's id, on the gateway's span too.
    assert charge_server.attributes["wallet.payment_id"] == transaction_id
    sql = [s for s in spans if s.attributes.get("db.system") == "postgresql"]
    statements = " ".join(s.attributes.get("db.statement", s.name) for s in sql)
    assert "ledger_begin_external" in statements
    assert "ledger_settle_external" in statements


def test_log_lines_carry_the_trace_id(traced_mesh: Mesh, edge: httpx.Client) -> None:
    bank = Bank(edge, traced_mesh)
    ada, ada_wallet = bank.funded_person("tracedpoor", 0)
    _, bob_wallet = bank.funded_person("tracedrich", 0)
    trace_id, _, header = traceparent()
    refused = edge.post(
        "/v1/transfers",
        json={
            "source_wallet_id": ada_wallet,
            "destination_wallet_id": bob_wallet,
            "amount": {"currency": "EUR", "amount": 1},
        },
        headers={**ada.auth, "idempotency-key": str(uuid.uuid4()), "traceparent": header},
    )
    assert refused.status_code == 400
    found: list[str] = []

    def logged() -> bool:
        found[:] = [
            line
            for log in traced_mesh.logs_dir.glob("transaction-*.log")
            for line in log.read_text().splitlines()
            if trace_id in line
        ]
        return bool(found)

    eventually(logged, "a log line of the transaction service that carries the trace id", 10)
    assert '"reason": "INSUFFICIENT_FUNDS"' in found[0]
    assert '"span_id": "' in found[0]


def test_no_password_or_token_in_any_log(traced_mesh: Mesh, edge: httpx.Client) -> None:
    """Log in, pay, top up, log out; then scan the log of every process of the mesh."""
    person = register_and_login(edge, "secretive")
    login = edge.post("/v1/auth/login", json={"email": person.email, "password": PASSWORD}).json()
    bank = Bank(edge, traced_mesh)
    wallet = bank.open_wallet(person)
    bank.credit(wallet, 100)
    # A top-up with a card token the provider does not know (so that it travels
    # through every refusal path too) and one with a good card.
    card_token = f"pm_{secrets.token_hex(12)}"
    refused = bank.top_up(person, wallet, 100, card_token)
    assert refused.status_code == 400, refused.text
    assert bank.top_up(person, wallet, 100, "pm_card_visa").status_code == 200
    edge.post(
        "/v1/auth/logout",
        json={"refresh_token": login["refresh_token"]},
        headers={"authorization": f"Bearer {login['access_token']}"},
    )
    secrets_used = {
        PASSWORD,
        card_token,
        person.access_token,
        person.refresh_token,
        login["access_token"],
        login["refresh_token"],
    }
    logs = [path for path in traced_mesh.logs_dir.rglob("*.log")]
    assert len(logs) >= 7  # every instance, Envoy, migrations
    for path in logs:
        text = path.read_text(errors="replace")
        for secret in secrets_used:
            assert secret not in text, f"a secret is in {path.name}"
    assert os.environ.get("OTEL_TRACES_EXPORTER") is None  # the tests' own process untouched
