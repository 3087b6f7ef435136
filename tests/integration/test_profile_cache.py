"""The profile cache on a real Redis: read through, and a profile read across a change
of it is never what the next reader gets (runtime/cache.py, Generations)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from services.localmesh.redis import RedisServer
from services.runtime.cache import create_redis
from services.user.adapters.profile_cache import RedisProfileCache
from services.user.domain.model import Role, User

WHEN = datetime(2026, 12, 4, tzinfo=UTC)


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = create_redis(redis_server.url)
    yield client
    await client.aclose()


def ada() -> User:
    return User(
        str(uuid.uuid4()), "ada@example.com", "Ada", None, frozenset({Role.USER}), WHEN, WHEN
    )


async def test_a_profile_is_read_once_until_it_changes(redis: Redis) -> None:
    cache = RedisProfileCache(redis, ttl_seconds=60)
    user = ada()
    reads: list[str] = []

    async def load() -> User:
        reads.append(user.id)
        return user

    assert await cache.profile(user.id, load) == user
    assert await cache.profile(user.id, load) == user
    assert len(reads) == 1
    await cache.invalidate(user.id)
    assert await cache.profile(user.id, load) == user
    assert len(reads) == 2


async def test_a_profile_read_across_a_change_is_not_kept(redis: Redis) -> None:
    cache = RedisProfileCache(redis, ttl_seconds=60)
    before = ada()
    after = dataclasses.replace(before, display_name="Ada Lovelace")

    async def read_then_the_user_changes_it() -> User:
        await cache.invalidate(before.id)  # the change commits and invalidates
        return before

    assert await cache.profile(before.id, read_then_the_user_changes_it) == before

    async def read_after() -> User:
        return after

    assert await cache.profile(before.id, read_after) == after
