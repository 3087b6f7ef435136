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
import json
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.runtime.cache import JsonCache
from services.transaction.adapters.codec import wallet_from_json, wallet_to_json
from services.transaction.domain.model import Wallet

log = logging.getLogger(__name__)

_WALLET_GENERATION = "txn:gen:wallet:v1:"
_HISTORY_GENERATION = "txn:gen:history:v1:"


# One round trip for a look: the generation, and the entry under it. (The entry's key is
# made here from the generation: on one Redis, not a cluster, where both would need one slot.)
_LOOK = """
local generation = redis.call('GET', KEYS[1]) or '0'
return {generation, redis.call('GET', ARGV[1] .. generation)}
"""

# A write's invalidation: every generation it changed, bumped in one command (a pipeline of
# INCR and EXPIRE per key cost the client about twice as much, in packing and replies).
_BUMP = """
for _, key in ipairs(KEYS) do
  redis.call('INCR', key)
  redis.call('EXPIRE', key, ARGV[1])
end
return #KEYS
"""
# How long a generation outlives its last bump: far beyond every entry's TTL.
GENERATION_SECONDS = 86_400

Load = Callable[[], Awaitable[bytes | None]]


class RedisLedgerCache:
    def __init__(self, redis: Redis, *, wallet_ttl: int = 60, history_ttl: int = 30) -> None:
        self._redis = redis
        self.wallets = JsonCache(redis, "txn:wallet:v1", ttl_seconds=wallet_ttl)
        self.history = JsonCache(redis, "txn:history:v3", ttl_seconds=history_ttl)
        self._look = redis.register_script(_LOOK)
        self._bump = redis.register_script(_BUMP)

    async def _read_through(
        self, cache: JsonCache, generation_key: str, entry: str, load: Load
    ) -> bytes | None:
        """The entry `entry:<generation>` if Redis has it, else what `load` reads, kept
        under the generation seen *before* loading: a write committed meanwhile has
        bumped it, so a value read before that write is kept where nobody looks. Redis
        failing is a miss (the JsonCache's cooldown applies: one timeout per outage)."""
        if not cache.available():
            return await load()
        try:
            generation, found = await self._look(keys=[generation_key], args=[cache.key(entry)])
        except (RedisError, OSError) as error:
            cache.failed("get", error)
            return await load()
        cache.counted(hit=found is not None)
        if found is not None:
            return bytes(found)
        loaded = await load()
        if loaded is not None:
            seen = generation.decode() if isinstance(generation, bytes) else str(generation)
            await cache.put_bytes(f"{entry}{seen}", loaded)
        return loaded

    async def wallet(
        self, wallet_id: str, load: Callable[[], Awaitable[Wallet | None]]
    ) -> Wallet | None:
        async def load_json() -> bytes | None:
            wallet = await load()
            return json.dumps(wallet_to_json(wallet)).encode() if wallet is not None else None

        found = await self._read_through(
            self.wallets, _WALLET_GENERATION + wallet_id, f"{wallet_id}:", load_json
        )
        return wallet_from_json(json.loads(found)) if found is not None else None

    async def history_page(
        self, owner_id: str, query: str, load: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        digest = hashlib.sha256(query.encode()).hexdigest()[:32]
        found = await self._read_through(
            self.history, _HISTORY_GENERATION + owner_id, f"{owner_id}:{digest}:", load
        )
        assert found is not None  # load always gives a page
        return found

    async def invalidate(self, wallet_ids: set[str], owner_ids: set[str]) -> None:
        keys = [_WALLET_GENERATION + w for w in wallet_ids]
        keys += [_HISTORY_GENERATION + o for o in owner_ids]
        if not keys:
            return
        try:
            await self._bump(keys=keys, args=[GENERATION_SECONDS])
        except (RedisError, OSError) as error:
            # Not skipped during a cooldown; entries cached before the outage
            # expire within their TTL.
            self.wallets.failed("invalidate", error)
