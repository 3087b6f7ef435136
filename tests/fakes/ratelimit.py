"""Stand-ins for the rate-limit service's ports (unit tests only): a clock that moves
only when told, a shared-bucket store that answers what it is told."""

from __future__ import annotations

import asyncio

from services.ratelimit.buckets import Decision, Mode
from services.ratelimit.limits import ClassLimit
from services.runtime.errors import Unavailable


class Clock:
    """Seconds of a monotonic clock; tests set `now`."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Store:
    """Answers every take (allowed, 7 left) unless `down`; holds takes while `held`."""

    def __init__(self) -> None:
        self.down = False
        self.asked = 0
        self.held: asyncio.Event | None = None

    async def take(self, limit: ClassLimit, key_value: str, hits: int) -> Decision:
        self.asked += 1
        if self.held is not None:
            await self.held.wait()
        if self.down:
            raise Unavailable("rate-limit store unavailable: ConnectionError()")
        return Decision(True, 7, 1.0, Mode.SHARED)
