"""Every unary method answers a call whatever its body: none, or one that is no
message of the method's type.

grpc.aio's unary path has two gaps a client can use against us. A call that
half-closes without a message gets no answer at all (`_handle_unary_unary_rpc`
returns without a status, taking it for a cancelled call), so it hangs until its
deadline — and at the edge a timeout counts as the instance's own failure, toward
ejecting it. And a body that does not parse is answered UNKNOWN, a 500 at the edge.
Served as stream-unary, the same method reads its one message itself and answers
INVALID_ARGUMENT for both. The interceptor is the outermost one, so those inside
it (metrics, validation, the boundary) keep seeing and wrapping unary handlers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from services.runtime.interceptors import Context, WrappingInterceptor

NO_MESSAGE = "the call carries no request message: a unary method needs exactly one"
NOT_A_MESSAGE = "the request is not a valid protobuf message of this method's request type"


class OneRequestMessage(WrappingInterceptor):
    def serve(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.stream_unary_rpc_method_handler(
            _reading_one_message(handler.unary_unary),  # type: ignore[arg-type]
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _reading_one_message(
    unary: Callable[[Any, Context], Awaitable[Any]],
) -> Callable[[AsyncIterator[Any], Context], Awaitable[Any]]:
    async def one_message(requests: AsyncIterator[Any], context: Context) -> Any:
        try:
            request = await anext(aiter(requests), None)
        except DecodeError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, NOT_A_MESSAGE)
        if request is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, NO_MESSAGE)
        return await unary(request, context)

    return one_message
