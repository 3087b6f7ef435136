"""Prometheus metrics every service shares, on prometheus_client's default registry,
and the HTTP endpoint that serves them (GET /metrics).

- RPCs: `rpc_requests_total` by final status and `rpc_request_duration_seconds`, per
  gRPC method, recorded by `RpcMetrics`, the outermost interceptor.
- Caches: `cache_operations_total` per namespace, counted by JsonCache.
- Database pools: `db_pool_connections` (in use, size), read at each scrape.

A service's own counters (ledger, logins, rate-limit decisions) live in its `metrics`
module, next to the api layer that records them. Circuit-breaker states and the
reconciler's backlog (issue 4) will be defined here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import Counter, Gauge, Histogram, start_http_server
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from services.runtime.config import ConfigError
from services.runtime.interceptors import Behavior, Context, WrappingInterceptor

log = logging.getLogger(__name__)

# 1 ms to 5 s: a cached read takes about a millisecond; the edge gives up at 15 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

RPC_REQUESTS = Counter(
    "rpc_requests_total",
    "RPCs handled, by gRPC service, method and final status code.",
    ["service", "method", "code"],
)
RPC_DURATION = Histogram(
    "rpc_request_duration_seconds",
    "Time from the call reaching the server's interceptors to its status.",
    ["service", "method"],
    buckets=LATENCY_BUCKETS,
)
CACHE_OPERATIONS = Counter(
    "cache_operations_total",
    "Cache lookups and failures: hit, miss, error (Redis failed), bypassed (cooldown).",
    ["cache", "result"],
)
DB_POOL_CONNECTIONS = Gauge(
    "db_pool_connections",
    "Database connections: in_use (checked out) and size (the configured pool size;"
    " as many again may open as overflow).",
    ["service", "state"],
)


class _MethodSeries:
    """One method's label children, bound once: `labels()` on every call would
    take a lock and build a key each time."""

    __slots__ = ("_counts", "_method", "_service", "duration", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        # "/wallet.user.v1.UserService/Login" → ("wallet.user.v1.UserService", "Login")
        self._service, _, self._method = path.lstrip("/").rpartition("/")
        self.duration = RPC_DURATION.labels(self._service, self._method)
        self._counts = {grpc.StatusCode.OK: RPC_REQUESTS.labels(self._service, self._method, "OK")}

    def record(self, code: grpc.StatusCode, seconds: float) -> None:
        count = self._counts.get(code)
        if count is None:
            count = RPC_REQUESTS.labels(self._service, self._method, code.name)
            self._counts[code] = count
        count.inc()
        self.duration.observe(seconds)


class RpcMetrics(WrappingInterceptor):
    """Counts and times every unary RPC by its final status. Put it first, so it
    also sees what authentication refuses; streaming RPCs (reflection) pass as is.

    An exception that nothing turned into a status is answered INTERNAL here, as
    ServiceBoundary does: gRPC itself would answer UNKNOWN with the exception's
    text, and the code counted must be the one the caller gets. A call whose client
    went away (its deadline passed, Envoy gave up) before the answer is no error of
    ours: one line, no traceback, counted CANCELLED.
    """

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        # Only methods with a handler get here, so the label values stay bounded.
        return _measured(behavior, _MethodSeries(method))


def _measured(behavior: Behavior, series: _MethodSeries) -> Behavior:
    async def measured(request: Any, context: Context) -> Any:
        start = time.perf_counter()
        cancelled = False
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except asyncio.CancelledError:
            cancelled = True
            raise
        except grpc.aio.InternalError as error:
            # gRPC's core failed an operation on the call (ExecuteBatchError: answering
            # a call the client has left). Nothing can be answered any more; gRPC
            # itself ignores this error once it knows the client is gone.
            cancelled = True
            log.info(
                "call ended before its answer: the client went away",
                extra={"rpc": series.path, "error": type(error).__name__},
            )
            raise
        except Exception:
            log.exception("unhandled error in %s", series.path)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        finally:
            # The code set by abort or set_code; None when the handler just returned.
            code = grpc.StatusCode.CANCELLED if cancelled else context.code()
            series.record(code or grpc.StatusCode.OK, time.perf_counter() - start)

    return measured


def watch_pool(service: str, engine: AsyncEngine) -> None:
    """Reports the engine's pool at each scrape. Calling it again for a service
    replaces the engine watched (tests build apps more than once per process)."""
    pool = engine.pool
    if not isinstance(pool, QueuePool):
        return  # NullPool and the like keep no connections to report
    DB_POOL_CONNECTIONS.labels(service, "in_use").set_function(pool.checkedout)
    DB_POOL_CONNECTIONS.labels(service, "size").set_function(pool.size)


def watch_driver_pool(service: str, *pools: AsyncConnectionPool[Any]) -> None:
    """The same, for plain psycopg pools (the ledger's hot path), summed over the pools
    of a service (one per ledger database)."""

    def in_use() -> float:
        total = 0
        for pool in pools:
            stats = pool.get_stats()
            total += stats.get("pool_size", 0) - stats.get("pool_available", 0)
        return float(total)

    DB_POOL_CONNECTIONS.labels(service, "in_use").set_function(in_use)
    DB_POOL_CONNECTIONS.labels(service, "size").set_function(
        lambda: float(sum(pool.max_size for pool in pools))
    )


def start_metrics_server(address: str) -> WSGIServer:
    """Serves GET /metrics on `address` ("host:port"; port 0 picks a free one) from
    a daemon thread, so a scrape never waits for the event loop, nor blocks it."""
    host, separator, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # "[::1]:9100"
    if not separator or not host or not port.isdigit():
        raise ConfigError(f"a metrics address must be host:port, got {address!r}")
    server, _ = start_http_server(int(port), addr=host)
    return server
