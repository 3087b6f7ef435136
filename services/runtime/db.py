"""PostgreSQL: SQLAlchemy 2.0 (async, psycopg 3) for schemas, migrations and
ordinary repositories; a plain psycopg pool for hot paths, where SQLAlchemy's
per-statement work costs more than the database round trip (measured on a transfer:
SQLAlchemy's statement building and result processing cost 2 to 4 times the driver's
round trip).

Also what a database error means, once for every service: a *fault* (the
database is away, restarting, out of connections: UNAVAILABLE, retry later) or
a bug (bad SQL, an unmapped constraint: INTERNAL); and the retry of work whose
connection was lost, on a fresh connection, for the callers that know the work
is safe to run again."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import sqlalchemy.exc
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncConnection as EngineConnection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

log = logging.getLogger(__name__)
T = TypeVar("T")


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
        # dropped fails once; SQLAlchemy then invalidates the whole pool (every
        # connection older than the failure is replaced at its next checkout), and
        # the repositories retry on a fresh one (`read`, `transaction` below).
        pool_pre_ping=False,
        # Fail fast on a dead database instead of hanging the RPC.
        connect_args={"connect_timeout": 3},
    )


async def ping(engine: AsyncEngine) -> None:
    """Raises unless the database answers a trivial query (once more on a fresh
    connection if a pooled one had died: the database may be back already)."""
    for attempt in (1, 2):
        try:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            return
        except Exception as error:
            if attempt == 2 or not is_connection_lost(error):
                raise


def driver_conninfo(database_url: str) -> str:
    """The psycopg connection string of a SQLAlchemy URL (postgresql+psycopg://…)."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


# A psycopg pool of autocommit connections (the services' hot paths).
DriverPool = AsyncConnectionPool[AsyncConnection[Any]]


def create_driver_pool(database_url: str, *, size: int = 20) -> DriverPool:
    """A fixed-size psycopg pool of autocommit connections; `await pool.open()` it
    in the running event loop (GrpcApp.on_startup)."""
    # No `check` callback either (a round trip per checkout, like pre-ping): the pool
    # discards a connection it gets back broken, and `RetryingPool` has every idle one
    # checked after a loss (a restart breaks them all at once).
    return AsyncConnectionPool(
        driver_conninfo(database_url),
        min_size=size,
        max_size=size,
        open=False,
        timeout=5,
        kwargs={"autocommit": True, "connect_timeout": 3},
    )


async def ping_pool(pool: DriverPool) -> None:
    """Raises unless the database answers a trivial query (once more after the
    pool has dropped its dead connections: the database may be back already)."""
    for attempt in (1, 2):
        try:
            async with pool.connection() as connection:
                await connection.execute("SELECT 1")
            return
        except Exception as error:
            if attempt == 2 or not is_connection_lost(error):
                raise
            await pool.check()


# --- faults ---------------------------------------------------------------------------

# SQLSTATEs of a connection the server ended: admin_shutdown, crash_shutdown,
# cannot_connect_now (starting up or shutting down), idle_session_timeout.
_ENDED_BY_SERVER = frozenset({"57P01", "57P02", "57P03", "57P05"})


class OutcomeUnknown(Exception):
    """The connection was lost while the database committed: the write may have
    happened or not. A fault (UNAVAILABLE), but not one to retry blindly."""


def _driver_error(error: BaseException) -> BaseException | None:
    """psycopg's error under SQLAlchemy's wrapper (or the error itself)."""
    if isinstance(error, sqlalchemy.exc.DBAPIError):
        return error.orig
    return error


def is_database_fault(error: BaseException) -> bool:
    """Whether `error` is the database failing (away, restarting, overloaded, a lost
    connection, a pool with no connection to give) rather than a bug of ours: the
    caller gets UNAVAILABLE, and may retry. psycopg's OperationalError is DB-API's
    class for exactly this ("not under the control of the programmer"); syntax
    errors, constraint violations and the like are not in it and stay bugs."""
    if isinstance(error, OutcomeUnknown | sqlalchemy.exc.TimeoutError):
        return True
    if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(_driver_error(error), psycopg.OperationalError)


def is_connection_lost(error: BaseException) -> bool:
    """Whether the work failed because its connection died or none could be had
    (server restarting, connection refused or timed out, pool timeout): the same
    work on a fresh connection may succeed. Not a statement the server refused."""
    if isinstance(error, sqlalchemy.exc.TimeoutError):
        return True  # SQLAlchemy's pool had no connection: nothing was sent
    if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
        return True
    driver = _driver_error(error)
    if isinstance(driver, PoolTimeout):
        return True
    if not isinstance(driver, psycopg.OperationalError):
        return False
    # No SQLSTATE: libpq's own failure (connect refused or timed out, the socket
    # closed under a query); class 08: connection exceptions.
    state = driver.sqlstate
    return state is None or state.startswith("08") or state in _ENDED_BY_SERVER


# --- retrying on a fresh connection ------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How long work whose connection was lost is tried again: a few tries with a
    short, doubling backoff, all within `budget` seconds of the call's start (see
    `bound_retries`) — under the edge's per-try timeout (5 s), so the caller hears
    UNAVAILABLE from us, not a timeout; sooner if the call's deadline is nearer."""

    attempts: int = 7
    first_delay: float = 0.1
    max_delay: float = 1.0
    budget: float = 3.5


RETRY = RetryPolicy()
# Time kept to answer once a call's retries are over.
ANSWER_MARGIN = 0.25

# When the database retries of the current call must end (time.monotonic()): set by
# the service boundary as each call starts, so that the retries of all the
# statements of one call share one budget (a login reads, then writes).
_retries_end: ContextVar[float | None] = ContextVar("database_retries_end", default=None)


def bound_retries(seconds_left: float | None, policy: RetryPolicy = RETRY) -> Token[float | None]:
    """Starts the retry budget of a call with `seconds_left` before its deadline
    (None: it has none): policy.budget from now, less if the deadline is nearer.
    Returns the token to reset it with when the call ends."""
    budget = policy.budget
    if seconds_left is not None:
        budget = min(budget, seconds_left - ANSWER_MARGIN)
    return _retries_end.set(time.monotonic() + budget)


async def retry_lost_connection(
    attempt: Callable[[float], Awaitable[T]],
    *,
    before_retry: Callable[[], Awaitable[None]] | None = None,
    policy: RetryPolicy = RETRY,
) -> T:
    """Runs `attempt(seconds_left)` until it succeeds, fails otherwise than by a lost
    connection (`is_connection_lost`), or the policy's tries or time (or the current
    call's, see `bound_retries`) run out; the last error is raised. Only for work
    that is safe to run twice."""
    deadline = time.monotonic() + policy.budget
    call_end = _retries_end.get()
    if call_end is not None:
        deadline = min(deadline, call_end)
    delay = policy.first_delay
    tries = 0
    while True:
        tries += 1
        try:
            return await attempt(max(deadline - time.monotonic(), 0.1))
        except Exception as error:
            left = deadline - time.monotonic()
            if not is_connection_lost(error) or tries >= policy.attempts or left <= delay:
                raise
            log.warning(
                "database connection lost; retrying on a fresh one",
                extra={"try": tries, "error": repr(error)},
            )
        if before_retry is not None:
            await before_retry()
        await asyncio.sleep(delay)
        delay = min(delay * 2, policy.max_delay)


class RetryingPool:
    """A psycopg pool whose work is run again on a fresh connection when its
    connection was lost. After a loss, the pool checks its idle connections once
    (`AsyncConnectionPool.check`: the dead ones are replaced), so a retry does not
    pick another connection the same restart broke; the hot path pays nothing."""

    def __init__(self, pool: DriverPool, policy: RetryPolicy = RETRY) -> None:
        self.pool = pool
        self._policy = policy
        self._checking: asyncio.Future[None] | None = None

    async def run(self, work: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
        """`work` on a pooled connection; again on a fresh one if it was lost. Only
        for work that is safe to run twice (a read, an idempotent write)."""

        async def attempt(seconds_left: float) -> T:
            async with self.pool.connection(timeout=min(self.pool.timeout, seconds_left)) as conn:
                return await work(conn)

        return await retry_lost_connection(
            attempt, before_retry=self._drop_dead_connections, policy=self._policy
        )

    async def _drop_dead_connections(self) -> None:
        # One check at a time: calls failing together share it.
        if self._checking is None or self._checking.done():
            self._checking = asyncio.ensure_future(self.pool.check())
        try:
            await asyncio.shield(self._checking)
        except Exception as error:
            log.warning("pool check failed", extra={"error": repr(error)})


async def read(
    engine: AsyncEngine,
    work: Callable[[EngineConnection], Awaitable[T]],
    policy: RetryPolicy = RETRY,
) -> T:
    """A read on a connection of the engine; again on a fresh one if it was lost."""

    async def attempt(_: float) -> T:
        async with engine.connect() as connection:
            return await work(connection)

    return await retry_lost_connection(attempt, policy=policy)


async def transaction(
    engine: AsyncEngine,
    work: Callable[[EngineConnection], Awaitable[T]],
    *,
    idempotent: bool,
    policy: RetryPolicy = RETRY,
) -> T:
    """`work` in one database transaction, run again on a fresh connection if the
    connection was lost before the commit (the transaction was then rolled back:
    nothing happened). A loss during the commit itself leaves the outcome unknown:
    retried only if the work is `idempotent` (running it twice is running it once),
    else raised as OutcomeUnknown."""

    async def attempt(_: float) -> T:
        async with engine.connect() as connection:
            pending = await connection.begin()
            result = await work(connection)
            try:
                await pending.commit()
            except Exception as error:
                if idempotent or not is_connection_lost(error):
                    raise
                raise OutcomeUnknown("the connection was lost during the commit") from error
            return result

    return await retry_lost_connection(attempt, policy=policy)
