"""Wallets and history pages in Redis, cache-aside: wallets as JSON, history pages as
the API rendered them (bytes it answers as they are).

Entries are keyed by a *generation* (per wallet, and per owner for history):
a committed write bumps the generation, which makes every older entry
unreachable at once (they expire by TTL). This also closes cache-aside's race
in which a slow reader stores a value read before a write, after that write's
invalidation: the reader stores it under the old generation, where nobody looks.
"""

from __future__ import annotations

import hashlib
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.runtime.cache import JsonCache
from services.transaction.adapters.codec import wallet_from_json, wallet_to_json
from services.transaction.domain.model import Wallet

log = logging.getLogger(__name__)

_WALLET_GENERATION = "txn:gen:wallet:v1:"
_HISTORY_GENERATION = "txn:gen:history:v1:"


class RedisLedgerCache:
    def __init__(self, redis: Redis, *, wallet_ttl: int = 60, history_ttl: int = 30) -> None:
        self._redis = redis
        self.wallets = JsonCache(redis, "txn:wallet:v1", ttl_seconds=wallet_ttl)
        self.history = JsonCache(redis, "txn:history:v2", ttl_seconds=history_ttl)

    async def _generation(self, key: str) -> str | None:
        """The current generation, or None when Redis is unreachable (the
        JsonCache's cooldown applies: no second timeout during an outage)."""
        if not self.wallets.available():
            return None
        try:
            raw = await self._redis.get(key)
        except (RedisError, OSError) as error:
            self.wallets.failed("generation", error)
            return None
        if raw is None:
            return "0"
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    async def wallet(self, wallet_id: str) -> Wallet | None:
        generation = await self._generation(_WALLET_GENERATION + wallet_id)
        if generation is None:
            return None
        data = await self.wallets.get(f"{wallet_id}:{generation}")
        return wallet_from_json(data) if data is not None else None

    async def put_wallet(self, wallet: Wallet) -> None:
        generation = await self._generation(_WALLET_GENERATION + wallet.id)
        if generation is not None:
            await self.wallets.put(f"{wallet.id}:{generation}", wallet_to_json(wallet))

    @staticmethod
    def _page_key(owner_id: str, generation: str, query: str) -> str:
        digest = hashlib.sha256(query.encode()).hexdigest()[:32]
        return f"{owner_id}:{generation}:{digest}"

    async def history_page(self, owner_id: str, query: str) -> bytes | None:
        generation = await self._generation(_HISTORY_GENERATION + owner_id)
        if generation is None:
            return None
        return await self.history.get_bytes(self._page_key(owner_id, generation, query))

    async def put_history_page(self, owner_id: str, query: str, rendered: bytes) -> None:
        generation = await self._generation(_HISTORY_GENERATION + owner_id)
        if generation is not None:
            await self.history.put_bytes(self._page_key(owner_id, generation, query), rendered)

    async def invalidate(self, wallet_ids: set[str], owner_ids: set[str]) -> None:
        keys = [_WALLET_GENERATION + w for w in wallet_ids]
        keys += [_HISTORY_GENERATION + o for o in owner_ids]
        if not keys:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.incr(key)
                    pipe.expire(key, 86_400)
                await pipe.execute()
        except (RedisError, OSError) as error:
            # Not skipped during a cooldown; entries cached before the outage
            # expire within their TTL.
            self.wallets.failed("invalidate", error)
