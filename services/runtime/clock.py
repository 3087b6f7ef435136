"""The wall clock, in UTC, behind the domains' Clock ports (tests pass fakes)."""

from __future__ import annotations

from datetime import UTC, datetime


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)
