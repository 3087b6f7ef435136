"""Failed logins per account: a token bucket per email in Redis, shared by every
instance of the user service.

The bucket is named by a keyed hash (HMAC-SHA256) of the email's lookup key, never
by the email: whoever reads Redis learns no address, and cannot test guesses
without the secret. One script call per decision: Redis runs scripts one at a
time, so refilling, checking and taking are atomic, on Redis's own clock.

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

from services.user.domain.model import LoginAllowance

log = logging.getLogger(__name__)

KEY_PREFIX = "user:login-failures:v1"

# KEYS[1]: the bucket, a hash {tokens, ts}; ts is the last change, in microseconds
#          of Redis's clock. A missing bucket is a full one.
# ARGV: seconds to refill one try, burst (bucket size), change (1: take a try,
#       -1: give one back), TTL in ms (the time to refill from empty).
# Returns {allowed (1|0), microseconds until a try is back (when refused)}.
# A refused take changes nothing; a bucket that is full again is deleted.
_CHANGE = """
local per_try = tonumber(ARGV[1]) * 1000000
local burst = tonumber(ARGV[2])
local change = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local last = tonumber(state[2])
if tokens == nil or last == nil then
  tokens = burst
else
  tokens = math.min(burst, tokens + math.max(0, now - last) / per_try)
end
if change > 0 and tokens < change then
  return {0, math.ceil((change - tokens) * per_try)}
end
tokens = math.min(burst, tokens - change)
if tokens >= burst then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return {1, 0}
"""


class RedisLoginThrottle:
    """`burst` tries at once, then one more every `refill_seconds`."""

    def __init__(self, redis: Redis, *, secret: bytes, burst: int, refill_seconds: float) -> None:
        if burst < 1 or refill_seconds <= 0:
            raise ValueError("login throttle: burst must be at least 1 and refill positive")
        self._change = redis.register_script(_CHANGE)
        self._secret = secret
        self._burst = burst
        self._refill_seconds = refill_seconds
        self._ttl_ms = math.ceil(burst * refill_seconds * 1000)

    def key(self, account: str) -> str:
        digest = hmac.new(self._secret, account.encode(), hashlib.sha256).hexdigest()
        return f"{KEY_PREFIX}:{digest}"

    async def take(self, account: str) -> LoginAllowance:
        try:
            allowed, wait_us = await self._run(account, 1)
        except (RedisError, OSError) as error:
            log.warning(
                "login failure limit unreachable, allowing the try", extra={"error": str(error)}
            )
            return LoginAllowance(allowed=True)
        return LoginAllowance(allowed=allowed == 1, retry_after_seconds=int(wait_us) / 1_000_000)

    async def give_back(self, account: str) -> None:
        try:
            await self._run(account, -1)
        except (RedisError, OSError) as error:
            log.warning("login failure limit unreachable", extra={"error": str(error)})

    async def _run(self, account: str, change: int) -> list[int]:
        result: list[int] = await self._change(
            keys=[self.key(account)],
            args=[self._refill_seconds, self._burst, change, self._ttl_ms],
        )
        return result
