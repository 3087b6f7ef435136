"""One way to run a gRPC service: grpc.aio server, standard health service,
server reflection, readiness tied to the database, graceful shutdown.

Nothing happens at import time; a service builds a `GrpcApp` in its wiring
module and hands it to `serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

# The asyncio health servicer; grpc_health ships no type information for it.
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

from services.runtime.auth import ServiceCredential, TokenVerifier
from services.runtime.contracts import mesh_service_names
from services.runtime.interceptors import ServiceBoundary
from services.runtime.logging import configure_logging
from services.runtime.metrics import RpcMetrics, start_metrics_server
from services.runtime.one_message import OneRequestMessage
from services.runtime.telemetry import configure_tracing, shutdown_tracing
from services.runtime.validation import InputValidation

HealthServicer = Any
# The health service name that is SERVING while the process serves, even when its
# database is down (every other name, "" included, follows readiness): a liveness
# probe's, since restarting a process does not bring its database back.
LIVENESS_SERVICE = "liveness"
log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1024 * 1024


@dataclass
class GrpcApp:
    """What a service contributes to a server process."""

    name: str
    # Fully qualified gRPC service names, for health and reflection.
    service_names: tuple[str, ...]
    register: Callable[[grpc.aio.Server], None]
    interceptors: Sequence[grpc.aio.ServerInterceptor]  # type: ignore[type-arg]
    # Raises while the service cannot serve (e.g. the database does not answer).
    readiness_check: Callable[[], Awaitable[None]]
    on_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Awaited in the running loop before the server starts (e.g. opening pools).
    on_startup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Long-running tasks of the service (e.g. a sweeper), cancelled on shutdown.
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)


class RunningServer:
    """A started server: its bound port, and the way to stop it gracefully."""

    def __init__(self, server: grpc.aio.Server, health_servicer: HealthServicer, port: int) -> None:
        self.server = server
        self.health = health_servicer
        self.port = port
        self._tasks: list[asyncio.Task[None]] = []

    async def stop(self, grace: float) -> None:
        # NOT_SERVING first, so the edge stops sending new calls, then drain.
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        for task in self._tasks:
            task.cancel()


async def start(app: GrpcApp, address: str, *, probe_interval: float = 2.0) -> RunningServer:
    """Starts serving on `address` ("host:port"; port 0 picks a free one).

    Health starts NOT_SERVING and turns SERVING once the readiness check
    passes; it is re-checked every `probe_interval` seconds after that.
    """
    for hook in app.on_startup:
        await hook()
    server = grpc.aio.server(
        interceptors=app.interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    app.register(server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    described = dict.fromkeys((*app.service_names, *mesh_service_names()))
    reflection.enable_server_reflection(
        (*described, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(address)
    await server.start()
    running = RunningServer(server, health_servicer, port)
    await _set_health(health_servicer, app.service_names, serving=False)
    # The process serves, whatever its dependencies say: what a liveness probe asks.
    await health_servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    running._tasks.append(
        asyncio.create_task(_watch_readiness(app, health_servicer, probe_interval))
    )
    running._tasks += [asyncio.create_task(task()) for task in app.background]
    log.info("listening", extra={"address": address, "port": port, "service": app.name})
    return running


async def _set_health(servicer: HealthServicer, names: tuple[str, ...], *, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", *names):
        await servicer.set(name, status)


async def _watch_readiness(app: GrpcApp, servicer: health.HealthServicer, interval: float) -> None:
    serving: bool | None = None
    while True:
        try:
            await asyncio.wait_for(app.readiness_check(), timeout=max(interval, 1.0))
            ready = True
        except Exception as error:
            ready = False
            if serving is not False:
                log.warning("not ready", extra={"error": repr(error)})
        if ready != serving:
            await _set_health(servicer, app.service_names, serving=ready)
            log.info("health changed", extra={"serving": ready})
            serving = ready
        # Poll fast until first ready, then at the steady interval.
        await asyncio.sleep(interval if serving else min(interval, 0.2))


async def serve(app: GrpcApp, address: str, *, grace: float = 5.0) -> None:
    """Runs until SIGTERM or SIGINT, then shuts down gracefully."""
    running = await start(app, address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down", extra={"grace_seconds": grace})
    await running.stop(grace)
    for callback in app.on_shutdown:
        with contextlib.suppress(Exception):
            await callback()
    shutdown_tracing()


def run_service(
    service: str,
    instance: str,
    grpc_address: str,
    metrics_address: str | None,
    build: Callable[[], GrpcApp],
) -> None:
    """The `serve` command of every service: JSON logs, tracing (as the OTEL_*
    variables say), the metrics endpoint, then the app — built inside the running
    loop, where its gRPC channels and pools bind — until SIGTERM."""
    configure_logging(service, instance)
    configure_tracing(service, instance)

    async def main() -> None:
        if metrics_address:
            start_metrics_server(metrics_address)
        await serve(build(), grpc_address)

    uvloop.run(main())


def service_interceptors(
    verifier: TokenVerifier | None,
    service_name: str,
    public_methods: Iterable[str],
    *,
    internal_services: Iterable[str] = (),
    credential: ServiceCredential | None = None,
) -> list[grpc.aio.ServerInterceptor]:  # type: ignore[type-arg]
    """The interceptors of a wallet service, outermost first: one request message per
    unary call (calls with none, or an unreadable one, are answered too), metrics (so
    that authentication failures are counted too), the text rule of every request
    (before authentication's cost), then the boundary. Methods of `internal_services` need
    the service credential instead of a user token."""
    guarded_prefixes = (f"/{service_name}/",)
    internal_prefixes = tuple(f"/{name}/" for name in internal_services)
    return [
        OneRequestMessage(),
        RpcMetrics(),
        InputValidation((*guarded_prefixes, *internal_prefixes)),
        ServiceBoundary(
            verifier,
            guarded_prefixes=guarded_prefixes,
            public_methods=frozenset(public_methods),
            internal_prefixes=internal_prefixes,
            credential=credential,
        ),
    ]
