"""How a client leaves a failing store alone for a while."""

from __future__ import annotations

import time
from collections.abc import Callable


class Cooldown:
    """After a Redis failure, Redis is left alone for `seconds`: an outage, or a Redis
    that hangs, costs one timeout per cooldown instead of one per request."""

    def __init__(self, seconds: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._seconds = seconds
        self._clock = clock
        self._until = 0.0

    def active(self) -> bool:
        return self._clock() < self._until

    def start(self) -> None:
        self._until = self._clock() + self._seconds
