"""PostgreSQL restarting under running services (in process, over real gRPC, on a
PostgreSQL of this module's own, so that stopping it disturbs no other test):
calls after a restart succeed on fresh connections, with no error and no double
booking; while the database is away, calls answer UNAVAILABLE (never INTERNAL or
UNKNOWN) and health turns NOT_SERVING, then SERVING again once it is back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.localmesh.postgres import PostgresServer
from services.localmesh.processes import free_port
from services.localmesh.redis import RedisServer
from services.runtime import server as runtime_server
from services.runtime.config import RuntimeSettings
from services.runtime.migrations import upgrade_to_head
from services.runtime.server import LIVENESS_SERVICE
from services.transaction import server as transaction_server
from services.transaction.adapters.saga import LegSettings
from services.transaction.adapters.shards import ShardConfig
from services.transaction.domain.funding import ReconcilerSettings
from services.user import server as user_server
from tests.eventually import eventually_async
from wallet.transaction.v1 import transaction_service_pb2 as tx
from wallet.transaction.v1 import transaction_service_pb2_grpc
from wallet.type.v1 import money_pb2
from wallet.user.v1 import user_service_pb2 as users_pb
from wallet.user.v1 import user_service_pb2_grpc

PASSWORD = "correct horse battery"
PROBE_SECONDS = 0.5
FUNDS = 100_000
HEALTH_TIMEOUT = 30.0  # seconds; generous, for a busy machine


@pytest.fixture(scope="module")
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_path_factory.mktemp("postgres-faults"), free_port())
    server.start()
    server.create_database("users")
    upgrade_to_head(user_server.MIGRATIONS, server.dsn("users"))
    server.create_database("ledger")
    transaction_server.migrate(ShardConfig.parse(server.dsn("ledger")))
    yield server
    server.destroy()


def _runtime(service: str, database_url: str, redis: RedisServer) -> RuntimeSettings:
    return RuntimeSettings(
        service=service,
        instance_id=f"{service}-faults",
        grpc_address="127.0.0.1:0",
        database_url=database_url,
        redis_url=redis.url,
        database_pool_size=4,
        jwt_issuer="wallet-mesh",
        jwt_audience="wallet-mesh",
    )


@dataclass
class Services:
    users: user_service_pb2_grpc.UserServiceAsyncStub
    ledger: transaction_service_pb2_grpc.TransactionServiceAsyncStub
    user_health: health_pb2_grpc.HealthStub
    ledger_health: health_pb2_grpc.HealthStub


@contextlib.asynccontextmanager
async def running_services(
    postgres: PostgresServer, redis_server: RedisServer, signing_key_file: Path, probe: float
) -> AsyncIterator[Services]:
    """The user and transaction services in process, health re-checked every `probe` s."""
    user_app, _ = user_server.build_app(
        user_server.UserSettings(
            runtime=_runtime("user", postgres.dsn("users"), redis_server),
            signing_key_file=signing_key_file,
            access_token_seconds=900,
            refresh_token_days=30,
            profile_cache_seconds=300,
        )
    )
    user_running = await runtime_server.start(user_app, "127.0.0.1:0", probe_interval=probe)
    ledger_app, _ = transaction_server.build_app(
        transaction_server.TransactionSettings(
            runtime=_runtime("transaction", postgres.dsn("ledger"), redis_server),
            shards=ShardConfig.parse(postgres.dsn("ledger")),
            user_service_target=f"127.0.0.1:{user_running.port}",
            hold_sweep_seconds=60,
            # No gateway in this test: no top-ups, and the reconciler finds nothing.
            gateway_service_target=f"127.0.0.1:{free_port()}",
            gateway_timeout_seconds=1,
            default_provider="sandbox",
            reconciler=ReconcilerSettings(first_check_after=10, max_check_interval=60, lease=2),
            reconcile_interval_seconds=60,
            legs=LegSettings(),
            relay_interval_seconds=60,
        )
    )
    ledger_running = await runtime_server.start(ledger_app, "127.0.0.1:0", probe_interval=probe)
    user_channel = grpc.aio.insecure_channel(f"127.0.0.1:{user_running.port}")
    ledger_channel = grpc.aio.insecure_channel(f"127.0.0.1:{ledger_running.port}")
    found = Services(
        user_service_pb2_grpc.UserServiceStub(user_channel),
        transaction_service_pb2_grpc.TransactionServiceStub(ledger_channel),
        health_pb2_grpc.HealthStub(user_channel),
        health_pb2_grpc.HealthStub(ledger_channel),
    )
    try:
        await wait_for_health(found, serving=True)
        yield found
    finally:
        await user_channel.close(None)
        await ledger_channel.close(None)
        for running, app in ((ledger_running, ledger_app), (user_running, user_app)):
            await running.stop(grace=1)
            for close in app.on_shutdown:
                await close()


@pytest.fixture
async def services(
    own_postgres: PostgresServer, redis_server: RedisServer, signing_key_file: Path
) -> AsyncIterator[Services]:
    """Health probes far apart: nothing but the calls themselves meets the dead
    connections a restart leaves in the pools."""
    async with running_services(own_postgres, redis_server, signing_key_file, 600) as found:
        yield found


@pytest.fixture
async def probed_services(
    own_postgres: PostgresServer, redis_server: RedisServer, signing_key_file: Path
) -> AsyncIterator[Services]:
    """Health probes every half second, as often as a test can wait for."""
    async with running_services(
        own_postgres, redis_server, signing_key_file, PROBE_SECONDS
    ) as found:
        yield found


async def wait_for_health(services: Services, *, serving: bool) -> None:
    """Polls both services' health until it is (or is not) SERVING."""
    wanted = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    stubs = {"user": services.user_health, "ledger": services.ledger_health}

    async def not_yet() -> list[str]:
        request = health_pb2.HealthCheckRequest()
        return [
            name for name, stub in stubs.items() if (await stub.Check(request)).status != wanted
        ]

    await eventually_async(
        not_yet,
        f"health to turn {'SERVING' if serving else 'NOT_SERVING'}",
        HEALTH_TIMEOUT,
        interval=0.05,
    )
    for stub in stubs.values():
        # Alive all along: a liveness probe must not restart it for its database.
        alive = await stub.Check(health_pb2.HealthCheckRequest(service=LIVENESS_SERVICE))
        assert alive.status == health_pb2.HealthCheckResponse.SERVING


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


@dataclass
class Person:
    email: str
    token: str
    refresh_token: str
    wallet_id: str


async def person(services: Services, postgres: PostgresServer, *, admin: bool = False) -> Person:
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    await services.users.CreateUser(
        users_pb.CreateUserRequest(email=email, password=PASSWORD, display_name="Faults")
    )
    if admin:
        with psycopg.connect(postgres.conninfo("users"), autocommit=True) as connection:
            connection.execute(
                "UPDATE users SET roles = array_append(roles, 'admin') WHERE email = %s",
                (email,),
            )
    login = await services.users.Login(users_pb.LoginRequest(email=email, password=PASSWORD))
    created = await services.ledger.CreateWallet(
        tx.CreateWalletRequest(request_id=f"open-{email}", currency="EUR"),
        metadata=bearer(login.access_token),
    )
    return Person(email, login.access_token, login.refresh_token, created.wallet.wallet_id)


def eur(amount: int) -> money_pb2.Money:
    return money_pb2.Money(currency="EUR", amount=amount)


@dataclass
class Parties:
    payer: Person
    payee: Person


async def open_parties(services: Services, own_postgres: PostgresServer) -> Parties:
    payer = await person(services, own_postgres, admin=True)
    payee = await person(services, own_postgres)
    await services.ledger.AdjustWallet(
        tx.AdjustWalletRequest(
            wallet_id=payer.wallet_id,
            request_id=f"fund-{payer.wallet_id}",
            amount=eur(FUNDS),
            reason="test funding",
        ),
        metadata=bearer(payer.token),
    )
    return Parties(payer, payee)


async def balance(services: Services, owner: Person) -> int:
    response = await services.ledger.ListWallets(
        tx.ListWalletsRequest(), metadata=bearer(owner.token)
    )
    (wallet,) = response.wallets
    return int(wallet.balance.amount)


def transfer(parties: Parties, key: str, amount: int) -> tx.CreateTransferRequest:
    return tx.CreateTransferRequest(
        request_id=key,
        source_wallet_id=parties.payer.wallet_id,
        destination_wallet_id=parties.payee.wallet_id,
        amount=eur(amount),
    )


def ledger_count(postgres: PostgresServer, query: str, *args: object) -> int:
    with psycopg.connect(postgres.conninfo("ledger"), autocommit=True) as connection:
        row = connection.execute(query, args).fetchone()
    assert row is not None
    return int(row[0])


async def test_calls_after_a_restart_succeed_on_fresh_connections(
    services: Services, own_postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    parties = await open_parties(services, own_postgres)
    payer, payee = parties.payer, parties.payee
    before = await balance(services, payer), await balance(services, payee)
    # Warm every pooled connection of both services (pools of 4: 8 calls at once).
    await asyncio.gather(*(balance(services, payer) for _ in range(8)))
    await asyncio.gather(
        *(
            services.users.GetUser(users_pb.GetUserRequest(user_id="me"), metadata=bearer(t))
            for t in [payer.token, payee.token] * 4
        )
    )

    # pg_ctl stop -m fast, then start: every pooled connection is now dead.
    await asyncio.to_thread(own_postgres.stop)
    await asyncio.to_thread(own_postgres.start)

    caplog.set_level(logging.WARNING, logger="services.runtime.db")
    keys = [f"after-restart-{uuid.uuid4()}" for _ in range(10)]
    amounts = list(range(101, 111))
    answers = await asyncio.gather(
        *(
            services.ledger.CreateTransfer(
                transfer(parties, key, amount), metadata=bearer(payer.token)
            )
            for key, amount in zip(keys, amounts, strict=True)
        ),
        services.users.Login(users_pb.LoginRequest(email=payee.email, password=PASSWORD)),
        services.users.RefreshToken(
            users_pb.RefreshTokenRequest(refresh_token=payer.refresh_token)
        ),
    )
    # Every call above answered without an error; the ledger's were retried.
    assert any("retrying on a fresh one" in r.getMessage() for r in caplog.records)

    transfers = cast(list[tx.CreateTransferResponse], answers[:10])  # gather of mixed calls
    transactions = {answer.transaction.transaction_id for answer in transfers}
    assert len(transactions) == 10
    # Exactly one transaction per key, and the money moved once per transfer.
    assert (
        ledger_count(
            own_postgres,
            "SELECT count(*) FROM idempotency_keys WHERE idempotency_key = ANY(%s)",
            keys,
        )
        == 10
    )
    assert (
        ledger_count(
            own_postgres,
            "SELECT count(*) FROM transactions WHERE id::text = ANY(%s)",
            list(transactions),
        )
        == 10
    )
    assert await balance(services, payer) == before[0] - sum(amounts)
    assert await balance(services, payee) == before[1] + sum(amounts)
    # The same key again is the same transfer, not a second one.
    replay = await services.ledger.CreateTransfer(
        transfer(parties, keys[0], amounts[0]), metadata=bearer(payer.token)
    )
    assert replay.transaction.transaction_id == transfers[0].transaction.transaction_id
    assert await balance(services, payer) == before[0] - sum(amounts)
    assert ledger_count(own_postgres, "SELECT count(*) FROM ledger_audit()") == 0


async def test_while_the_database_is_down_calls_answer_unavailable_and_health_follows(
    probed_services: Services, own_postgres: PostgresServer
) -> None:
    services = probed_services
    parties = await open_parties(services, own_postgres)
    payer = parties.payer
    await asyncio.to_thread(own_postgres.stop)
    try:
        await wait_for_health(services, serving=False)
        calls: list[Awaitable[object]] = [
            services.ledger.CreateTransfer(
                transfer(parties, f"while-down-{uuid.uuid4()}", 5), metadata=bearer(payer.token)
            ),
            services.ledger.ListWallets(tx.ListWalletsRequest(), metadata=bearer(payer.token)),
            services.users.Login(users_pb.LoginRequest(email=payer.email, password=PASSWORD)),
            services.users.CreateUser(
                users_pb.CreateUserRequest(
                    email=f"{uuid.uuid4().hex[:12]}@example.com",
                    password=PASSWORD,
                    display_name="Down",
                )
            ),
        ]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        for outcome in outcomes:
            assert isinstance(outcome, grpc.aio.AioRpcError), outcome
            assert outcome.code() == grpc.StatusCode.UNAVAILABLE, outcome.details()
    finally:
        await asyncio.to_thread(own_postgres.start)

    # Back: health turns SERVING again in the same processes, and money moves.
    await wait_for_health(services, serving=True)
    before = await balance(services, payer)
    await services.ledger.CreateTransfer(
        transfer(parties, f"after-outage-{uuid.uuid4()}", 7), metadata=bearer(payer.token)
    )
    assert await balance(services, payer) == before - 7
