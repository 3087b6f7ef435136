"""The user service, called over gRPC on the caller's behalf (their token is
forwarded), with client-side round robin over its instances."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC

import grpc

from services.runtime.channels import round_robin_channel
from services.runtime.errors import Unavailable
from services.transaction.domain.model import UserProfile
from wallet.user.v1 import user_service_pb2 as user_pb
from wallet.user.v1 import user_service_pb2_grpc

CALL_TIMEOUT_SECONDS = 2.0


def user_service_channel(target: str) -> grpc.aio.Channel:
    """`target` lists every instance, e.g. "ipv4:127.0.0.1:50051,127.0.0.1:50052";
    the read-only calls are retried on another instance when one is down."""
    return round_robin_channel(
        target,
        [("wallet.user.v1.UserService", m) for m in ("GetUser", "LookupUser", "GetJwks")],
    )


def _unavailable(error: grpc.aio.AioRpcError) -> Unavailable:
    return Unavailable(f"the user service did not answer: {error.code().name}")


def _auth(access_token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {access_token}"),)


class GrpcUserDirectory:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = user_service_pb2_grpc.UserServiceStub(channel)

    async def user_id_for_email(self, access_token: str, email: str) -> str | None:
        return await self._lookup(access_token, user_pb.LookupUserRequest(email=email), "user_id")

    async def display_name(self, access_token: str, user_id: str) -> str | None:
        request = user_pb.LookupUserRequest(user_id=user_id)
        return await self._lookup(access_token, request, "display_name")

    async def _lookup(
        self, access_token: str, request: user_pb.LookupUserRequest, field: str
    ) -> str | None:
        try:
            response = await self._stub.LookupUser(
                request, metadata=_auth(access_token), timeout=CALL_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _unavailable(error) from error
        return str(getattr(response.profile, field))

    async def me(self, access_token: str) -> UserProfile:
        try:
            response = await self._stub.GetUser(
                user_pb.GetUserRequest(user_id="me"),
                metadata=_auth(access_token),
                timeout=CALL_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as error:
            raise _unavailable(error) from error
        user = response.user
        return UserProfile(
            user_id=user.user_id,
            email=user.email,
            display_name=user.display_name,
            phone=user.phone,
            roles=tuple(user_pb.Role.Name(role) for role in user.roles),
            created_at=user.create_time.ToDatetime(tzinfo=UTC)
            if user.HasField("create_time")
            else None,
            updated_at=user.update_time.ToDatetime(tzinfo=UTC)
            if user.HasField("update_time")
            else None,
        )

    async def jwks(self) -> list[Mapping[str, str]]:
        response = await self._stub.GetJwks(user_pb.GetJwksRequest(), timeout=CALL_TIMEOUT_SECONDS)
        return [
            {"kty": k.kty, "crv": k.crv, "x": k.x, "kid": k.kid, "alg": k.alg, "use": k.use}
            for k in response.keys
        ]
