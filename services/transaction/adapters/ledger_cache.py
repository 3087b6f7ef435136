"""Wallets and history pages in Redis, read through: wallets as JSON, history pages as
the API rendered them (bytes it answers as they are). Both are keyed by a generation
(per wallet, and per owner for history) that a committed write bumps (runtime/cache.py,
Generations).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from services.runtime.cache import Generations, JsonCache
from services.transaction.adapters.codec import wallet_from_json, wallet_to_json
from services.transaction.domain.model import Wallet

_WALLET_GENERATION = "txn:gen:wallet:v1:"
_HISTORY_GENERATION = "txn:gen:history:v1:"


class RedisLedgerCache:
    def __init__(self, redis: Redis, *, wallet_ttl: int = 60, history_ttl: int = 30) -> None:
        self.wallets = JsonCache(redis, "txn:wallet:v1", ttl_seconds=wallet_ttl)
        self.history = JsonCache(redis, "txn:history:v3", ttl_seconds=history_ttl)
        self._generations = Generations(redis)

    async def wallet(
        self, wallet_id: str, load: Callable[[], Awaitable[Wallet | None]]
    ) -> Wallet | None:
        return await self._generations.read_through_json(
            self.wallets,
            _WALLET_GENERATION + wallet_id,
            f"{wallet_id}:",
            load,
            wallet_to_json,
            wallet_from_json,
        )

    async def history_page(
        self, owner_id: str, query: str, load: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        digest = hashlib.sha256(query.encode()).hexdigest()[:32]
        found = await self._generations.read_through(
            self.history, _HISTORY_GENERATION + owner_id, f"{owner_id}:{digest}:", load
        )
        assert found is not None  # load always gives a page
        return found

    async def invalidate(self, wallet_ids: set[str], owner_ids: set[str]) -> None:
        keys = [_WALLET_GENERATION + w for w in wallet_ids]
        keys += [_HISTORY_GENERATION + o for o in owner_ids]
        await self._generations.bump(self.wallets, keys)
