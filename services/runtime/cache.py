"""Redis: the client every service uses, a cache-aside helper that never lets a Redis
outage fail a request (DESIGN.md, Caching), and generations: entries keyed by a counter
that every committed write bumps, read through in one round trip."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from services.runtime.cooldown import Cooldown
from services.runtime.metrics import CACHE_OPERATIONS

log = logging.getLogger(__name__)

# Seconds a command or a connection attempt may take: a slow cache is worse than none.
REDIS_TIMEOUT = 0.5


def create_redis(redis_url: str) -> Redis:
    """The Redis client of every service of the mesh.

    A timeout is never retried (it would double the wait on a Redis that hangs). A
    connection that died (Redis restarted, or closed an idle connection) is retried
    once, at once, on a fresh connection: redis-py's pool hands out a pooled
    connection without noticing that the server closed it (it skips that check
    while maintenance notifications are on, the RESP3 default), so without the
    retry the first command on each pooled connection after a restart would fail.
    A command whose connection died after sending it may have run already; every
    command the mesh sends bears running twice (reads, SET, DEL, the INCR of a cache
    generation; the token-bucket script takes one more token, the safe side).
    """
    return Redis.from_url(
        redis_url,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
        # Only ConnectionError and its subclasses; redis's TimeoutError is not one.
        retry=Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,)),
    )


@dataclass
class CacheStats:
    """Counters of one cache, read by tests; every change is also counted in
    cache_operations_total (by namespace, across instances of the same cache)."""

    hits: int = 0
    misses: int = 0
    errors: int = 0
    bypassed: int = 0


class JsonCache:
    """Cache-aside storage of JSON documents under one key namespace (or of documents
    already rendered, as bytes: `put_bytes`, read by `Generations`).

    Every method swallows Redis failures (counted in `stats`, logged) so the
    caller falls back to PostgreSQL. After a failure Redis is left alone for
    `cooldown` seconds, so an outage costs one timeout, not one per request.
    """

    def __init__(
        self,
        redis: Redis,
        namespace: str,
        *,
        ttl_seconds: int,
        cooldown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._namespace = namespace
        self._ttl = ttl_seconds
        self._cooldown = Cooldown(cooldown, clock)
        self.stats = CacheStats()
        # Bound once: these run on every cached read.
        self._hit, self._miss, self._error, self._bypassed = (
            CACHE_OPERATIONS.labels(namespace, result)
            for result in ("hit", "miss", "error", "bypassed")
        )

    def key(self, key: str) -> str:
        """The Redis key of an entry."""
        return f"{self._namespace}:{key}"

    def counted(self, *, hit: bool) -> None:
        """Counts a look made elsewhere (a script reading the entry with its generation)."""
        if hit:
            self.stats.hits += 1
            self._hit.inc()
        else:
            self.stats.misses += 1
            self._miss.inc()

    def available(self) -> bool:
        if self._cooldown.active():
            self.stats.bypassed += 1
            self._bypassed.inc()
            return False
        return True

    def failed(self, operation: str, error: Exception) -> None:
        """Records a Redis failure and starts the cooldown."""
        self.stats.errors += 1
        self._error.inc()
        self._cooldown.start()
        log.warning(
            "cache unavailable, using the database",
            extra={"operation": operation, "namespace": self._namespace, "error": str(error)},
        )

    async def get(self, key: str) -> Any | None:
        if not self.available():
            return None
        try:
            raw = await self._redis.get(self.key(key))
        except (RedisError, OSError) as error:
            self.failed("get", error)
            return None
        self.counted(hit=raw is not None)
        return json.loads(raw) if raw is not None else None

    async def put(self, key: str, value: Any) -> None:
        await self.put_bytes(key, json.dumps(value).encode())

    async def put_bytes(self, key: str, value: bytes) -> None:
        if not self.available():
            return
        try:
            await self._redis.set(self.key(key), value, ex=self._ttl)
        except (RedisError, OSError) as error:
            self.failed("put", error)


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
T = TypeVar("T")


class Generations:
    """Cache-aside entries `<entry><generation>`, where the generation is a counter that
    every committed write of the thing bumps before it answers: one bump makes every older
    entry unreachable at once (they expire by TTL).

    It also closes cache-aside's race, in which a reader misses, reads the database, a
    writer commits and invalidates, and the reader then stores what it read before the
    write: the reader stores under the generation it saw before reading, where nobody looks
    any more.
    """

    def __init__(self, redis: Redis) -> None:
        self._look = redis.register_script(_LOOK)
        self._bump = redis.register_script(_BUMP)

    async def read_through(
        self, cache: JsonCache, generation_key: str, entry: str, load: Load
    ) -> bytes | None:
        """The entry if Redis has it under the current generation, else what `load` reads
        (kept under the generation seen before loading; nothing is kept for None). Redis
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

    async def read_through_json(
        self,
        cache: JsonCache,
        generation_key: str,
        entry: str,
        load: Callable[[], Awaitable[T | None]],
        to_json: Callable[[T], Any],
        from_json: Callable[[Any], T],
    ) -> T | None:
        """`read_through` of a value kept as the JSON document `to_json` makes of it."""

        async def load_json() -> bytes | None:
            value = await load()
            return json.dumps(to_json(value)).encode() if value is not None else None

        found = await self.read_through(cache, generation_key, entry, load_json)
        return from_json(json.loads(found)) if found is not None else None

    async def bump(self, cache: JsonCache, generation_keys: list[str]) -> None:
        """A committed write's invalidation. Not skipped during a cooldown: a stale entry
        outliving an outage would break read-your-writes (entries cached before the
        outage expire within their TTL)."""
        if not generation_keys:
            return
        try:
            await self._bump(keys=generation_keys, args=[GENERATION_SECONDS])
        except (RedisError, OSError) as error:
            cache.failed("invalidate", error)
