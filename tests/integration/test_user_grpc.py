"""The user service over real gRPC, on real PostgreSQL and Redis (in-process
server, no Envoy): statuses, details, tokens, cache and degraded modes."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import grpc
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis import Redis

from services.localmesh.redis import RedisServer
from services.runtime import server as runtime_server
from services.user.server import UserSettings, build_app
from tests.field_violations import grpc_violations as field_violations
from tests.integration.user_calls import PASSWORD, RunningUserService, bearer, expect_error
from wallet.user.v1 import user_service_pb2 as pb
from wallet.user.v1 import user_service_pb2_grpc

if TYPE_CHECKING:
    # Only in the generated .pyi: stubs made on a grpc.aio channel.
    Stub = user_service_pb2_grpc.UserServiceAsyncStub


async def register_and_login(stub: Stub, email: str = "ada@example.com") -> pb.LoginResponse:
    await stub.CreateUser(pb.CreateUserRequest(email=email, password=PASSWORD, display_name="Ada"))
    return await stub.Login(pb.LoginRequest(email=email, password=PASSWORD))


async def test_session_lifecycle(user_stub: Stub) -> None:
    login = await register_and_login(user_stub)
    assert login.token_type == "Bearer"
    assert login.expires_in == 900
    me = await user_stub.GetUser(
        pb.GetUserRequest(user_id="me"), metadata=bearer(login.access_token)
    )
    assert me.user.email == "ada@example.com"
    assert list(me.user.roles) == [pb.ROLE_USER]

    refreshed = await user_stub.RefreshToken(
        pb.RefreshTokenRequest(refresh_token=login.refresh_token)
    )
    assert refreshed.refresh_token != login.refresh_token
    reuse = await expect_error(
        user_stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=login.refresh_token)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert "already used" in (reuse.details() or "")
    # Reuse revoked the family: the successor is dead too.
    await expect_error(
        user_stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=refreshed.refresh_token)),
        grpc.StatusCode.UNAUTHENTICATED,
    )

    second = await user_stub.Login(pb.LoginRequest(email="ADA@example.com", password=PASSWORD))
    await user_stub.Logout(
        pb.LogoutRequest(refresh_token=second.refresh_token), metadata=bearer(second.access_token)
    )
    await expect_error(
        user_stub.GetUser(pb.GetUserRequest(user_id="me"), metadata=bearer(second.access_token)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    await expect_error(
        user_stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=second.refresh_token)),
        grpc.StatusCode.UNAUTHENTICATED,
    )


async def test_bad_registration_names_every_field_and_writes_nothing(user_stub: Stub) -> None:
    error = await expect_error(
        user_stub.CreateUser(pb.CreateUserRequest(email="nope", password="short")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(field_violations(error)) == {"email", "password", "display_name"}
    await expect_error(
        user_stub.Login(pb.LoginRequest(email="nope", password="short")),
        grpc.StatusCode.UNAUTHENTICATED,
    )


async def test_duplicate_email_is_already_exists(user_stub: Stub) -> None:
    await register_and_login(user_stub)
    await expect_error(
        user_stub.CreateUser(
            pb.CreateUserRequest(email="ADA@EXAMPLE.com", password=PASSWORD, display_name="Eve")
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )


async def test_missing_and_garbage_tokens(user_stub: Stub) -> None:
    await expect_error(
        user_stub.GetUser(pb.GetUserRequest(user_id="me")), grpc.StatusCode.UNAUTHENTICATED
    )
    await expect_error(
        user_stub.GetUser(pb.GetUserRequest(user_id="me"), metadata=bearer("garbage")),
        grpc.StatusCode.UNAUTHENTICATED,
    )


async def test_profile_cache_is_filled_and_invalidated_before_the_answer(
    user_stub: Stub, redis_server: RedisServer
) -> None:
    login = await register_and_login(user_stub)
    auth = bearer(login.access_token)
    redis = Redis.from_url(redis_server.url)
    generation = f"user:gen:profile:v1:{login.user_id}"
    before = int(redis.get(generation) or 0)
    await user_stub.GetUser(pb.GetUserRequest(user_id="me"), metadata=auth)
    assert redis.exists(f"user:profile:v2:{login.user_id}:{before}")
    await user_stub.UpdateUser(
        pb.UpdateUserRequest(
            user=pb.User(user_id="me", display_name="Ada Lovelace"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        metadata=auth,
    )
    # Bumped before the answer: the entry read before the change is no one's any more.
    assert int(redis.get(generation) or 0) == before + 1
    me = await user_stub.GetUser(pb.GetUserRequest(user_id="me"), metadata=auth)
    assert me.user.display_name == "Ada Lovelace"
    assert redis.exists(f"user:profile:v2:{login.user_id}:{before + 1}")
    redis.close()


async def test_redis_down_reads_and_logins_work_logout_says_unavailable(
    user_stub: Stub, user_service: RunningUserService, redis_server: RedisServer
) -> None:
    login = await register_and_login(user_stub)
    auth = bearer(login.access_token)
    redis_server.stop()
    try:
        me = await user_stub.GetUser(pb.GetUserRequest(user_id="me"), metadata=auth)
        assert me.user.user_id == login.user_id
        again = await user_stub.Login(pb.LoginRequest(email="ada@example.com", password=PASSWORD))
        assert again.access_token
        await expect_error(
            user_stub.Logout(pb.LogoutRequest(), metadata=auth), grpc.StatusCode.UNAVAILABLE
        )
        stats = user_service.accounts._profiles.cache.stats  # type: ignore[attr-defined]
        assert stats.errors >= 1
    finally:
        redis_server.start()
    await user_stub.Logout(pb.LogoutRequest(), metadata=auth)
    await expect_error(
        user_stub.GetUser(pb.GetUserRequest(user_id="me"), metadata=auth),
        grpc.StatusCode.UNAUTHENTICATED,
    )


async def test_health_follows_the_database(
    user_service: RunningUserService, user_settings: UserSettings
) -> None:
    async with grpc.aio.insecure_channel(user_service.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service="wallet.user.v1.UserService"))
        async for update in watch:
            if update.status == health_pb2.HealthCheckResponse.SERVING:
                break
        watch.cancel()

    broken = replace(
        user_settings,
        runtime=replace(
            user_settings.runtime,
            database_url="postgresql+psycopg://wallet:x@127.0.0.1:1/none",
        ),
    )
    app, _ = build_app(broken)
    running = await runtime_server.start(app, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            response = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING
            # Public RPCs answer even so: a fault, retryable (never INTERNAL), and
            # the database error is not leaked.
            error = await expect_error(
                user_service_pb2_grpc.UserServiceStub(channel).Login(
                    pb.LoginRequest(email="a@example.com", password="x" * 12)
                ),
                grpc.StatusCode.UNAVAILABLE,
            )
            assert error.details() == "the database is unavailable right now; retry shortly"
    finally:
        await running.stop(grace=0)
        for close in app.on_shutdown:
            await close()
