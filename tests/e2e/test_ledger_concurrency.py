"""Many clients moving money between a few wallets at once, through Envoy,
some retrying with the same idempotency key: afterwards the ledger audit
passes, no money appeared or vanished, and every acknowledged transfer exists
exactly once."""

from __future__ import annotations

import asyncio
import random
import uuid

import grpc
import psycopg

from services.localmesh.mesh import Mesh
from tests.e2e.people import Bank, Person, audit_ledger
from wallet.transaction.v1 import transaction_service_pb2 as pb
from wallet.transaction.v1 import transaction_service_pb2_grpc
from wallet.type.v1 import money_pb2

WALLETS = 6
FUNDING = 10_000
CLIENTS = 32
TRANSFERS = 2_400
RETRY_SHARE = 0.15


async def test_concurrent_transfers_keep_every_invariant(bank: Bank, mesh: Mesh) -> None:
    people: list[tuple[Person, str]] = [
        bank.funded_person(f"crowd{i}", FUNDING) for i in range(WALLETS)
    ]
    rng = random.Random(20261130)
    plan: list[tuple[int, int, int, str]] = []
    for _ in range(TRANSFERS):
        source, destination = rng.sample(range(WALLETS), 2)
        plan.append((source, destination, rng.randint(1, 900), str(uuid.uuid4())))
    # Some requests are sent again with the same key (a client retrying).
    plan += [item for item in plan if rng.random() < RETRY_SHARE]
    rng.shuffle(plan)

    acknowledged: dict[str, str] = {}
    mismatches: list[str] = []
    refusals: dict[str, int] = {}
    queue: asyncio.Queue[tuple[int, int, int, str]] = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)

    async def client(stub: transaction_service_pb2_grpc.TransactionServiceAsyncStub) -> None:
        while not queue.empty():
            source, destination, amount, request_id = queue.get_nowait()
            person, wallet_id = people[source]
            request = pb.CreateTransferRequest(
                request_id=request_id,
                source_wallet_id=wallet_id,
                destination_wallet_id=people[destination][1],
                amount=money_pb2.Money(currency="EUR", amount=amount),
            )
            for _attempt in range(50):
                try:
                    response = await stub.CreateTransfer(
                        request,
                        metadata=(("authorization", f"Bearer {person.access_token}"),),
                        timeout=20,
                    )
                except grpc.aio.AioRpcError as error:
                    if error.code() == grpc.StatusCode.ABORTED:  # same key in flight
                        await asyncio.sleep(0.01)
                        continue
                    name = f"{error.code().name}: {error.details()}"
                    refusals[name] = refusals.get(name, 0) + 1
                    break
                transaction_id = response.transaction.transaction_id
                previous = acknowledged.setdefault(request_id, transaction_id)
                if previous != transaction_id:
                    mismatches.append(request_id)
                break

    channels = [grpc.aio.insecure_channel(mesh.edge_grpc_target) for _ in range(4)]
    try:
        stubs = [transaction_service_pb2_grpc.TransactionServiceStub(c) for c in channels]
        await asyncio.gather(*(client(stubs[i % len(stubs)]) for i in range(CLIENTS)))
    finally:
        for channel in channels:
            await channel.close(None)

    assert mismatches == []
    # The only refusal expected is a wallet running dry.
    assert all(name.startswith("FAILED_PRECONDITION: insufficient") for name in refusals), refusals
    assert len(acknowledged) > TRANSFERS // 2, refusals

    balances = [bank.balance(person, wallet_id) for person, wallet_id in people]
    assert sum(balance for balance, _ in balances) == WALLETS * FUNDING
    assert all(available >= 0 for _, available in balances)

    wallet_ids = [wallet_id for _, wallet_id in people]
    with psycopg.connect(mesh.postgres.conninfo("ledger")) as connection:
        stored = connection.execute(
            "SELECT id::text FROM transactions WHERE type = 'transfer'"
            " AND source_account_id = ANY(%s::uuid[])",
            (wallet_ids,),
        ).fetchall()
    stored_ids = [row[0] for row in stored]
    assert len(stored_ids) == len(set(stored_ids))
    assert set(stored_ids) == set(acknowledged.values())

    assert "ledger audit: OK" in audit_ledger(mesh)
