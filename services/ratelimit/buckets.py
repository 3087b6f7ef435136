"""Token buckets kept in Redis, so every instance of this service, and through them every
Envoy, draws from the same bucket for a given user or address.

A decision is one call of the runtime's token-bucket script (services/runtime/
token_bucket.py): atomic, on Redis's own clock.
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
from services.runtime.token_bucket import RedisTokenBuckets

KEY_PREFIX = "rl:v1"
# A Redis decision that takes longer fails, and the service decides from its own
# fair-share buckets instead (limiter.py). Well below Envoy's own timeout for the
# whole call (EdgeSettings.ratelimit.timeout_ms, 500 ms), so that the local answer
# still reaches Envoy in time when Redis hangs.
DECISION_TIMEOUT = 0.2


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
        self._buckets = RedisTokenBuckets(redis)
        self._timeout = timeout
        self._prefix = prefix

    def key(self, class_name: str, key_value: str) -> str:
        # Class names have no ':', so the key reads back unambiguously (IPv6 has ':').
        return f"{self._prefix}:{class_name}:{key_value}"

    async def take(self, limit: ClassLimit, key_value: str, hits: int) -> Decision:
        """Takes `hits` tokens if the bucket has them; refills it first."""
        try:
            async with asyncio.timeout(self._timeout):
                taken = await self._buckets.change(
                    self.key(limit.name, key_value),
                    rate_per_second=limit.rate_per_second,
                    burst=limit.burst,
                    change=hits,
                    ttl_ms=_ttl_ms(limit),
                )
        except (RedisError, OSError, TimeoutError) as error:
            raise Unavailable(f"rate-limit store unavailable: {error!r}") from error
        return Decision(taken.allowed, taken.remaining, taken.until_full, Mode.SHARED)


def _ttl_ms(limit: ClassLimit) -> int:
    """About twice the time to refill from empty: an idle bucket is full by then, and a
    full bucket is what a missing key means, so it can go."""
    return max(1000, math.ceil(2000 * limit.refill_seconds))
