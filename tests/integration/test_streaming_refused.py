"""Streaming methods under the service boundary, over real gRPC: the boundary guards unary
methods only, so a streaming method of the service's own is refused (UNIMPLEMENTED), never
served without authentication; streaming methods outside it pass as they are."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from services.runtime.interceptors import STREAMING_UNGUARDED, Context, ServiceBoundary
from services.runtime.one_message import OneRequestMessage

GUARDED = "test.v1.StatementService"
OTHER = "test.v1.OpenService"


async def stream_secrets(request: bytes, context: Context) -> AsyncIterator[bytes]:
    yield b"someone's statement"


async def received(stream: Any) -> list[bytes]:
    return [item async for item in stream]


@pytest.fixture
async def target() -> AsyncIterator[str]:
    server = grpc.aio.server(
        interceptors=[
            OneRequestMessage(),
            ServiceBoundary(None, guarded_prefixes=(f"/{GUARDED}/",), public_methods=frozenset()),
        ]
    )
    for service in (GUARDED, OTHER):
        generic: Any = grpc.method_handlers_generic_handler(
            service, {"Stream": grpc.unary_stream_rpc_method_handler(stream_secrets)}
        )
        server.add_generic_rpc_handlers((generic,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(grace=0)


async def test_a_streaming_method_of_the_service_is_refused_not_served(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_stream(f"/{GUARDED}/Stream", None, None)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await received(call(b""))
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert caught.value.details() == STREAMING_UNGUARDED
        # Outside the boundary's prefixes (health's Watch, say) streams pass as they are.
        answers = await received(channel.unary_stream(f"/{OTHER}/Stream", None, None)(b""))
        assert answers == [b"someone's statement"]
