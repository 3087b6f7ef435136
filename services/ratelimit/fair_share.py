"""This instance's own token buckets, decided in memory while Redis does not answer.

Each bucket holds a fair share of its class's limit: the rate and the burst divided by
the number of rate-limit instances, so the instances together never let through more
than the configured limit, whichever of them Envoy asks. (A caller whose calls all
reach one instance gets only that instance's share: stricter, never looser.) No I/O.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from services.ratelimit.buckets import Decision, Mode
from services.ratelimit.limits import ClassLimit

# Buckets remembered at most; past that, the least recently used one is forgotten. A
# bucket unused that long is usually full again, and full is what a new one starts as.
MAX_BUCKETS = 100_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float  # the clock when `tokens` was computed


@dataclass(frozen=True, slots=True)
class Share:
    """One instance's part of a class's limit."""

    rate_per_second: float
    burst: float


class FairShareBuckets:
    """In-memory token buckets per (class, key value), each at 1/`instances` of its
    class's rate and burst. A refused decision takes nothing, as in Redis."""

    def __init__(
        self,
        instances: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = MAX_BUCKETS,
    ) -> None:
        if instances < 1:
            raise ValueError(f"instances must be at least 1, got {instances}")
        self.instances = instances
        self._clock = clock
        self._max_buckets = max_buckets
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()

    def share(self, limit: ClassLimit) -> Share:
        return Share(limit.rate_per_second / self.instances, limit.burst / self.instances)

    def take(self, limit: ClassLimit, key_value: str, hits: int) -> Decision:
        """Takes `hits` tokens if this instance's share of the bucket has them."""
        share = self.share(limit)
        now = self._clock()
        key = (limit.name, key_value)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(share.burst, now)
            if len(self._buckets) > self._max_buckets:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(share.burst, bucket.tokens + elapsed * share.rate_per_second)
            bucket.updated = now
        allowed = bucket.tokens >= hits
        if allowed:
            bucket.tokens -= hits
        return Decision(
            allowed,
            math.floor(bucket.tokens),
            (share.burst - bucket.tokens) / share.rate_per_second,
            Mode.LOCAL,
        )

    def __len__(self) -> int:
        return len(self._buckets)
