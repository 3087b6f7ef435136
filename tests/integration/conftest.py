"""Integration fixtures: the user service's and the ledger's databases migrated once,
emptied before each test; an in-process user service over real gRPC; the ledger's SQL
test client (tests/integration/ledger_client.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import psycopg
import pytest

from services.localmesh.postgres import PostgresServer
from services.localmesh.redis import RedisServer
from services.runtime import server as runtime_server
from services.runtime.config import RuntimeSettings
from services.runtime.migrations import upgrade_to_head
from services.transaction.server import MIGRATIONS as LEDGER_MIGRATIONS
from services.user.server import MIGRATIONS, UserSettings, build_app
from tests.integration.ledger_client import LedgerClient, empty_ledger
from tests.integration.user_calls import USERS_DB, RunningUserService
from wallet.user.v1 import user_service_pb2_grpc

LEDGER_DB = "ledger_it"


@pytest.fixture(scope="session")
def users_database_url(postgres: PostgresServer) -> str:
    postgres.create_database(USERS_DB)
    url = postgres.dsn(USERS_DB)
    upgrade_to_head(MIGRATIONS, url)
    return url


@pytest.fixture
def empty_users_db(postgres: PostgresServer, users_database_url: str) -> str:
    with psycopg.connect(postgres.conninfo(USERS_DB), autocommit=True) as connection:
        connection.execute("TRUNCATE refresh_tokens, users")
    return users_database_url


@pytest.fixture
def user_settings(
    empty_users_db: str, redis_server: RedisServer, signing_key_file: Path
) -> UserSettings:
    return UserSettings(
        runtime=RuntimeSettings(
            service="user",
            instance_id="user-it",
            grpc_address="127.0.0.1:0",
            database_url=empty_users_db,
            redis_url=redis_server.url,
            database_pool_size=4,
            jwt_issuer="wallet-mesh",
            jwt_audience="wallet-mesh",
        ),
        signing_key_file=signing_key_file,
        access_token_seconds=900,
        refresh_token_days=30,
        profile_cache_seconds=300,
    )


@pytest.fixture
async def user_service(user_settings: UserSettings) -> AsyncIterator[RunningUserService]:
    app, accounts = build_app(user_settings)
    running = await runtime_server.start(app, user_settings.runtime.grpc_address)
    yield RunningUserService(running, accounts)
    await running.stop(grace=1)
    for close in app.on_shutdown:
        await close()


@pytest.fixture
async def user_stub(
    user_service: RunningUserService,
) -> AsyncIterator[user_service_pb2_grpc.UserServiceAsyncStub]:
    async with grpc.aio.insecure_channel(user_service.target) as channel:
        yield user_service_pb2_grpc.UserServiceStub(channel)


@pytest.fixture(scope="session")
def ledger_conninfo(postgres: PostgresServer) -> str:
    """The ledger's database at the head revision, holding every logical shard (as
    `migrate` has a ledger of one database), for the tests of its SQL."""
    postgres.create_database(LEDGER_DB)
    upgrade_to_head(LEDGER_MIGRATIONS, postgres.dsn(LEDGER_DB))
    conninfo = postgres.conninfo(LEDGER_DB)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(
            "SELECT ledger_claim_shards(ARRAY(SELECT generate_series(0, 255)::smallint))"
        )
    return conninfo


@pytest.fixture
def ledger(ledger_conninfo: str) -> Iterator[LedgerClient]:
    """The ledger's SQL client on an empty ledger (autocommit: one call, one transaction)."""
    empty_ledger(ledger_conninfo)
    with psycopg.connect(ledger_conninfo, autocommit=True) as conn:
        yield LedgerClient(conn)
