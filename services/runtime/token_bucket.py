"""One token bucket in Redis, changed atomically by one script call: the rate-limit
service's shared buckets and the user service's per-account login limit both stand on it.

Redis runs scripts one at a time, so refilling the bucket for the time elapsed, checking
it and changing it is atomic without locks or retries; and the script reads Redis's own
clock, so processes whose clocks disagree still refill a bucket at the same rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

# KEYS[1]: the bucket, a hash {tokens, ts}; ts is the last refill, in microseconds of
#          Redis's clock. A missing bucket is a full one.
# ARGV: refill rate (tokens per second), burst (bucket size), change (tokens to take;
#       negative: give back), TTL in ms (at least the time to refill from empty).
# Returns {allowed (1|0), whole tokens left, microseconds until the bucket is full,
#          microseconds until `change` tokens are there (0 when allowed)}.
# A refused take takes nothing. A clock that went back (after a failover to another
# Redis) refills nothing. `min` also trims a bucket when the configured burst shrank.
# A bucket that is full again is deleted: missing means full.
_CHANGE = """
local rate = tonumber(ARGV[1]) / 1000000
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
  tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
end
local allowed = 1
local wait = 0
if change > tokens then
  allowed = 0
  wait = math.ceil((change - tokens) / rate)
else
  tokens = math.min(burst, tokens - change)
end
if tokens >= burst then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return {allowed, math.floor(tokens), math.ceil((burst - tokens) / rate), wait}
"""


@dataclass(frozen=True, slots=True)
class BucketChange:
    """What one change of a bucket did."""

    allowed: bool
    remaining: int  # whole tokens left after it
    until_full: float  # seconds until the bucket is full again, if nothing is taken
    until_enough: float  # seconds until the refused change would be allowed; 0 if allowed


class RedisTokenBuckets:
    """Changes token buckets kept in Redis (errors of Redis are the caller's to handle)."""

    def __init__(self, redis: Redis) -> None:
        # EVALSHA, loading the script again when Redis lost it (after a restart, say).
        self._change = redis.register_script(_CHANGE)

    async def change(
        self, key: str, *, rate_per_second: float, burst: float, change: int, ttl_ms: int
    ) -> BucketChange:
        """Takes `change` tokens from the bucket at `key` if it has them (a negative
        `change` gives tokens back, never beyond `burst`); refills it first."""
        allowed, remaining, until_full_us, until_enough_us = await self._change(
            keys=[key], args=[rate_per_second, burst, change, ttl_ms]
        )
        return BucketChange(
            allowed == 1,
            int(remaining),
            int(until_full_us) / 1_000_000,
            int(until_enough_us) / 1_000_000,
        )
