"""What a database error means (services/runtime/db.py): a fault or a bug, a lost
connection or not; and how work whose connection was lost is tried again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar

import grpc
import psycopg
import pytest
import sqlalchemy.exc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from psycopg import errors
from psycopg_pool import PoolTimeout

from services.runtime.db import (
    OutcomeUnknown,
    RetryPolicy,
    bound_retries,
    is_connection_lost,
    is_database_fault,
    retry_lost_connection,
)
from services.runtime.interceptors import ServiceBoundary

QUICK = RetryPolicy(attempts=4, first_delay=0.001, max_delay=0.002, budget=5.0)


def wrapped(error: Exception, *, invalidated: bool = False) -> sqlalchemy.exc.DBAPIError:
    """`error` as SQLAlchemy raises it from psycopg."""
    wrapper = sqlalchemy.exc.DBAPIError.instance(
        "SELECT 1", {}, error, psycopg.Error, connection_invalidated=invalidated
    )
    # Typed as its base class; for a DB-API error it is always this one.
    assert isinstance(wrapper, sqlalchemy.exc.DBAPIError)
    return wrapper


LOST = [
    errors.AdminShutdown("terminating connection due to administrator command"),
    errors.CannotConnectNow("the database system is starting up"),
    errors.CrashShutdown("terminating connection because of crash of another server process"),
    psycopg.OperationalError("connection failed: Connection refused"),  # libpq: no SQLSTATE
    errors.ConnectionTimeout("connection timeout expired"),
    errors.ConnectionFailure("connection failure"),
    PoolTimeout("couldn't get a connection after 5.00 sec"),
]
# Faults (UNAVAILABLE) whose connection still works: not retried on a fresh one.
FAULTS_NOT_LOST = [
    errors.QueryCanceled("canceling statement due to statement timeout"),
    errors.TooManyConnections("sorry, too many clients already"),
    errors.DiskFull("could not extend file"),
]
BUGS = [
    errors.SyntaxError('syntax error at or near "SELEC"'),
    errors.UniqueViolation("duplicate key value violates unique constraint"),
    errors.UndefinedTable('relation "nope" does not exist'),
    psycopg.ProgrammingError("the query has 2 placeholders but 1 parameters were passed"),
    RuntimeError("unexpected ledger outcome 'weird'"),
]


@pytest.mark.parametrize("error", LOST, ids=lambda e: type(e).__name__)
def test_a_lost_connection_is_a_fault_plain_or_wrapped(error: Exception) -> None:
    assert is_database_fault(error)
    assert is_connection_lost(error)
    assert is_database_fault(wrapped(error))
    assert is_connection_lost(wrapped(error))


@pytest.mark.parametrize("error", FAULTS_NOT_LOST, ids=lambda e: type(e).__name__)
def test_a_database_failing_otherwise_is_a_fault_but_no_lost_connection(error: Exception) -> None:
    assert is_database_fault(error)
    assert not is_connection_lost(error)
    assert is_database_fault(wrapped(error))
    assert not is_connection_lost(wrapped(error))


@pytest.mark.parametrize("error", BUGS, ids=lambda e: type(e).__name__)
def test_bugs_stay_bugs(error: Exception) -> None:
    assert not is_database_fault(error)
    assert not is_connection_lost(error)
    if isinstance(error, psycopg.Error):
        assert not is_database_fault(wrapped(error))


def test_sqlalchemy_pool_timeouts_and_invalidated_connections_are_lost_connections() -> None:
    timeout = sqlalchemy.exc.TimeoutError("QueuePool limit of size 4 overflow 0 reached")
    assert is_database_fault(timeout)
    assert is_connection_lost(timeout)
    # SQLAlchemy saw the connection die (its own disconnect check), whatever psycopg said.
    invalidated = wrapped(psycopg.InterfaceError("the connection is lost"), invalidated=True)
    assert is_database_fault(invalidated)
    assert is_connection_lost(invalidated)


def test_an_unknown_commit_outcome_is_a_fault_not_to_retry() -> None:
    error = OutcomeUnknown("the connection was lost during the commit")
    assert is_database_fault(error)
    assert not is_connection_lost(error)


async def test_work_whose_connection_was_lost_is_tried_again_until_it_succeeds() -> None:
    tries: list[float] = []
    checks: list[str] = []

    async def attempt(seconds_left: float) -> str:
        tries.append(seconds_left)
        if len(tries) < 3:
            raise errors.AdminShutdown("terminating connection due to administrator command")
        return "done"

    async def before_retry() -> None:
        checks.append("check")

    assert await retry_lost_connection(attempt, before_retry=before_retry, policy=QUICK) == "done"
    assert len(tries) == 3
    assert checks == ["check", "check"]
    assert all(0 < left <= QUICK.budget for left in tries)


async def test_other_errors_are_not_retried() -> None:
    tries = 0

    async def attempt(_: float) -> None:
        nonlocal tries
        tries += 1
        raise errors.UniqueViolation("duplicate key")

    with pytest.raises(errors.UniqueViolation):
        await retry_lost_connection(attempt, policy=QUICK)
    assert tries == 1


async def test_retries_are_bounded_by_tries_and_the_last_error_is_raised() -> None:
    tries = 0

    async def attempt(_: float) -> None:
        nonlocal tries
        tries += 1
        raise PoolTimeout(f"try {tries}")

    with pytest.raises(PoolTimeout, match=f"try {QUICK.attempts}"):
        await retry_lost_connection(attempt, policy=QUICK)
    assert tries == QUICK.attempts


async def test_retries_are_bounded_by_the_budget() -> None:
    tries = 0
    slow = RetryPolicy(attempts=100, first_delay=0.05, max_delay=0.05, budget=0.2)

    async def attempt(_: float) -> None:
        nonlocal tries
        tries += 1
        raise errors.CannotConnectNow("the database system is starting up")

    with pytest.raises(errors.CannotConnectNow):
        await retry_lost_connection(attempt, policy=slow)
    assert 1 < tries <= 5  # 0.2 s of 0.05 s pauses


async def test_the_retries_of_one_call_share_its_budget() -> None:
    """Two statements of one call: the second retries only in what the first left."""
    tries = 0
    policy = RetryPolicy(attempts=100, first_delay=0.05, max_delay=0.05, budget=0.3)

    async def attempt(_: float) -> None:
        nonlocal tries
        tries += 1
        raise errors.AdminShutdown("terminating connection due to administrator command")

    call = bound_retries(None, policy)
    try:
        with pytest.raises(errors.AdminShutdown):
            await retry_lost_connection(attempt, policy=policy)
        first = tries
        with pytest.raises(errors.AdminShutdown):
            await retry_lost_connection(attempt, policy=policy)
        assert tries - first == 1  # the call's budget is spent: tried once, not retried
    finally:
        call.var.reset(call)


async def test_a_near_deadline_shortens_the_retries() -> None:
    tries = 0

    async def attempt(_: float) -> None:
        nonlocal tries
        tries += 1
        raise errors.AdminShutdown("terminating connection due to administrator command")

    # 0.3 s left, less the margin to answer: no time for a retry after a 0.1 s pause.
    call = bound_retries(0.3, RetryPolicy(first_delay=0.1))
    try:
        with pytest.raises(errors.AdminShutdown):
            await retry_lost_connection(attempt, policy=RetryPolicy(first_delay=0.1))
    finally:
        call.var.reset(call)
    assert tries == 1


# --- the service boundary: a fault is UNAVAILABLE, a bug INTERNAL --------------------

BOUNDARY_SERVICE = "test.faults.Boundary"


if TYPE_CHECKING:
    RawHandler = grpc.GenericRpcHandler[bytes, bytes]
else:  # generic in grpc-stubs only
    RawHandler = grpc.GenericRpcHandler


class _Raising(RawHandler):
    """`/test.faults.Boundary/<Name>` raises the error named <Name>."""

    raises: ClassVar[dict[str, Exception]] = {
        "AdminShutdown": errors.AdminShutdown("terminating connection"),
        "WrappedPoolTimeout": sqlalchemy.exc.TimeoutError("QueuePool limit reached"),
        "CommitLost": OutcomeUnknown("the connection was lost during the commit"),
        "SyntaxError": errors.SyntaxError('syntax error at or near "SELEC"'),
        "UniqueViolation": wrapped(errors.UniqueViolation("duplicate key value")),
    }

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        method = details.method.rpartition("/")[2]
        error = self.raises[method]

        async def fail(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            raise error

        return grpc.unary_unary_rpc_method_handler(fail)


@pytest.fixture
async def boundary() -> AsyncIterator[grpc.aio.Channel]:
    names = [f"/{BOUNDARY_SERVICE}/{name}" for name in _Raising.raises]
    server = grpc.aio.server(
        interceptors=[
            ServiceBoundary(
                None, guarded_prefixes=(f"/{BOUNDARY_SERVICE}/",), public_methods=frozenset(names)
            )
        ]
    )
    server.add_generic_rpc_handlers((_Raising(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await server.stop(None)


async def _status_of(channel: grpc.aio.Channel, method: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary(f"/{BOUNDARY_SERVICE}/{method}", None, None)(b"")
    return caught.value


@pytest.mark.parametrize("method", ["AdminShutdown", "WrappedPoolTimeout", "CommitLost"])
async def test_the_boundary_answers_a_database_fault_unavailable(
    boundary: grpc.aio.Channel, method: str
) -> None:
    error = await _status_of(boundary, method)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details() == "the database is unavailable right now; retry shortly"
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert any(detail.Unpack(info) for detail in status.details)
    assert info.reason == "DATABASE_UNAVAILABLE"


@pytest.mark.parametrize("method", ["SyntaxError", "UniqueViolation"])
async def test_the_boundary_answers_a_database_bug_internal(
    boundary: grpc.aio.Channel, method: str
) -> None:
    error = await _status_of(boundary, method)
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "internal error"  # the SQL and its error are not leaked
