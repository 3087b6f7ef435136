"""A unary call without a request message, or with one that does not parse, is
answered INVALID_ARGUMENT at once (grpc.aio alone leaves the first unanswered until
its deadline and answers the second UNKNOWN), and never reaches the handler."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from services.runtime.one_message import NO_MESSAGE, NOT_A_MESSAGE
from services.runtime.server import service_interceptors
from wallet.user.v1 import user_service_pb2 as pb

SERVICE = "wallet.user.v1.UserService"
METHOD = f"/{SERVICE}/Login"


class Recorder:
    def __init__(self) -> None:
        self.emails: list[str] = []

    async def login(self, request: pb.LoginRequest, context: object) -> pb.LoginResponse:
        self.emails.append(request.email)
        return pb.LoginResponse(access_token="t")


@pytest.fixture
async def served() -> AsyncIterator[tuple[grpc.aio.Channel, Recorder]]:
    recorder = Recorder()
    server = grpc.aio.server(interceptors=service_interceptors(None, SERVICE, (METHOD,)))
    handler = grpc.unary_unary_rpc_method_handler(
        recorder.login,
        request_deserializer=pb.LoginRequest.FromString,
        response_serializer=pb.LoginResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Login": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel, recorder
    await server.stop(None)


async def test_a_call_without_a_message_is_invalid_argument(
    served: tuple[grpc.aio.Channel, Recorder],
) -> None:
    channel, recorder = served

    async def nothing() -> AsyncIterator[bytes]:
        return
        yield b""  # an async generator that sends no message, then half-closes

    # A stream-unary call of zero messages: on the wire, a unary call with no message.
    call = channel.stream_unary(METHOD, None, None)(nothing(), timeout=30)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == NO_MESSAGE
    assert recorder.emails == []


async def test_a_body_that_is_no_message_is_invalid_argument(
    served: tuple[grpc.aio.Channel, Recorder],
) -> None:
    channel, recorder = served
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        # Field 1 (email) declared 100 bytes long, 1 byte sent: no protobuf parses it.
        await channel.unary_unary(METHOD, None, None)(b"\x0a\x64x", timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == NOT_A_MESSAGE
    assert recorder.emails == []


async def test_one_message_reaches_the_handler_as_before(
    served: tuple[grpc.aio.Channel, Recorder],
) -> None:
    channel, recorder = served
    login = channel.unary_unary(
        METHOD,
        request_serializer=pb.LoginRequest.SerializeToString,
        response_deserializer=pb.LoginResponse.FromString,
    )
    answer = await login(pb.LoginRequest(email="ada@example.com"), timeout=30)
    assert answer.access_token == "t"
    assert recorder.emails == ["ada@example.com"]
