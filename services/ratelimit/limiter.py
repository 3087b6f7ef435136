"""Where a decision comes from: the shared buckets in Redis, or, while Redis does not
answer, this instance's fair-share buckets (degraded mode).

A Redis outage that this service can see must not stop money: Envoy fails money closed
only when it cannot reach this service at all. So the service keeps deciding, at a fair
share of every limit, and says so: the `ratelimit_degraded` gauge, a `mode` label on
every decision counted, and one log line when the outage starts and one when it ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from services.ratelimit.buckets import Decision
from services.ratelimit.fair_share import FairShareBuckets
from services.ratelimit.limits import ClassLimit
from services.ratelimit.metrics import DEGRADED
from services.runtime.cooldown import Cooldown
from services.runtime.errors import Unavailable

log = logging.getLogger(__name__)

# Seconds Redis is left alone after it failed. Then one decision asks it again (the
# others still decide locally meanwhile): a Redis that hangs costs one timeout per
# cooldown, not one per decision.
COOLDOWN = 1.0


class SharedBuckets(Protocol):
    """The buckets every instance shares (buckets.TokenBuckets, in Redis)."""

    async def take(self, limit: ClassLimit, key_value: str, hits: int) -> Decision:
        """Raises `Unavailable` when the store does not answer in time."""
        ...


class Limiter:
    """Takes tokens from the shared bucket, or from the local share while Redis is out."""

    def __init__(
        self,
        shared: SharedBuckets,
        local: FairShareBuckets,
        *,
        cooldown: float = COOLDOWN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._shared = shared
        self._local = local
        self._cooldown = Cooldown(cooldown, clock)  # while degraded: Redis left alone
        self._probing = False  # while degraded: a decision is asking Redis
        self.degraded = False
        DEGRADED.set(0)

    async def take(self, limit: ClassLimit, key_value: str, hits: int) -> Decision:
        probe = self.degraded
        if probe:
            if self._probing or self._cooldown.active():
                return self._local.take(limit, key_value, hits)
            self._probing = True
        try:
            decision = await self._shared.take(limit, key_value, hits)
        except Unavailable as error:
            self._store_failed(error)
            return self._local.take(limit, key_value, hits)
        finally:
            if probe:
                self._probing = False
        self._store_answered()
        return decision

    def _store_failed(self, error: Unavailable) -> None:
        self._cooldown.start()
        if self.degraded:
            return
        self.degraded = True
        DEGRADED.set(1)
        log.warning(
            "rate-limit store unavailable: deciding from this instance's fair share",
            extra={"error": error.message, "instances": self._local.instances},
        )

    def _store_answered(self) -> None:
        if not self.degraded:
            return
        self.degraded = False
        DEGRADED.set(0)
        log.info("rate-limit store answers again: back to the shared buckets")
