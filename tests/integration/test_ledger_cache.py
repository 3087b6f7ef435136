"""The ledger's cache on a real Redis: history pages are kept as rendered (bytes, answered
as they are), per owner and query, until a write of the owner's bumps their generation;
wallets as JSON, until a write of the wallet's."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from services.localmesh.redis import RedisServer
from services.runtime.cache import create_redis
from services.transaction.adapters.ledger_cache import RedisLedgerCache
from services.transaction.domain.model import Wallet, WalletStatus

# Not valid UTF-8 and not JSON: kept byte for byte all the same.
RENDERED = b"\x0a\x80\xffpage\x00"


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = create_redis(redis_server.url)
    yield client
    await client.aclose()


class Loads:
    """A loader that counts its calls (each one a read the database would answer)."""

    def __init__(self, value: bytes) -> None:
        self.value = value
        self.calls = 0

    async def __call__(self) -> bytes:
        self.calls += 1
        return self.value


async def test_a_history_page_is_kept_as_rendered_until_its_owner_writes(redis: Redis) -> None:
    cache = RedisLedgerCache(redis)
    owner, other = str(uuid.uuid4()), str(uuid.uuid4())
    page, others = Loads(RENDERED), Loads(b"other's")
    assert await cache.history_page(owner, "q1", page) == RENDERED
    assert await cache.history_page(other, "q1", others) == b"other's"
    assert await cache.history_page(owner, "q1", page) == RENDERED
    assert page.calls == 1  # the second read was a hit: nothing loaded
    assert (cache.history.stats.hits, cache.history.stats.misses) == (1, 2)
    assert await cache.history_page(owner, "q2", page) == RENDERED  # another query
    assert page.calls == 2
    await cache.invalidate(set(), {owner})
    await cache.history_page(owner, "q1", page)
    assert page.calls == 3
    await cache.history_page(other, "q1", others)
    assert others.calls == 1  # not theirs to drop


async def test_a_value_loaded_across_a_write_is_not_kept(redis: Redis) -> None:
    """The race of cache-aside: a reader misses, reads the database, a writer commits
    and invalidates, then the reader stores what it read before the write. It must not be
    what the next reader gets."""
    cache = RedisLedgerCache(redis)
    owner = str(uuid.uuid4())

    async def read_then_someone_writes() -> bytes:
        stale = b"before the write"
        await cache.invalidate(set(), {owner})  # the write commits and invalidates
        return stale

    assert await cache.history_page(owner, "q", read_then_someone_writes) == b"before the write"
    after = Loads(b"after the write")
    assert await cache.history_page(owner, "q", after) == b"after the write"
    assert after.calls == 1


async def test_a_wallet_is_kept_until_it_is_written(redis: Redis) -> None:
    cache = RedisLedgerCache(redis)
    wallet = Wallet(
        str(uuid.uuid4()),
        str(uuid.uuid4()),
        "EUR",
        1234,
        0,
        0,
        WalletStatus.ACTIVE,
        datetime(2026, 12, 4, tzinfo=UTC),
    )
    loads: list[str] = []

    async def load() -> Wallet:
        loads.append(wallet.id)
        return wallet

    assert await cache.wallet(wallet.id, load) == wallet
    assert await cache.wallet(wallet.id, load) == wallet
    assert len(loads) == 1
    await cache.invalidate({wallet.id}, set())
    assert await cache.wallet(wallet.id, load) == wallet
    assert len(loads) == 2


async def test_no_wallet_is_not_kept(redis: Redis) -> None:
    cache = RedisLedgerCache(redis)
    missing = str(uuid.uuid4())

    async def none() -> Wallet | None:
        return None

    assert await cache.wallet(missing, none) is None
    assert cache.wallets.stats.misses == 1
    assert await redis.keys(cache.wallets.key(f"{missing}:*")) == []
