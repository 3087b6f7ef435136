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


async def test_a_history_page_is_kept_as_rendered_until_its_owner_writes(redis: Redis) -> None:
    cache = RedisLedgerCache(redis)
    owner, other = str(uuid.uuid4()), str(uuid.uuid4())
    assert await cache.history_page(owner, "q1") is None
    await cache.put_history_page(owner, "q1", RENDERED)
    await cache.put_history_page(other, "q1", b"other's")
    assert await cache.history_page(owner, "q1") == RENDERED
    assert await cache.history_page(owner, "q2") is None  # another query
    assert cache.history.stats.hits == 1
    await cache.invalidate(set(), {owner})
    assert await cache.history_page(owner, "q1") is None
    assert await cache.history_page(other, "q1") == b"other's"  # not theirs to drop


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
    await cache.put_wallet(wallet)
    assert await cache.wallet(wallet.id) == wallet
    await cache.invalidate({wallet.id}, set())
    assert await cache.wallet(wallet.id) is None
