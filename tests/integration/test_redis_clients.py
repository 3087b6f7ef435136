"""Every Redis client of the mesh (create_redis) across a Redis restart, on a real Redis:
the first commands on connections pooled before the restart succeed, for the cache,
the revocation list and the rate-limit buckets alike (no error, no fallback)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis

from services.localmesh.redis import RedisServer
from services.ratelimit.buckets import TokenBuckets
from services.ratelimit.limits import parse_limits
from services.runtime.auth import Caller, RevokedTokens
from services.runtime.cache import JsonCache, create_redis

POOLED = 4  # connections pooled before the restart, all used at once after it
MONEY = parse_limits(
    """
    domain: wallet
    classes:
      money: {key: user, requests: 1, per: minute, burst: 10, failure_mode: closed}
    """
).classes["money"]


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = create_redis(redis_server.url)
    yield client
    await client.aclose()


def admin(redis_server: RedisServer) -> Redis:
    """A client of the test's own, to set up and inspect what the client under test sees."""
    return create_redis(redis_server.url)


async def pool_connections(client: Redis, marker: str) -> None:
    """Leaves POOLED idle connections in the client's pool: as many commands at once,
    each blocking briefly, so that each needs a connection of its own."""
    await asyncio.gather(*(client.blpop([marker], 0.05) for _ in range(POOLED)))


async def pooled_on_server(redis_server: RedisServer) -> int:
    """Connections whose last command was the BLPOP of pool_connections."""
    inspector = admin(redis_server)
    try:
        return sum(1 for entry in await inspector.client_list() if entry.get("cmd") == "blpop")
    finally:
        await inspector.aclose()


def restart(redis_server: RedisServer) -> None:
    redis_server.stop()
    redis_server.start()


UseAfterRestart = Callable[[Redis, RedisServer], Awaitable[None]]


async def cache_reads_hit(client: Redis, redis_server: RedisServer) -> None:
    namespace = f"it-{uuid.uuid4().hex[:8]}"
    cache = JsonCache(client, namespace, ttl_seconds=60)
    setup = admin(redis_server)
    try:
        for index in range(POOLED):
            await setup.set(f"{namespace}:{index}", json.dumps({"n": index}))
    finally:
        await setup.aclose()
    found = await asyncio.gather(*(cache.get(str(index)) for index in range(POOLED)))
    assert found == [{"n": index} for index in range(POOLED)]
    assert (cache.stats.errors, cache.stats.bypassed, cache.stats.hits) == (0, 0, POOLED)


def _caller(token_id: str) -> Caller:
    return Caller(
        user_id=str(uuid.uuid4()),
        roles=frozenset(),
        token_id=token_id,
        token_expires_at=int(time.time()) + 60,
        token_issued_at=int(time.time()),
    )


async def revocation_is_checked(client: Redis, redis_server: RedisServer) -> None:
    revoked = RevokedTokens(client)
    token_id = str(uuid.uuid4())
    setup = admin(redis_server)
    try:
        await setup.set(f"auth:revoked-jti:{token_id}", b"1", ex=60)
    finally:
        await setup.aclose()
    # True from Redis, not the fail-open False of an unreachable revocation list.
    assert (
        await asyncio.gather(*(revoked.is_revoked(_caller(token_id)) for _ in range(POOLED)))
        == [True] * POOLED
    )


async def revoking_succeeds(client: Redis, redis_server: RedisServer) -> None:
    revoked = RevokedTokens(client)
    expires_at = int(time.time()) + 60
    token_ids = [str(uuid.uuid4()) for _ in range(POOLED)]
    # Raises Unavailable ("could not revoke") if a command fails.
    await asyncio.gather(*(revoked.revoke(token_id, expires_at) for token_id in token_ids))
    assert all([await revoked.is_revoked(_caller(token_id)) for token_id in token_ids])


async def buckets_decide(client: Redis, redis_server: RedisServer) -> None:
    buckets = TokenBuckets(client, prefix=f"rl:it-{uuid.uuid4().hex[:8]}")
    user = f"user-{uuid.uuid4()}"
    # Raises Unavailable if a command fails; the script is loaded again after the restart.
    decisions = await asyncio.gather(*(buckets.take(MONEY, user, 1) for _ in range(POOLED)))
    assert all(decision.allowed for decision in decisions)
    assert sorted(decision.remaining for decision in decisions) == list(
        range(MONEY.burst - POOLED, MONEY.burst)
    )


@pytest.mark.parametrize(
    "use",
    [cache_reads_hit, revocation_is_checked, revoking_succeeds, buckets_decide],
    ids=["cache", "revocation-check", "revoke", "token-buckets"],
)
async def test_first_calls_after_a_restart_succeed_on_pooled_connections(
    client: Redis,
    redis_server: RedisServer,
    use: UseAfterRestart,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await pool_connections(client, f"nothing-{uuid.uuid4()}")
    assert await pooled_on_server(redis_server) == POOLED
    restart(redis_server)
    with caplog.at_level(logging.WARNING):
        await use(client, redis_server)
    # No fallback was taken ("cache unavailable", "revocation list unreachable").
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_hung_redis_costs_the_revocation_check_one_timeout_per_cooldown(
    client: Redis, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis paused (SIGSTOP): the first check waits for its timeout and fails open;
    the checks after it, within the cooldown, do not ask Redis at all (one asking
    would time out and log again); after the cooldown Redis is asked again."""
    now = [1_000.0]
    revoked = RevokedTokens(client, cooldown=1.0, clock=lambda: now[0])
    token_id = str(uuid.uuid4())
    await revoked.revoke(token_id, int(time.time()) + 60)
    assert await revoked.is_revoked(_caller(token_id))
    pid = redis_server.pid
    assert pid is not None
    caplog.set_level(logging.WARNING, logger="services.runtime.auth")
    os.kill(pid, signal.SIGSTOP)
    try:
        checks = [await revoked.is_revoked(_caller(token_id)) for _ in range(10)]
    finally:
        os.kill(pid, signal.SIGCONT)
    assert checks == [False] * 10  # fail open, as documented
    unreachable = [r for r in caplog.records if "revocation list unreachable" in r.message]
    assert len(unreachable) == 1
    assert revoked.unchecked == 9
    # Within the cooldown, still unchecked even though Redis answers again.
    assert not await revoked.is_revoked(_caller(token_id))
    now[0] += 1.0
    assert await revoked.is_revoked(_caller(token_id))
