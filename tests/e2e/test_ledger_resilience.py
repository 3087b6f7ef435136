"""The ledger when things go wrong: a request still in flight, Redis down."""

from __future__ import annotations

import uuid

import grpc
import httpx
import psycopg

from services.localmesh.mesh import Mesh
from tests.e2e.people import Bank
from wallet.transaction.v1 import transaction_service_pb2 as pb
from wallet.transaction.v1 import transaction_service_pb2_grpc
from wallet.type.v1 import money_pb2


def test_second_request_while_the_first_is_in_flight_is_409(
    bank: Bank, rest: httpx.Client, mesh: Mesh
) -> None:
    ada, ada_wallet = bank.funded_person("inflight", 1_000)
    _, bob_wallet = bank.funded_person("inflightto", 0)
    key = str(uuid.uuid4())
    body = {
        "source_wallet_id": ada_wallet,
        "destination_wallet_id": bob_wallet,
        "amount": {"currency": "EUR", "amount": 10},
    }
    # Stand in for a first request still running: hold the key's lock, as the
    # ledger function does for the length of its transaction.
    with psycopg.connect(mesh.postgres.conninfo("ledger"), autocommit=True) as first:
        first.execute(
            "SELECT pg_advisory_lock(hashtextextended(%s || ':' || %s, 0))", (ada.user_id, key)
        )
        second = rest.post("/v1/transfers", json=body, headers={**ada.auth, "idempotency-key": key})
        assert second.status_code == 409, second.text
        assert second.json()["code"] == 10  # ABORTED
        assert bank.balance(ada, ada_wallet) == (1_000, 1_000)
    # Once the first is done, the retry goes through, exactly once.
    retry = rest.post("/v1/transfers", json=body, headers={**ada.auth, "idempotency-key": key})
    assert retry.status_code == 200, retry.text
    again = rest.post("/v1/transfers", json=body, headers={**ada.auth, "idempotency-key": key})
    assert again.json() == retry.json()
    assert bank.balance(ada, ada_wallet) == (990, 990)


def test_redis_down_the_ledger_works_from_postgres(
    bank: Bank, rest: httpx.Client, mesh: Mesh
) -> None:
    """The transaction service needs no Redis to move money or to read. (Through
    the edge, the rate limiter decides from each instance's fair share meanwhile —
    tests/e2e/test_redis_faults.)"""
    ada, ada_wallet = bank.funded_person("noredis", 1_000)
    bob, bob_wallet = bank.funded_person("noredisto", 0)
    assert bank.balance(ada, ada_wallet) == (1_000, 1_000)  # cached now
    mesh.stop_redis()
    try:
        # Straight to an instance, as another service of the mesh would call it.
        with grpc.insecure_channel(mesh.instance_addresses("transaction")[0]) as channel:
            ledger = transaction_service_pb2_grpc.TransactionServiceStub(channel)
            for _ in range(3):
                ledger.CreateTransfer(
                    pb.CreateTransferRequest(
                        request_id=str(uuid.uuid4()),
                        source_wallet_id=ada_wallet,
                        destination_wallet_id=bob_wallet,
                        amount=money_pb2.Money(currency="EUR", amount=100),
                    ),
                    metadata=(("authorization", f"Bearer {ada.access_token}"),),
                )
        # Reads through the edge come from PostgreSQL.
        assert bank.balance(ada, ada_wallet) == (700, 700)
        assert bank.balance(bob, bob_wallet) == (300, 300)
        history = rest.get("/v1/transactions", headers=bob.auth).json()["transactions"]
        assert len(history) == 3
    finally:
        mesh.start_redis()
    # Back with an empty Redis: still right.
    assert bank.balance(ada, ada_wallet) == (700, 700)
