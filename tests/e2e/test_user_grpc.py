"""The same flows over gRPC through the edge, with the generated stubs, and
grpcurl against the edge's server reflection."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import field_mask_pb2

from services.localmesh.mesh import Mesh
from tests.e2e.people import PASSWORD, grant_admin, unique_email
from wallet.user.v1 import user_service_pb2 as pb
from wallet.user.v1 import user_service_pb2_grpc

if TYPE_CHECKING:
    # Only in the generated .pyi: stubs made on a grpc.aio channel.
    Stub = user_service_pb2_grpc.UserServiceAsyncStub


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def signup(users: Stub, prefix: str) -> tuple[str, pb.LoginResponse]:
    email = unique_email(prefix)
    await users.CreateUser(
        pb.CreateUserRequest(email=email, password=PASSWORD, display_name=prefix)
    )
    return email, await users.Login(pb.LoginRequest(email=email, password=PASSWORD))


async def test_grpc_session_lifecycle(users: Stub) -> None:
    email, login = await signup(users, "grpc")
    auth = bearer(login.access_token)
    me = await users.GetUser(pb.GetUserRequest(user_id="me"), metadata=auth)
    assert me.user.email == email

    updated = await users.UpdateUser(
        pb.UpdateUserRequest(
            user=pb.User(user_id="me", display_name="Renamed", phone="+14155550123"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name", "phone"]),
        ),
        metadata=auth,
    )
    assert (updated.user.display_name, updated.user.phone) == ("Renamed", "+14155550123")

    rotated = await users.RefreshToken(pb.RefreshTokenRequest(refresh_token=login.refresh_token))
    with pytest.raises(grpc.aio.AioRpcError) as reuse:
        await users.RefreshToken(pb.RefreshTokenRequest(refresh_token=login.refresh_token))
    assert reuse.value.code() == grpc.StatusCode.UNAUTHENTICATED

    fresh = await users.Login(pb.LoginRequest(email=email, password=PASSWORD))
    await users.Logout(
        pb.LogoutRequest(refresh_token=fresh.refresh_token), metadata=bearer(fresh.access_token)
    )
    with pytest.raises(grpc.aio.AioRpcError) as revoked:
        await users.GetUser(pb.GetUserRequest(user_id="me"), metadata=bearer(fresh.access_token))
    assert revoked.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert rotated.access_token  # the rotated session was issued before the reuse


async def test_grpc_admin_listing_and_refusals(users: Stub, mesh: Mesh) -> None:
    email, login = await signup(users, "grpcadmin")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await users.ListUsers(pb.ListUsersRequest(page_size=5), metadata=bearer(login.access_token))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED

    grant_admin(mesh, email)
    admin = await users.RefreshToken(pb.RefreshTokenRequest(refresh_token=login.refresh_token))
    first = await users.ListUsers(
        pb.ListUsersRequest(page_size=1), metadata=bearer(admin.access_token)
    )
    assert len(first.users) == 1
    assert first.next_page_token
    second = await users.ListUsers(
        pb.ListUsersRequest(page_size=1, page_token=first.next_page_token),
        metadata=bearer(admin.access_token),
    )
    assert second.users[0].user_id != first.users[0].user_id
    with pytest.raises(grpc.aio.AioRpcError) as bad_token:
        await users.ListUsers(
            pb.ListUsersRequest(page_token="garbage!"), metadata=bearer(admin.access_token)
        )
    assert bad_token.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_grpc_without_token_is_unauthenticated_at_the_edge(users: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await users.GetUser(pb.GetUserRequest(user_id="me"))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def grpcurl(*args: str) -> str:
    binary = Path(sys.executable).with_name("grpcurl")
    result = subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_grpcurl_lists_and_calls_through_the_edge(mesh: Mesh) -> None:
    services = grpcurl("-plaintext", mesh.edge_grpc_target, "list").split()
    assert "wallet.user.v1.UserService" in services
    assert "wallet.transaction.v1.TransactionService" in services
    assert "grpc.health.v1.Health" in services
    described = grpcurl(
        "-plaintext", mesh.edge_grpc_target, "describe", "wallet.user.v1.UserService"
    )
    assert "rpc Login" in described
    jwks = grpcurl("-plaintext", mesh.edge_grpc_target, "wallet.user.v1.UserService/GetJwks")
    assert '"kty": "OKP"' in jwks
    # Reflection behind the edge describes every service, whichever instance answers.
    ledger = grpcurl(
        "-plaintext", mesh.edge_grpc_target, "describe", "wallet.transaction.v1.TransactionService"
    )
    assert "rpc CreateTransfer" in ledger
