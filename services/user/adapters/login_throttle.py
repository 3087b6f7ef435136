"""Failed logins per account: a token bucket per email in Redis, shared by every
instance of the user service.

The bucket is named by a keyed hash (HMAC-SHA256) of the email's lookup key, never
by the email: whoever reads Redis learns no address, and cannot test guesses
without the secret. One call of the runtime's token-bucket script per decision
(services/runtime/token_bucket.py): atomic, on Redis's own clock.

If Redis does not answer, tries are allowed (fail open, logged), as the edge's
per-address limit of logins does: a Redis outage must not stop people logging in.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.runtime.token_bucket import BucketChange, RedisTokenBuckets
from services.user.domain.model import LoginAllowance

log = logging.getLogger(__name__)

KEY_PREFIX = "user:login-failures:v1"


class RedisLoginThrottle:
    """`burst` tries at once, then one more every `refill_seconds`."""

    def __init__(self, redis: Redis, *, secret: bytes, burst: int, refill_seconds: float) -> None:
        if burst < 1 or refill_seconds <= 0:
            raise ValueError("login throttle: burst must be at least 1 and refill positive")
        self._buckets = RedisTokenBuckets(redis)
        self._secret = secret
        self._burst = burst
        self._refill_seconds = refill_seconds
        self._ttl_ms = math.ceil(burst * refill_seconds * 1000)

    def key(self, account: str) -> str:
        digest = hmac.new(self._secret, account.encode(), hashlib.sha256).hexdigest()
        return f"{KEY_PREFIX}:{digest}"

    async def take(self, account: str) -> LoginAllowance:
        try:
            taken = await self._change(account, 1)
        except (RedisError, OSError) as error:
            log.warning(
                "login failure limit unreachable, allowing the try", extra={"error": str(error)}
            )
            return LoginAllowance(allowed=True)
        return LoginAllowance(allowed=taken.allowed, retry_after_seconds=taken.until_enough)

    async def give_back(self, account: str) -> None:
        try:
            await self._change(account, -1)
        except (RedisError, OSError) as error:
            log.warning("login failure limit unreachable", extra={"error": str(error)})

    async def _change(self, account: str, change: int) -> BucketChange:
        return await self._buckets.change(
            self.key(account),
            rate_per_second=1 / self._refill_seconds,
            burst=self._burst,
            change=change,
            ttl_ms=self._ttl_ms,
        )
