"""The boundary every RPC crosses: authentication, then the handler, then the
mapping of domain errors to gRPC statuses — once, for every service."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.runtime.auth import (
    ServiceCredential,
    TokenVerifier,
    bearer_token,
    set_current_caller,
)
from services.runtime.db import bound_retries, is_database_fault
from services.runtime.errors import (
    DomainError,
    ErrorKind,
    InvalidArgument,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from services.runtime.telemetry import annotate_current_span, tracing_enabled

log = logging.getLogger(__name__)

ERROR_DOMAIN = "wallet-mesh"

_CODES: dict[ErrorKind, int] = {
    ErrorKind.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: code_pb2.NOT_FOUND,
    ErrorKind.ALREADY_EXISTS: code_pb2.ALREADY_EXISTS,
    ErrorKind.PERMISSION_DENIED: code_pb2.PERMISSION_DENIED,
    ErrorKind.UNAUTHENTICATED: code_pb2.UNAUTHENTICATED,
    ErrorKind.FAILED_PRECONDITION: code_pb2.FAILED_PRECONDITION,
    ErrorKind.ABORTED: code_pb2.ABORTED,
    ErrorKind.RESOURCE_EXHAUSTED: code_pb2.RESOURCE_EXHAUSTED,
    ErrorKind.UNAVAILABLE: code_pb2.UNAVAILABLE,
}

# What a caller hears when the database fails under its call.
DATABASE_UNAVAILABLE = Unavailable(
    "the database is unavailable right now; retry shortly", reason="DATABASE_UNAVAILABLE"
)

Context = grpc.aio.ServicerContext[Any, Any]
Behavior = Callable[[Any, Context], Awaitable[Any]]


def status_for(error: DomainError) -> status_pb2.Status:
    """A `google.rpc.Status` for a domain error, with BadRequest field
    violations and an ErrorInfo reason where the error has them."""
    status = status_pb2.Status(code=_CODES[error.kind], message=error.message)
    if isinstance(error, InvalidArgument):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=violation.field, description=violation.description
                )
                for violation in error.violations
            ]
        )
        status.details.append(_pack(bad_request))
    if error.reason:
        status.details.append(
            _pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN))
        )
    if isinstance(error, ResourceExhausted):
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.seconds = error.retry_after_seconds
        status.details.append(_pack(retry))
    return status


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def with_behavior(
    handler: grpc.RpcMethodHandler[Any, Any], behavior: Behavior
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same unary-unary handler (same (de)serializers), running `behavior`:
    how an interceptor wraps the call it lets through."""
    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class WrappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """An interceptor that wraps unary handlers, building each method's wrapper once:
    gRPC asks on every call, and the handler it finds for a method is always the same
    object, so the wrapper made for it the first time is answered from then on."""

    def __init__(self) -> None:
        # method -> (the handler found, what is answered for it); one per method.
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    def wrap(self, method: str, behavior: Behavior) -> Behavior | None:
        """The behavior to run for `method` instead; None: leave it as it is."""
        raise NotImplementedError

    def serve(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """The handler to answer for `method`'s unary `handler` (by default the same
        one running `wrap`'s behavior)."""
        # grpc-stubs types aio handlers as sync ones; they are coroutines here.
        behavior = self.wrap(method, handler.unary_unary)  # type: ignore[arg-type]
        return handler if behavior is None else with_behavior(handler, behavior)

    def serve_streaming(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """The handler to answer for a streaming method (by default the same one: this
        interceptor has nothing to wrap there)."""
        return handler

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        if handler.unary_unary is None:
            return self.serve_streaming(method, handler)
        found = self._wrapped.get(method)
        if found is not None and found[0] is handler:
            return found[1]  # type: ignore[no-any-return]
        answer = self.serve(method, handler)
        self._wrapped[method] = (handler, answer)
        return answer


def ids_of(message: Any, *, nested: bool = False) -> dict[str, str]:
    """The ids a message carries (wallet, transaction, hold, user...), as span
    attributes `wallet.<field>`: what an operator needs to find one payment's
    trace. Only *_id string fields: never amounts, emails, tokens or secrets."""
    found: dict[str, str] = {}
    for field, value in message.ListFields():
        if isinstance(value, str) and field.name.endswith("_id"):
            found[f"wallet.{field.name}"] = value
        elif nested and field.type == field.TYPE_MESSAGE and not field.is_repeated:
            found.update(ids_of(value))
    return found


class ServiceBoundary(WrappingInterceptor):
    """Authenticates every non-public RPC of the service and turns what the
    handler raises into a status.

    `public_methods` are full gRPC method paths ("/pkg.Service/Method") that
    need no token. Methods under `internal_prefixes` need the mesh's service
    credential instead of a user's token. Only the service's own methods are
    guarded: health and reflection stay open, as probes and grpcurl need them.
    """

    def __init__(
        self,
        verifier: TokenVerifier | None,
        *,
        guarded_prefixes: tuple[str, ...],
        public_methods: frozenset[str],
        internal_prefixes: tuple[str, ...] = (),
        credential: ServiceCredential | None = None,
    ) -> None:
        super().__init__()
        self._verifier = verifier
        self._guarded_prefixes = (*guarded_prefixes, *internal_prefixes)
        self._public_methods = public_methods
        self._internal_prefixes = internal_prefixes
        self._credential = credential or ServiceCredential(None)

    def wrap(self, method: str, behavior: Behavior) -> Behavior | None:
        if not method.startswith(self._guarded_prefixes):
            return None
        internal = method.startswith(self._internal_prefixes)
        needs_token = not internal and method not in self._public_methods
        return self._wrap(behavior, method, needs_token, internal)

    def serve_streaming(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """Fails closed: a streaming method of the service's own is refused, not served
        unguarded, until the boundary can authenticate it and map its errors (health's
        Watch and reflection, not the service's, pass as they are)."""
        if not method.startswith(self._guarded_prefixes):
            return handler
        log.error(
            "a streaming method of the service is refused: not guarded", extra={"rpc": method}
        )
        return _refusing(handler)

    def _wrap(self, behavior: Behavior, method: str, needs_token: bool, internal: bool) -> Behavior:
        verifier = self._verifier
        credential = self._credential

        async def guarded(request: Any, context: Context) -> Any:
            reset = None
            retries = bound_retries(context.time_remaining())
            try:
                if internal:
                    credential.verify(tuple(context.invocation_metadata() or ()))
                if needs_token:
                    token = bearer_token(tuple(context.invocation_metadata() or ()))
                    if token is None:
                        raise Unauthenticated(
                            "this call needs an access token", reason="TOKEN_MISSING"
                        )
                    if verifier is None:
                        raise Unauthenticated("this service takes no user tokens")
                    caller = await verifier.verify(token)
                    reset = set_current_caller(caller)
                    if tracing_enabled():
                        annotate_current_span({"enduser.id": caller.user_id})
                if tracing_enabled():
                    annotate_current_span(ids_of(request))
                response = await behavior(request, context)
                if tracing_enabled():
                    annotate_current_span(ids_of(response, nested=True))
                return response
            except DomainError as error:
                # What an operator looks for first; the line carries the trace id.
                log.info(
                    "refused",
                    extra={"rpc": method, "code": error.kind.name, "reason": error.reason},
                )
                status = rpc_status.to_status(status_for(error))
                trailers = tuple(status.trailing_metadata)
                if isinstance(error, ResourceExhausted):
                    # Also as HTTP's Retry-After: the edge passes it on to REST clients.
                    trailers += (("retry-after", str(error.retry_after_seconds)),)
                await context.abort(status.code, status.details, trailers)
            except (grpc.aio.AbortError, grpc.aio.InternalError):
                # InternalError: gRPC failed an operation on a call its client has left;
                # nothing can be answered any more (RpcMetrics says so, in one line).
                raise
            except Exception as error:
                if is_database_fault(error):
                    # The database failing (a restart, an outage) is a fault, not a
                    # bug: retryable, like any other dependency being away.
                    log.warning("database unavailable", extra={"rpc": method, "error": repr(error)})
                    status = rpc_status.to_status(status_for(DATABASE_UNAVAILABLE))
                    await context.abort(status.code, status.details, status.trailing_metadata)
                log.exception("unhandled error in %s", method)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            finally:
                retries.var.reset(retries)
                if reset is not None:
                    reset.var.reset(reset)

        return guarded


STREAMING_UNGUARDED = "this method streams, and streaming methods are not served yet"


def _refusing(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same kind and (de)serializers that answers UNIMPLEMENTED."""

    async def refuse(request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, STREAMING_UNGUARDED)

    kinds = {
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
