"""gRPC handlers of wallet.user.v1.UserService: protobuf in, domain call,
protobuf out. No rules here, and no SQL; errors are mapped by the runtime's
ServiceBoundary interceptor."""

from __future__ import annotations

from typing import TypeVar

from services.runtime.auth import current_caller
from services.runtime.errors import InvalidArgument
from services.runtime.interceptors import Context
from services.runtime.pagination import PageTokens
from services.runtime.protos import timestamp
from services.user import metrics
from services.user.domain.accounts import Accounts, ProfileUpdate, Registration
from services.user.domain.model import Role, Session, User, UserCursor
from wallet.user.v1 import user_service_pb2 as pb
from wallet.user.v1 import user_service_pb2_grpc

_ROLES = {Role.USER: pb.ROLE_USER, Role.ADMIN: pb.ROLE_ADMIN}


def user_message(user: User) -> pb.User:
    return pb.User(
        user_id=user.id,
        email=user.email,
        display_name=user.display_name,
        phone=user.phone or "",
        roles=sorted(_ROLES[role] for role in user.roles),
        create_time=timestamp(user.created_at),
        update_time=timestamp(user.updated_at),
    )


class UserApi(user_service_pb2_grpc.UserServiceServicer):
    def __init__(
        self, accounts: Accounts, jwks: list[dict[str, str]], page_tokens: PageTokens
    ) -> None:
        self._accounts = accounts
        self._page_tokens = page_tokens
        self._jwks = pb.GetJwksResponse(keys=[pb.JsonWebKey(**key) for key in jwks])

    async def CreateUser(
        self, request: pb.CreateUserRequest, context: Context
    ) -> pb.CreateUserResponse:
        with metrics.REGISTRATIONS.counting():
            user = await self._accounts.register(
                Registration(request.email, request.password, request.display_name, request.phone)
            )
        return pb.CreateUserResponse(user=user_message(user))

    async def GetUser(self, request: pb.GetUserRequest, context: Context) -> pb.GetUserResponse:
        user = await self._accounts.get(current_caller(), request.user_id)
        return pb.GetUserResponse(user=user_message(user))

    async def LookupUser(
        self, request: pb.LookupUserRequest, context: Context
    ) -> pb.LookupUserResponse:
        user = await self._accounts.lookup(current_caller(), request.email, request.user_id)
        return pb.LookupUserResponse(
            profile=pb.PublicProfile(user_id=user.id, display_name=user.display_name)
        )

    async def ListUsers(
        self, request: pb.ListUsersRequest, context: Context
    ) -> pb.ListUsersResponse:
        caller = current_caller()
        after = self._page_tokens.decode(request.page_token, request, caller.user_id)
        users, next_cursor = await self._accounts.list(
            caller, request.page_size, UserCursor(*after) if after else None
        )
        last = (next_cursor.created_at, next_cursor.user_id) if next_cursor else None
        return pb.ListUsersResponse(
            users=[user_message(user) for user in users],
            next_page_token=self._page_tokens.encode(last, request, caller.user_id),
        )

    async def UpdateUser(
        self, request: pb.UpdateUserRequest, context: Context
    ) -> pb.UpdateUserResponse:
        if not request.HasField("user"):
            raise InvalidArgument.single("user", "is required")
        user = await self._accounts.update(
            current_caller(),
            ProfileUpdate(
                user_id=request.user.user_id,
                email=request.user.email,
                display_name=request.user.display_name,
                phone=request.user.phone,
                fields=frozenset(request.update_mask.paths),
            ),
        )
        return pb.UpdateUserResponse(user=user_message(user))

    async def Login(self, request: pb.LoginRequest, context: Context) -> pb.LoginResponse:
        with metrics.LOGINS.counting():
            session = await self._accounts.login(request.email, request.password)
        return _session_message(pb.LoginResponse, session)

    async def RefreshToken(
        self, request: pb.RefreshTokenRequest, context: Context
    ) -> pb.RefreshTokenResponse:
        session = await self._accounts.refresh(request.refresh_token)
        return _session_message(pb.RefreshTokenResponse, session)

    async def Logout(self, request: pb.LogoutRequest, context: Context) -> pb.LogoutResponse:
        await self._accounts.logout(current_caller(), request.refresh_token)
        return pb.LogoutResponse()

    async def LogoutEverywhere(
        self, request: pb.LogoutEverywhereRequest, context: Context
    ) -> pb.LogoutEverywhereResponse:
        await self._accounts.logout_everywhere(current_caller())
        return pb.LogoutEverywhereResponse()

    async def GetJwks(self, request: pb.GetJwksRequest, context: Context) -> pb.GetJwksResponse:
        return self._jwks


SessionMessage = TypeVar("SessionMessage", pb.LoginResponse, pb.RefreshTokenResponse)


def _session_message(message_type: type[SessionMessage], session: Session) -> SessionMessage:
    return message_type(
        access_token=session.access_token,
        token_type="Bearer",  # noqa: S106 (the OAuth token type, not a secret)
        expires_in=session.access_expires_in,
        refresh_token=session.refresh_token,
        refresh_token_expires_in=session.refresh_expires_in,
        user_id=session.user_id,
    )
