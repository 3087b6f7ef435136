"""The shared metrics: the RPC interceptor on a real in-process gRPC server (a tiny
generic handler, no database), cache and pool metrics, the /metrics endpoint, and
the services' own counters. Values are read from prometheus_client's registry."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import ConnectionError as RedisConnectionError

from services.runtime.cache import CacheStats, JsonCache
from services.runtime.config import ConfigError
from services.runtime.db import create_engine
from services.runtime.errors import FailedPrecondition, InvalidArgument
from services.runtime.metrics import RpcMetrics, start_metrics_server, watch_pool
from services.transaction import metrics as ledger_metrics
from services.transaction.domain.model import Posted, TransactionType
from services.user.metrics import LOGINS
from tests.fakes.ledger import transaction

# Each test gets its own gRPC service name, so its counts start from nothing.
_services = itertools.count()
SLEEP = 0.02


async def _ok(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    await asyncio.sleep(SLEEP)
    return request


async def _refuse(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no")


async def _crash(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    raise RuntimeError("a secret in the message")


async def _stream(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    yield request


if TYPE_CHECKING:
    RawHandler = grpc.GenericRpcHandler[bytes, bytes]
else:  # generic in grpc-stubs only
    RawHandler = grpc.GenericRpcHandler


class _Echo(RawHandler):
    def __init__(self, service: str) -> None:
        self._service = service

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        service, _, method = details.method.lstrip("/").partition("/")
        if service != self._service:
            return None
        if method == "Stream":
            return grpc.unary_stream_rpc_method_handler(_stream)
        unary: dict[str, Callable[..., Any]] = {"Ok": _ok, "Refuse": _refuse, "Crash": _crash}
        return grpc.unary_unary_rpc_method_handler(unary[method]) if method in unary else None


@pytest.fixture
async def echo() -> AsyncIterator[tuple[str, grpc.aio.Channel]]:
    """(gRPC service name, channel) of a server whose only interceptor is RpcMetrics."""
    service = f"test.metrics.Echo{next(_services)}"
    server = grpc.aio.server(interceptors=[RpcMetrics()])
    server.add_generic_rpc_handlers((_Echo(service),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield service, channel
    await server.stop(None)


def _requests(service: str, method: str, code: str) -> float | None:
    return REGISTRY.get_sample_value(
        "rpc_requests_total", {"service": service, "method": method, "code": code}
    )


def _duration(service: str, method: str, suffix: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(
        f"rpc_request_duration_seconds_{suffix}", {"service": service, "method": method, **labels}
    )


async def _recorded(service: str, method: str) -> None:
    """Waits (5 s at most) until the server has recorded the call: gRPC sends an
    aborted call's status before the handler's own `finally`, where it is counted,
    so the caller can see the error first."""
    for _ in range(500):
        if _duration(service, method, "count"):
            return
        await asyncio.sleep(0.01)


async def test_ok_calls_are_counted_and_timed(echo: tuple[str, grpc.aio.Channel]) -> None:
    service, channel = echo
    for _ in range(2):
        assert await channel.unary_unary(f"/{service}/Ok", None, None)(b"hi") == b"hi"
    assert _requests(service, "Ok", "OK") == 2
    assert _duration(service, "Ok", "count") == 2
    assert (_duration(service, "Ok", "sum") or 0) >= 2 * SLEEP
    # Both took at least SLEEP: none fell in the 1 ms bucket.
    assert _duration(service, "Ok", "bucket", le="0.001") == 0


async def test_aborted_call_counts_its_status(echo: tuple[str, grpc.aio.Channel]) -> None:
    service, channel = echo
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary(f"/{service}/Refuse", None, None)(b"")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await _recorded(service, "Refuse")
    assert _requests(service, "Refuse", "INVALID_ARGUMENT") == 1
    assert _requests(service, "Refuse", "OK") == 0
    assert _duration(service, "Refuse", "count") == 1


async def test_unexpected_exception_is_answered_and_counted_internal(
    echo: tuple[str, grpc.aio.Channel],
) -> None:
    service, channel = echo
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary(f"/{service}/Crash", None, None)(b"")
    # Not gRPC's own UNKNOWN, which would carry the exception's text to the caller.
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (caught.value.details() or "")
    await _recorded(service, "Crash")
    assert _requests(service, "Crash", "INTERNAL") == 1


async def test_streams_and_unknown_methods_pass_uncounted(
    echo: tuple[str, grpc.aio.Channel],
) -> None:
    service, channel = echo
    assert [m async for m in channel.unary_stream(f"/{service}/Stream", None, None)(b"x")] == [b"x"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary(f"/{service}/Nope", None, None)(b"")
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert _duration(service, "Stream", "count") is None
    assert _duration(service, "Nope", "count") is None


class _FlakyRedis:
    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.down = False

    async def get(self, key: str) -> bytes | None:
        if self.down:
            raise RedisConnectionError("down")
        return self.values.get(key)


async def test_cache_operations_are_counted_like_cache_stats() -> None:
    redis = _FlakyRedis()
    # The clock stands still: after the error, the cooldown never ends.
    cache = JsonCache(redis, "test:metrics:v1", ttl_seconds=1, clock=lambda: 0.0)  # type: ignore[arg-type]
    redis.values["test:metrics:v1:a"] = b"1"
    assert await cache.get("a") == 1  # hit
    assert await cache.get("b") is None  # miss
    redis.down = True
    assert await cache.get("a") is None  # error, then a cooldown
    assert await cache.get("a") is None  # bypassed
    for result in ("hit", "miss", "error", "bypassed"):
        value = REGISTRY.get_sample_value(
            "cache_operations_total", {"cache": "test:metrics:v1", "result": result}
        )
        assert value == 1, result
    assert cache.stats == CacheStats(hits=1, misses=1, errors=1, bypassed=1)


async def test_pool_gauges_read_the_engine_at_scrape_time() -> None:
    # Creating an engine connects to nothing.
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", pool_size=3)
    watch_pool("test-pool", engine)
    labels = {"service": "test-pool"}
    assert REGISTRY.get_sample_value("db_pool_connections", {**labels, "state": "size"}) == 3
    assert REGISTRY.get_sample_value("db_pool_connections", {**labels, "state": "in_use"}) == 0
    await engine.dispose()


def test_metrics_endpoint_serves_the_registry_on_the_given_host() -> None:
    server = start_metrics_server("127.0.0.1:0")
    try:
        assert server.server_address[0] == "127.0.0.1"
        response = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5)
        assert response.status_code == 200
        names = {family.name for family in text_string_to_metric_families(response.text)}
        assert {"rpc_requests", "rpc_request_duration_seconds", "cache_operations"} <= names
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("address", ["9100", ":9100", "localhost:http", "127.0.0.1:"])
def test_metrics_address_must_be_host_and_port(address: str) -> None:
    with pytest.raises(ConfigError):
        start_metrics_server(address)


def _ledger(type_: str, outcome: str) -> float:
    labels = {"type": type_, "outcome": outcome}
    return REGISTRY.get_sample_value("ledger_transactions_total", labels) or 0.0


async def test_ledger_counts_new_and_replayed_movements_and_refusals() -> None:
    amount_labels = {"type": "transfer", "currency": "EUR"}
    before = (
        _ledger("transfer", "ok"),
        _ledger("transfer", "replayed"),
        REGISTRY.get_sample_value("ledger_amount_minor_total", amount_labels) or 0.0,
    )
    ledger_metrics.record_posted(Posted(transaction(), replayed=False))
    ledger_metrics.record_posted(Posted(transaction(), replayed=True))
    after = (
        _ledger("transfer", "ok"),
        _ledger("transfer", "replayed"),
        REGISTRY.get_sample_value("ledger_amount_minor_total", amount_labels) or 0.0,
    )
    # A replay moves no money a second time.
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 500]

    @ledger_metrics.counts_refusals(TransactionType.REFUND)
    async def refuse(error: Exception) -> None:
        raise error

    before_reasons = _ledger("refund", "INSUFFICIENT_FUNDS"), _ledger("refund", "INVALID_ARGUMENT")
    with pytest.raises(FailedPrecondition):
        await refuse(FailedPrecondition("no", reason="INSUFFICIENT_FUNDS"))
    with pytest.raises(InvalidArgument):
        await refuse(InvalidArgument.single("amount", "bad"))
    after_reasons = _ledger("refund", "INSUFFICIENT_FUNDS"), _ledger("refund", "INVALID_ARGUMENT")
    assert [b - a for a, b in zip(before_reasons, after_reasons, strict=True)] == [1, 1]


def test_login_attempts_count_ok_and_failed() -> None:
    def logins(result: str) -> float:
        return REGISTRY.get_sample_value("user_logins_total", {"result": result}) or 0.0

    before = logins("ok"), logins("failed")
    with LOGINS.counting():
        pass
    with pytest.raises(FailedPrecondition), LOGINS.counting():
        raise FailedPrecondition("wrong password")
    assert (logins("ok") - before[0], logins("failed") - before[1]) == (1, 1)
