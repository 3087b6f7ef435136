"""Calls whose client went away before the answer (its deadline passed, Envoy gave up),
through the shared interceptors over real gRPC: no error of ours, so one log line at
most, no traceback, and the call counted CANCELLED."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from services.runtime.errors import Unavailable
from services.runtime.interceptors import Context, ServiceBoundary
from services.runtime.metrics import RpcMetrics
from tests.eventually import eventually_async

SERVICE = "test.v1.LateService"
DEADLINE = 10.0


async def answer_too_late(request: bytes, context: Context) -> bytes:
    """Aborts only once gRPC has cancelled the call (the client left): what a handler
    does when its own timeout and the client's deadline fall together."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        await context.abort(grpc.StatusCode.UNAVAILABLE, "too late")
    return b""


async def fail_too_late(request: bytes, context: Context) -> bytes:
    """The same, with a domain error, which the ServiceBoundary turns into an abort."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        raise Unavailable("too late") from None
    return b""


Handler = Callable[[bytes, Context], Awaitable[bytes]]


@pytest.fixture
async def target() -> AsyncIterator[str]:
    handlers: dict[str, Handler] = {"Abort": answer_too_late, "Raise": fail_too_late}
    server = grpc.aio.server(
        interceptors=[
            RpcMetrics(),
            ServiceBoundary(
                None,
                guarded_prefixes=(f"/{SERVICE}/",),
                public_methods=frozenset(f"/{SERVICE}/{name}" for name in handlers),
            ),
        ]
    )
    generic: Any = grpc.method_handlers_generic_handler(
        SERVICE,
        {name: grpc.unary_unary_rpc_method_handler(h) for name, h in handlers.items()},
    )
    server.add_generic_rpc_handlers((generic,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(grace=0)


def cancelled(method: str) -> float:
    value = REGISTRY.get_sample_value(
        "rpc_requests_total", {"service": SERVICE, "method": method, "code": "CANCELLED"}
    )
    return value or 0.0


@pytest.mark.parametrize("method", ["Abort", "Raise"])
async def test_an_answer_after_the_client_left_is_one_line_and_no_traceback(
    target: str, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    before = cancelled(method)
    caplog.set_level(logging.INFO)
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(f"/{SERVICE}/{method}", None, None)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(b"", timeout=0.1)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    async def counted() -> bool:
        return cancelled(method) != before

    # Awaited: the server in this event loop must run on to count it.
    await eventually_async(
        counted, "the abandoned call to be counted CANCELLED", DEADLINE, interval=0.05
    )
    assert cancelled(method) == before + 1
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert problems == [], "no warning, no error, no traceback"
    gone = [r for r in caplog.records if "client went away" in r.getMessage()]
    assert len(gone) == 1
