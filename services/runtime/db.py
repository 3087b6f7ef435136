"""PostgreSQL: SQLAlchemy 2.0 (async, psycopg 3) for schemas, migrations and
ordinary repositories; a plain psycopg pool for hot paths, where SQLAlchemy's
per-statement work costs more than the database round trip (PERF-NOTES.md)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def create_engine(database_url: str, *, pool_size: int = 20) -> AsyncEngine:
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        # No overflow: overflow connections are closed when returned, so a load just
        # above the pool size opened and closed a connection (and forked a PostgreSQL
        # backend) per request — seen in the profile of `make bench`. Beyond the pool,
        # calls wait for a connection instead.
        max_overflow=0,
        pool_timeout=5,
        # No pre-ping: it is a round trip on every checkout. A connection the server
        # dropped fails one call and is replaced; readiness probes notice an outage.
        pool_pre_ping=False,
        # Fail fast on a dead database instead of hanging the RPC.
        connect_args={"connect_timeout": 3},
    )


async def ping(engine: AsyncEngine) -> None:
    """Raises unless the database answers a trivial query."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


def driver_conninfo(database_url: str) -> str:
    """The psycopg connection string of a SQLAlchemy URL (postgresql+psycopg://…)."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


# A psycopg pool of autocommit connections (the services' hot paths).
DriverPool = AsyncConnectionPool[AsyncConnection[Any]]


def create_driver_pool(database_url: str, *, size: int = 20) -> DriverPool:
    """A fixed-size psycopg pool of autocommit connections; `await pool.open()` it
    in the running event loop (GrpcApp.on_startup)."""
    return AsyncConnectionPool(
        driver_conninfo(database_url),
        min_size=size,
        max_size=size,
        open=False,
        timeout=5,
        kwargs={"autocommit": True, "connect_timeout": 3},
    )


async def ping_pool(pool: DriverPool) -> None:
    """Raises unless the database answers a trivial query."""
    async with pool.connection() as connection:
        await connection.execute("SELECT 1")
