"""Per-account login limits and log out everywhere, over real gRPC on real
PostgreSQL and Redis (in-process user service, no Envoy)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from redis import Redis

from services.localmesh.redis import RedisServer
from services.runtime import server as runtime_server
from services.user.adapters.login_throttle import KEY_PREFIX
from services.user.server import UserSettings, build_app
from tests.eventually import eventually_async
from tests.integration.user_calls import PASSWORD, bearer, expect_error
from wallet.user.v1 import user_service_pb2 as pb
from wallet.user.v1 import user_service_pb2_grpc

if TYPE_CHECKING:
    # Only in the generated .pyi: stubs made on a grpc.aio channel.
    Stub = user_service_pb2_grpc.UserServiceAsyncStub
BURST = 3
# A try comes back a minute after it was taken: however slow the machine, a test's
# few argon2 checks never see one come back (tests/e2e checks the defaults).
REFILL_SECONDS = 60
# The bucket of the refill test: a try back every 2 s.
QUICK_REFILL_SECONDS = 2
WRONG = "wrong password 1"


@asynccontextmanager
async def start_service(user_settings: UserSettings, refill_seconds: int) -> AsyncIterator[Stub]:
    settings = replace(
        user_settings, login_failure_burst=BURST, login_failure_refill_seconds=refill_seconds
    )
    app, _ = build_app(settings)
    running = await runtime_server.start(app, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield user_service_pb2_grpc.UserServiceStub(channel)
    finally:
        await running.stop(grace=1)
        for close in app.on_shutdown:
            await close()


@pytest.fixture
async def stub(user_settings: UserSettings) -> AsyncIterator[Stub]:
    """A user service with a small bucket of failed logins that refills slowly."""
    async with start_service(user_settings, REFILL_SECONDS) as started:
        yield started


@pytest.fixture
async def quick_stub(user_settings: UserSettings) -> AsyncIterator[Stub]:
    """The same with a bucket that refills quickly."""
    async with start_service(user_settings, QUICK_REFILL_SECONDS) as started:
        yield started


def fresh_email(prefix: str) -> str:
    # Buckets live in the session's Redis across tests: each test its own emails.
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"


async def register(stub: Stub, email: str) -> None:
    await stub.CreateUser(pb.CreateUserRequest(email=email, password=PASSWORD, display_name="A"))


async def login(stub: Stub, email: str, password: str = PASSWORD) -> pb.LoginResponse:
    return await stub.Login(pb.LoginRequest(email=email, password=password))


def refusal(error: grpc.aio.AioRpcError) -> tuple[str, list[str], int]:
    """(message, ErrorInfo reasons, RetryInfo delay in seconds)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    reasons, delays = [], []
    for detail in status.details:
        info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            reasons.append(info.reason)
        elif detail.Unpack(retry):
            delays.append(retry.retry_delay.seconds)
    assert len(delays) == 1, status
    return status.message, reasons, delays[0]


async def eventually_logs_in(stub: Stub, email: str) -> pb.LoginResponse:
    """Logs in as soon as the bucket gives a try back; refused until then."""
    answers: list[pb.LoginResponse] = []

    async def logged_in() -> bool:
        try:
            answers.append(await login(stub, email))
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            return False
        return True

    await eventually_async(logged_in, "the owner to be let in again", 10 * QUICK_REFILL_SECONDS)
    return answers[-1]


# --- the per-account limit -------------------------------------------------------


async def test_failures_from_anywhere_reach_the_limit_the_same_for_any_email(stub: Stub) -> None:
    owner, stranger = fresh_email("owner"), fresh_email("nobody")
    await register(stub, owner)
    for _ in range(BURST):
        for email in (owner, stranger):
            await expect_error(login(stub, email, WRONG), grpc.StatusCode.UNAUTHENTICATED)
    # Over the limit even the right password is not looked at.
    registered = await expect_error(login(stub, owner), grpc.StatusCode.RESOURCE_EXHAUSTED)
    unknown = await expect_error(login(stub, stranger, WRONG), grpc.StatusCode.RESOURCE_EXHAUSTED)
    message, reasons, delay = refusal(registered)
    assert (message, reasons) == refusal(unknown)[:2]
    assert reasons == ["LOGIN_THROTTLED"]
    assert REFILL_SECONDS / 2 <= delay <= REFILL_SECONDS
    # Another spelling of the email is the same account.
    await expect_error(login(stub, f"  {owner.upper()} "), grpc.StatusCode.RESOURCE_EXHAUSTED)


async def test_the_owner_gets_in_again_once_a_try_is_back(quick_stub: Stub) -> None:
    owner = fresh_email("owner")
    await register(quick_stub, owner)
    # Guess until refused (a busy machine may give a try back meanwhile).
    for _ in range(3 * BURST):
        try:
            await login(quick_stub, owner, WRONG)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                break
    else:
        pytest.fail("the guesses were never refused")
    assert (await eventually_logs_in(quick_stub, owner)).access_token


async def test_successes_take_nothing_from_the_bucket(stub: Stub) -> None:
    owner = fresh_email("owner")
    await register(stub, owner)
    for _ in range(BURST - 1):
        await expect_error(login(stub, owner, WRONG), grpc.StatusCode.UNAUTHENTICATED)
    for _ in range(2 * BURST):
        assert (await login(stub, owner)).access_token


async def test_concurrent_guesses_get_no_more_than_the_burst(stub: Stub) -> None:
    owner = fresh_email("owner")
    await register(stub, owner)
    results = await asyncio.gather(
        *(login(stub, owner, f"{WRONG}{i}") for i in range(4 * BURST)), return_exceptions=True
    )
    codes = [r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(codes) == len(results)
    assert codes.count(grpc.StatusCode.UNAUTHENTICATED) == BURST
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == len(codes) - BURST


async def test_buckets_are_named_by_a_keyed_hash_never_the_email(
    stub: Stub, redis_server: RedisServer
) -> None:
    email = fresh_email("private")
    await expect_error(login(stub, email, WRONG), grpc.StatusCode.UNAUTHENTICATED)
    redis = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        keys = list(redis.scan_iter(f"{KEY_PREFIX}:*"))
        assert keys
        local_part = email.split("@")[0]
        assert not [key for key in keys if local_part in key or "example" in key]
    finally:
        redis.close()


async def test_redis_down_logins_are_not_limited(stub: Stub, redis_server: RedisServer) -> None:
    owner = fresh_email("owner")
    await register(stub, owner)
    redis_server.stop()
    try:
        for _ in range(BURST + 2):
            await expect_error(login(stub, owner, WRONG), grpc.StatusCode.UNAUTHENTICATED)
        assert (await login(stub, owner)).access_token
    finally:
        redis_server.start()


# --- log out everywhere --------------------------------------------------------------


async def access_refused(stub: Stub, token: str) -> None:
    error = await expect_error(
        stub.GetUser(pb.GetUserRequest(user_id="me"), metadata=bearer(token)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert "revoked" in (error.details() or "")


async def test_logout_everywhere_ends_every_session_of_the_caller_only(stub: Stub) -> None:
    ada, bob = fresh_email("ada"), fresh_email("bob")
    await register(stub, ada)
    await register(stub, bob)
    phone, laptop = await login(stub, ada), await login(stub, ada)
    rotated = await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=laptop.refresh_token))
    bobs = await login(stub, bob)

    await stub.LogoutEverywhere(pb.LogoutEverywhereRequest(), metadata=bearer(phone.access_token))

    for token in (phone.access_token, laptop.access_token, rotated.access_token):
        await access_refused(stub, token)
    for refresh_token in (phone.refresh_token, rotated.refresh_token):
        await expect_error(
            stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=refresh_token)),
            grpc.StatusCode.UNAUTHENTICATED,
        )
    # A login right after works at once, and so does its refresh.
    again = await login(stub, ada)
    me = await stub.GetUser(pb.GetUserRequest(user_id="me"), metadata=bearer(again.access_token))
    assert me.user.email == ada
    renewed = await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=again.refresh_token))
    await stub.GetUser(pb.GetUserRequest(user_id="me"), metadata=bearer(renewed.access_token))
    # Bob's session is untouched.
    await stub.GetUser(pb.GetUserRequest(user_id="me"), metadata=bearer(bobs.access_token))
    await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=bobs.refresh_token))


async def test_no_refresh_racing_logout_everywhere_survives_it(stub: Stub) -> None:
    ada = fresh_email("ada")
    await register(stub, ada)
    sessions = [await login(stub, ada) for _ in range(6)]
    refreshes = [
        stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=s.refresh_token)) for s in sessions
    ]
    logout = stub.LogoutEverywhere(
        pb.LogoutEverywhereRequest(), metadata=bearer(sessions[0].access_token)
    )
    results = await asyncio.gather(logout, *refreshes, return_exceptions=True)
    assert not isinstance(results[0], BaseException), results[0]
    # Whichever refreshes won the race, nothing they handed out still works.
    for result in results[1:]:
        if isinstance(result, BaseException):
            assert isinstance(result, grpc.aio.AioRpcError)
            assert result.code() == grpc.StatusCode.UNAUTHENTICATED
            continue
        assert isinstance(result, pb.RefreshTokenResponse)
        await access_refused(stub, result.access_token)
        await expect_error(
            stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=result.refresh_token)),
            grpc.StatusCode.UNAUTHENTICATED,
        )


async def test_logout_everywhere_needs_a_token_and_says_unavailable_without_redis(
    stub: Stub, redis_server: RedisServer
) -> None:
    await expect_error(
        stub.LogoutEverywhere(pb.LogoutEverywhereRequest()), grpc.StatusCode.UNAUTHENTICATED
    )
    ada = fresh_email("ada")
    await register(stub, ada)
    session = await login(stub, ada)
    redis_server.stop()
    try:
        await expect_error(
            stub.LogoutEverywhere(
                pb.LogoutEverywhereRequest(), metadata=bearer(session.access_token)
            ),
            grpc.StatusCode.UNAVAILABLE,
        )
    finally:
        redis_server.start()
    # Asked again once Redis is back, it is done.
    await stub.LogoutEverywhere(pb.LogoutEverywhereRequest(), metadata=bearer(session.access_token))
    await access_refused(stub, session.access_token)
