"""The rate-limit service on a real Redis: the token bucket itself, then Envoy's
ShouldRateLimit over real gRPC (in-process servers, no Envoy): shared buckets across
instances, the response fields Envoy turns into headers, and Redis outages (stopped,
hung): decisions from each instance's fair share meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2  # type: ignore[import-untyped]
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from services.localmesh.redis import RedisServer
from services.ratelimit.buckets import Mode, TokenBuckets
from services.ratelimit.fair_share import FairShareBuckets
from services.ratelimit.limiter import Limiter
from services.ratelimit.limits import Limits, parse_limits
from services.ratelimit.server import (
    DEFAULT_LIMITS_FILE,
    SERVICE_NAME,
    RateLimitSettings,
    build_app,
)
from services.runtime import server as runtime_server
from services.runtime.cache import create_redis
from tests.eventually import eventually_async

# Small numbers, so that tests exhaust buckets quickly; `money` refills so slowly
# (1 a minute) that no token comes back during a test.
LIMITS: Limits = parse_limits(
    """
    domain: wallet
    classes:
      default:   {key: user,           requests: 20, per: second, burst: 5,  failure_mode: open}
      money:     {key: user,           requests: 1,  per: minute, burst: 3,  failure_mode: closed}
      anonymous: {key: remote_address, requests: 10, per: minute, burst: 10, failure_mode: open}
    """
)
Response = rls_pb2.RateLimitResponse
Stub = Any  # rls_pb2_grpc.RateLimitServiceStub; xds-protos has no type information
DEADLINE = 5.0  # seconds for anything polled


def new_user() -> str:
    """A fresh bucket for every test: buckets outlive tests in the shared Redis."""
    return f"user-{uuid.uuid4()}"


def new_address() -> str:
    return f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"


def descriptor(*entries: tuple[str, str]) -> ratelimit_pb2.RateLimitDescriptor:
    return ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries]
    )


def request(
    *descriptors: ratelimit_pb2.RateLimitDescriptor, domain: str = "wallet", hits: int = 0
) -> rls_pb2.RateLimitRequest:
    return rls_pb2.RateLimitRequest(domain=domain, descriptors=descriptors, hits_addend=hits)


def user_call(class_name: str, user: str, hits: int = 0) -> rls_pb2.RateLimitRequest:
    """What Envoy sends for an authenticated call."""
    return request(descriptor(("class", class_name), ("user", user)), hits=hits)


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = create_redis(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
def settings(redis_server: RedisServer) -> RateLimitSettings:
    return RateLimitSettings(
        instance_id="ratelimit-it",
        grpc_address="127.0.0.1:0",
        redis_url=redis_server.url,
        limits_file=DEFAULT_LIMITS_FILE,  # not read: the tests pass LIMITS
    )


@contextlib.asynccontextmanager
async def running_service(
    settings: RateLimitSettings, *, probe_interval: float = 2.0
) -> AsyncIterator[str]:
    """One instance, as `python -m services.ratelimit serve` runs it; yields its target."""
    app = build_app(settings, LIMITS)
    running = await runtime_server.start(app, settings.grpc_address, probe_interval=probe_interval)
    try:
        yield f"127.0.0.1:{running.port}"
    finally:
        await running.stop(grace=0)
        for close in app.on_shutdown:
            await close()


@contextlib.asynccontextmanager
async def connected(target: str) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(target) as channel:
        yield rls_pb2_grpc.RateLimitServiceStub(channel)


@pytest.fixture
async def stub(settings: RateLimitSettings) -> AsyncIterator[Stub]:
    async with running_service(settings) as target, connected(target) as rls:
        yield rls


# --- the bucket -------------------------------------------------------------------------


async def test_bucket_allows_exactly_burst_then_refuses(redis: Redis) -> None:
    buckets, money, user = TokenBuckets(redis), LIMITS.classes["money"], new_user()
    decisions = [await buckets.take(money, user, 1) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0, 0]
    # Empty at 1 token a minute: about 3 minutes until full again.
    assert 170 < decisions[-1].until_full <= 180
    # One hash per (class, key value), expiring about twice the refill time after use.
    key = f"rl:v1:money:{user}"
    assert set(await redis.hkeys(key)) == {b"tokens", b"ts"}
    assert 300_000 < await redis.pttl(key) <= 360_000


async def test_hits_take_several_tokens_and_a_refusal_takes_none(redis: Redis) -> None:
    buckets, money, user = TokenBuckets(redis), LIMITS.classes["money"], new_user()
    assert (await buckets.take(money, user, 2)).remaining == 1
    refused = await buckets.take(money, user, 2)
    assert (refused.allowed, refused.remaining) == (False, 1)
    assert (await buckets.take(money, user, 1)).allowed
    assert not (await buckets.take(LIMITS.classes["money"], new_user(), 4)).allowed  # > burst


async def test_bucket_refills_at_the_configured_rate(redis: Redis) -> None:
    buckets, default, user = TokenBuckets(redis), LIMITS.classes["default"], new_user()
    while (await buckets.take(default, user, 1)).allowed:  # burst 5, refilling at 20/s
        pass
    allowed, start = 0, time.monotonic()
    while time.monotonic() - start < 0.5:
        allowed += (await buckets.take(default, user, 1)).allowed
        await asyncio.sleep(0.005)  # pacing, not synchronisation
    expected = default.rate_per_second * (time.monotonic() - start)
    assert 0.5 * expected <= allowed <= 1.5 * expected, (allowed, expected)


# --- ShouldRateLimit over gRPC ----------------------------------------------------------


async def test_over_limit_answer_carries_what_envoy_needs_for_headers(stub: Stub) -> None:
    user = new_user()
    first = await stub.ShouldRateLimit(user_call("money", user))
    assert first.overall_code == Response.OK
    (status,) = first.statuses
    assert status.code == Response.OK
    assert status.current_limit.requests_per_unit == 1
    assert status.current_limit.unit == Response.RateLimit.MINUTE
    assert status.limit_remaining == 2
    assert status.duration_until_reset.seconds == 60  # one token short, at 1 a minute
    for _ in range(2):
        await stub.ShouldRateLimit(user_call("money", user))

    refused = await stub.ShouldRateLimit(user_call("money", user))
    assert refused.overall_code == Response.OVER_LIMIT
    (status,) = refused.statuses
    assert status.code == Response.OVER_LIMIT
    assert status.limit_remaining == 0
    assert 170 < status.duration_until_reset.ToTimedelta().total_seconds() <= 180
    assert (status.current_limit.requests_per_unit, status.current_limit.unit) == (
        1,
        Response.RateLimit.MINUTE,
    )


async def test_anonymous_calls_are_limited_per_address_with_hits_addend(stub: Stub) -> None:
    # IPv6 has ':' in it, like the bucket key's separator.
    address = descriptor(("class", "anonymous"), ("remote_address", new_address()))
    first = (await stub.ShouldRateLimit(request(address, hits=0))).statuses[0]
    assert first.limit_remaining == 9  # 0 means 1
    assert (first.current_limit.requests_per_unit, first.current_limit.unit) == (
        10,
        Response.RateLimit.MINUTE,
    )
    assert (await stub.ShouldRateLimit(request(address, hits=3))).statuses[0].limit_remaining == 6
    other = descriptor(("class", "anonymous"), ("remote_address", new_address()))
    assert (await stub.ShouldRateLimit(request(other))).statuses[0].limit_remaining == 9


async def test_users_and_classes_have_independent_buckets(stub: Stub) -> None:
    alice, bob = new_user(), new_user()
    answers = [await stub.ShouldRateLimit(user_call("money", alice)) for _ in range(4)]
    assert answers[-1].overall_code == Response.OVER_LIMIT
    bobs = await stub.ShouldRateLimit(user_call("money", bob))
    assert (bobs.overall_code, bobs.statuses[0].limit_remaining) == (Response.OK, 2)
    # The same user in another class draws from another bucket.
    other = await stub.ShouldRateLimit(user_call("default", alice))
    assert (other.overall_code, other.statuses[0].limit_remaining) == (Response.OK, 4)


async def test_two_instances_share_one_bucket(settings: RateLimitSettings) -> None:
    user = new_user()
    async with (
        running_service(settings) as first,
        running_service(settings) as second,
        connected(first) as one,
        connected(second) as two,
    ):
        codes = [
            (await stub.ShouldRateLimit(user_call("money", user))).overall_code
            for stub in (one, two, one, two, one)
        ]
    assert codes == [Response.OK] * 3 + [Response.OVER_LIMIT] * 2


async def test_descriptors_that_are_not_ours_are_answered_ok(
    stub: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    unknown = descriptor(("class", "no-such-class"), ("user", new_user()))
    missing_entry = descriptor(("class", "money"), ("remote_address", "192.0.2.1"))
    user_descriptor = descriptor(("class", "money"), ("user", new_user()))
    for _ in range(3):
        with caplog.at_level(logging.WARNING, logger="services.ratelimit"):
            answers = [
                await stub.ShouldRateLimit(request(unknown)),
                await stub.ShouldRateLimit(request(missing_entry)),
                await stub.ShouldRateLimit(request(user_descriptor, domain="other")),
            ]
        for answer in answers:
            assert answer.overall_code == Response.OK
            (status,) = answer.statuses
            assert status.code == Response.OK
            assert not status.HasField("current_limit")  # no X-RateLimit-* headers from it
    reasons = [r.__dict__["reason"] for r in caplog.records if r.name == "services.ratelimit.api"]
    assert sorted(reasons) == sorted(
        [
            "unknown class 'no-such-class'",
            "class 'money': descriptor has no 'user' entry",
            "domain 'other' is not 'wallet'",
        ]
    ), "each reason is logged once"


async def test_one_descriptor_over_limit_makes_the_whole_answer_over_limit(stub: Stub) -> None:
    user = new_user()
    for _ in range(3):
        await stub.ShouldRateLimit(user_call("money", user))
    answer = await stub.ShouldRateLimit(
        request(
            descriptor(("class", "no-such-class"), ("user", user)),
            descriptor(("class", "money"), ("user", user)),
        )
    )
    assert answer.overall_code == Response.OVER_LIMIT
    assert [s.code for s in answer.statuses] == [Response.OK, Response.OVER_LIMIT]


# --- Redis outages: degraded mode -------------------------------------------------------
# While Redis does not answer, each instance decides from its own fair share of every
# limit (rate and burst ÷ RATELIMIT_INSTANCES); these tests run as one of 2 instances.

INSTANCES = 2
LIMITER_LOG = "services.ratelimit.limiter"
OUTAGE_STARTS = "rate-limit store unavailable: deciding from this instance's fair share"
OUTAGE_ENDS = "rate-limit store answers again: back to the shared buckets"
ENVOY_TIMEOUT = 0.5  # EdgeSettings.ratelimit.timeout_ms: Envoy gives up on the call then


def decisions(class_name: str, decision: str, mode: str) -> float:
    value = REGISTRY.get_sample_value(
        "ratelimit_decisions_total", {"class": class_name, "decision": decision, "mode": mode}
    )
    return value or 0.0


def degraded() -> float | None:
    return REGISTRY.get_sample_value("ratelimit_degraded")


def limiter_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LIMITER_LOG]


@pytest.fixture
async def one_of_two(settings: RateLimitSettings) -> AsyncIterator[Stub]:
    async with (
        running_service(dataclasses.replace(settings, instances=INSTANCES)) as target,
        connected(target) as rls,
    ):
        yield rls


@contextlib.contextmanager
def hung(redis_server: RedisServer, pid: int) -> Iterator[None]:
    """Redis frozen (SIGSTOP): connections are accepted, nothing is answered."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def test_redis_down_decides_from_the_fair_share_then_shares_again(
    one_of_two: Stub, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    stub = one_of_two
    user, address = new_user(), new_address()
    anonymous = descriptor(("class", "anonymous"), ("remote_address", address))
    assert (await stub.ShouldRateLimit(user_call("money", user))).overall_code == Response.OK
    assert degraded() == 0
    local_before = decisions("money", "ok", "local"), decisions("money", "over_limit", "local")
    caplog.set_level(logging.INFO, logger=LIMITER_LOG)
    redis_server.stop()
    try:
        # money: burst 3 → a share of 1.5 tokens; the user's shared bucket is not known here.
        codes = [
            (await stub.ShouldRateLimit(user_call("money", user), timeout=DEADLINE)).overall_code
            for _ in range(3)
        ]
        assert codes == [Response.OK, Response.OVER_LIMIT, Response.OVER_LIMIT]
        # anonymous: burst 10 → 5 per instance, then refused; the answer says what is left.
        answers = [
            await stub.ShouldRateLimit(request(anonymous), timeout=DEADLINE) for _ in range(6)
        ]
        assert [a.overall_code for a in answers] == [Response.OK] * 5 + [Response.OVER_LIMIT]
        assert [a.statuses[0].limit_remaining for a in answers] == [4, 3, 2, 1, 0, 0]
        # The limit Envoy shows stays the configured one: the instances share it.
        assert answers[0].statuses[0].current_limit.requests_per_unit == 10
        assert degraded() == 1
        assert decisions("money", "ok", "local") - local_before[0] == 1
        assert decisions("money", "over_limit", "local") - local_before[1] == 2
    finally:
        redis_server.start()
    assert limiter_messages(caplog) == [OUTAGE_STARTS], "one line per outage"

    # Redis is asked again after the cooldown: shared buckets from then on (Redis
    # restarted empty, so the user's bucket is full: 3 - 1 left, not the share's 0).
    async def shared_again() -> bool:
        answer = await stub.ShouldRateLimit(user_call("money", new_user()), timeout=DEADLINE)
        return bool(answer.statuses[0].limit_remaining == 2)

    await eventually_async(shared_again, "deciding from Redis again", DEADLINE, interval=0.05)
    assert degraded() == 0
    answer = await stub.ShouldRateLimit(user_call("money", user))
    assert (answer.overall_code, answer.statuses[0].limit_remaining) == (Response.OK, 2)
    assert limiter_messages(caplog) == [OUTAGE_STARTS, OUTAGE_ENDS]


async def test_a_failing_redis_is_reported_once_and_asked_again_after_the_cooldown(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The limiter itself, on a real Redis: every call asks Redis (no cooldown), the
    outage is logged once however many calls fail, and Redis's answer ends it."""
    client = create_redis(redis_server.url)
    limiter = Limiter(TokenBuckets(client), FairShareBuckets(INSTANCES), cooldown=0)
    anonymous, address = LIMITS.classes["anonymous"], new_address()
    caplog.set_level(logging.INFO, logger=LIMITER_LOG)
    try:
        assert (await limiter.take(anonymous, address, 1)).mode is Mode.SHARED
        redis_server.stop()
        try:
            local = [await limiter.take(anonymous, address, 1) for _ in range(6)]
        finally:
            redis_server.start()
        assert [d.mode for d in local] == [Mode.LOCAL] * 6
        assert [d.allowed for d in local] == [True] * 5 + [False]
        assert limiter.degraded
        back = await limiter.take(anonymous, address, 1)
        assert (back.mode, back.allowed, limiter.degraded) == (Mode.SHARED, True, False)
    finally:
        await client.aclose()
    assert limiter_messages(caplog) == [OUTAGE_STARTS, OUTAGE_ENDS]


async def test_redis_hanging_decides_locally_within_envoys_timeout(
    one_of_two: Stub, redis: Redis, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    stub, user = one_of_two, new_user()
    assert (await stub.ShouldRateLimit(user_call("money", user))).overall_code == Response.OK
    pid = int((await redis.info("server"))["process_id"])
    abandoned_before = cancelled_calls()
    caplog.set_level(logging.INFO)
    with hung(redis_server, pid):
        # Clients that give up before any answer: the call is abandoned, not failed.
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ShouldRateLimit(user_call("money", new_user()), timeout=0.05)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # Each answered in time (one Redis timeout, then the cooldown), from the share.
        codes = []
        for _ in range(3):
            started = time.monotonic()
            answer = await stub.ShouldRateLimit(user_call("money", user), timeout=DEADLINE)
            assert time.monotonic() - started < ENVOY_TIMEOUT
            codes.append(answer.overall_code)
        assert codes == [Response.OK, Response.OVER_LIMIT, Response.OVER_LIMIT]
        assert degraded() == 1

    async def abandoned_counted() -> bool:
        return cancelled_calls() - abandoned_before == 3

    await eventually_async(
        abandoned_counted, "abandoned calls counted CANCELLED", DEADLINE, interval=0.05
    )
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == [], "no error and no traceback for calls the client left"


def cancelled_calls() -> float:
    value = REGISTRY.get_sample_value(
        "rpc_requests_total",
        {"service": SERVICE_NAME, "method": "ShouldRateLimit", "code": "CANCELLED"},
    )
    return value or 0.0


async def test_ready_without_redis(settings: RateLimitSettings, redis_server: RedisServer) -> None:
    """Readiness is not Redis: an instance Envoy took out during a Redis outage would
    make money fail closed after all."""
    async with (
        running_service(settings, probe_interval=0.1) as target,
        grpc.aio.insecure_channel(target) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)

        async def serving() -> bool:
            answer = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
            return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

        await eventually_async(serving, "serving", DEADLINE, interval=0.05)
        redis_server.stop()
        try:
            rls = rls_pb2_grpc.RateLimitServiceStub(channel)
            await rls.ShouldRateLimit(user_call("money", new_user()), timeout=DEADLINE)
            assert degraded() == 1
            # Probed every 0.1 s: ten probes later, still serving.
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                assert await serving()
                await asyncio.sleep(0.05)
        finally:
            redis_server.start()


def test_health_service_name_is_what_envoy_asks_for() -> None:
    assert SERVICE_NAME == "envoy.service.ratelimit.v3.RateLimitService"
