"""Token buckets kept in Redis, so every instance of this service, and through them every
Envoy, draws from the same bucket for a given user or address.

A decision is one server-side script call: Redis runs scripts one at a time, so reading
the bucket, refilling it for the time elapsed and taking the hits is atomic without locks
or retries; and the script reads Redis's own clock, so instances whose clocks disagree
still refill a bucket at the same rate.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from enum import StrEnum

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.ratelimit.limits import ClassLimit
from services.runtime.errors import Unavailable

KEY_PREFIX = "rl:v1"
# A Redis decision that takes longer fails, and the service decides from its own
# fair-share buckets instead (limiter.py). Well below Envoy's own timeout for the
# whole call (EdgeSettings.ratelimit.timeout_ms, 500 ms), so that the local answer
# still reaches Envoy in time when Redis hangs.
DECISION_TIMEOUT = 0.2

# KEYS[1]: the bucket, a hash {tokens, ts}; ts is the last refill, in microseconds of
#          Redis's clock.
# ARGV: refill rate (tokens per second), burst (bucket size), hits to take, TTL in ms.
# Returns {allowed (1|0), whole tokens left, microseconds until the bucket is full}.
# A refused decision takes nothing. A clock that went back (after a failover to another
# Redis) refills nothing. `min` also trims a bucket when the configured burst shrank.
_TAKE = """
local rate = tonumber(ARGV[1]) / 1000000
local burst = tonumber(ARGV[2])
local hits = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local last = tonumber(state[2])
if tokens == nil or last == nil then
  tokens = burst
else
  tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
end
local allowed = 0
if tokens >= hits then
  tokens = tokens - hits
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {allowed, math.floor(tokens), math.ceil((burst - tokens) / rate)}
"""


class Mode(StrEnum):
    """Which buckets a decision came from."""

    SHARED = "shared"  # Redis's, shared by every instance
    LOCAL = "local"  # this instance's fair share, while Redis does not answer


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of taking hits from one bucket."""

    allowed: bool
    remaining: int  # whole tokens left after this decision
    until_full: float  # seconds until the bucket is full again, if nothing is taken
    mode: Mode


class TokenBuckets:
    """Takes tokens from the shared bucket of (class, key value); raises `Unavailable`
    when Redis does not answer in time (the caller then decides otherwise)."""

    def __init__(
        self, redis: Redis, *, timeout: float = DECISION_TIMEOUT, prefix: str = KEY_PREFIX
    ) -> None:
        # EVALSHA, loading the script again when Redis lost it (after a restart, say).
        self._take = redis.register_script(_TAKE)
        self._timeout = timeout
        self._prefix = prefix

    def key(self, class_name: str, key_value: str) -> str:
        # Class names have no ':', so the key reads back unambiguously (IPv6 has ':').
        return f"{self._prefix}:{class_name}:{key_value}"

    async def take(self, limit: ClassLimit, key_value: str, hits: int) -> Decision:
        """Takes `hits` tokens if the bucket has them; refills it first."""
        try:
            async with asyncio.timeout(self._timeout):
                allowed, remaining, until_full_us = await self._take(
                    keys=[self.key(limit.name, key_value)],
                    args=[limit.rate_per_second, limit.burst, hits, _ttl_ms(limit)],
                )
        except (RedisError, OSError, TimeoutError) as error:
            raise Unavailable(f"rate-limit store unavailable: {error!r}") from error
        return Decision(allowed == 1, int(remaining), int(until_full_us) / 1_000_000, Mode.SHARED)


def _ttl_ms(limit: ClassLimit) -> int:
    """About twice the time to refill from empty: an idle bucket is full by then, and a
    full bucket is what a missing key means, so it can go."""
    return max(1000, math.ceil(2000 * limit.refill_seconds))
