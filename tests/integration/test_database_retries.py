"""The runtime's retries on a fresh connection (services/runtime/db.py), on real
PostgreSQL: a connection is killed by the server (pg_terminate_backend, the same
57P01 a restart sends) before or during a commit, and the work runs again — or,
when a commit's outcome is unknown and the work is not idempotent, does not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.localmesh.postgres import PostgresServer
from services.runtime import db

DATABASE = "retries_it"


@pytest.fixture(scope="module")
def retries_database(postgres: PostgresServer) -> str:
    postgres.create_database(DATABASE)
    with psycopg.connect(postgres.conninfo(DATABASE), autocommit=True) as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS notes (id text PRIMARY KEY)")
    return DATABASE


@pytest.fixture
async def engine(postgres: PostgresServer, retries_database: str) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(postgres.dsn(retries_database), pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
async def pool(postgres: PostgresServer, retries_database: str) -> AsyncIterator[db.DriverPool]:
    pool = db.create_driver_pool(postgres.dsn(retries_database), size=2)
    await pool.open(wait=True)
    yield pool
    await pool.close()


def notes(postgres: PostgresServer, note: str) -> int:
    with psycopg.connect(postgres.conninfo(DATABASE), autocommit=True) as connection:
        row = connection.execute("SELECT count(*) FROM notes WHERE id = %s", (note,)).fetchone()
    assert row is not None
    return int(row[0])


def terminate(postgres: PostgresServer, pid: int) -> None:
    """Ends a backend from outside, as a fast shutdown does to every backend, and
    waits (up to 10 s) until it is gone."""
    with psycopg.connect(postgres.conninfo(DATABASE), autocommit=True) as connection:
        row = connection.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,)).fetchone()
    assert row == (True,)


async def backend_pid(connection: AsyncConnection) -> int:
    return int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_a_transaction_lost_before_its_commit_runs_again_once(
    engine: AsyncEngine, postgres: PostgresServer
) -> None:
    note = "lost-before-commit"
    tries = 0

    async def work(connection: AsyncConnection) -> str:
        nonlocal tries
        tries += 1
        await connection.execute(text("INSERT INTO notes VALUES (:id)"), {"id": note})
        if tries == 1:
            terminate(postgres, await backend_pid(connection))
            await connection.execute(text("SELECT 1"))  # the server has gone: raises
        return "written"

    assert await db.transaction(engine, work, idempotent=False) == "written"
    assert tries == 2
    assert notes(postgres, note) == 1  # the first try was rolled back


@pytest.mark.parametrize("idempotent", [True, False])
async def test_a_commit_whose_connection_is_lost_is_retried_only_if_idempotent(
    engine: AsyncEngine, postgres: PostgresServer, idempotent: bool
) -> None:
    note = f"lost-in-commit-{idempotent}"
    tries = 0

    async def work(connection: AsyncConnection) -> None:
        nonlocal tries
        tries += 1
        await connection.execute(
            text("INSERT INTO notes VALUES (:id) ON CONFLICT DO NOTHING"), {"id": note}
        )
        if tries == 1:
            # Dies before COMMIT reaches it: the commit is the call that fails.
            terminate(postgres, await backend_pid(connection))

    if idempotent:
        await db.transaction(engine, work, idempotent=True)
        assert tries == 2
        assert notes(postgres, note) == 1
    else:
        with pytest.raises(db.OutcomeUnknown) as caught:
            await db.transaction(engine, work, idempotent=False)
        assert tries == 1
        assert db.is_database_fault(caught.value)
        assert not db.is_connection_lost(caught.value)


async def test_a_read_on_a_dead_pooled_connection_runs_again(
    engine: AsyncEngine, postgres: PostgresServer
) -> None:
    async with engine.connect() as connection:
        pid = await backend_pid(connection)
    terminate(postgres, pid)  # the pooled connection is now dead
    tries = 0

    async def work(connection: AsyncConnection) -> int:
        nonlocal tries
        tries += 1
        return int((await connection.execute(text("SELECT 41 + 1"))).scalar_one())

    assert await db.read(engine, work) == 42
    assert tries == 2


async def test_the_driver_pool_drops_every_dead_connection_after_a_loss(
    pool: db.DriverPool, postgres: PostgresServer
) -> None:
    # Both pooled connections die, as in a restart.
    async with pool.connection() as first, pool.connection() as second:
        pids = [first.info.backend_pid, second.info.backend_pid]
    for pid in pids:
        terminate(postgres, pid)
    retrying = db.RetryingPool(pool)
    seen: list[int] = []

    async def work(connection: psycopg.AsyncConnection[Any]) -> int:
        seen.append(connection.info.backend_pid)
        cursor = await connection.execute("SELECT 42")
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0])

    assert await retrying.run(work) == 42
    # One try on a dead connection, then the check dropped the other dead one: the
    # retry ran on a fresh backend, not on the second connection the "restart" broke.
    assert len(seen) == 2
    assert seen[0] in pids
    assert seen[1] not in pids
    assert await retrying.run(work) == 42  # and so does the next call, first time
    assert seen[2] not in pids
