"""The rate-limit service's metrics: one decision per descriptor, by class and by the
buckets it came from, and whether the instance is degraded (deciding without Redis).

Recorded by the api layer on every call through the edge, so the label children
are bound once per class, not looked up per decision.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from prometheus_client import Counter, Gauge

from services.ratelimit.buckets import Mode

DECISIONS = Counter(
    "ratelimit_decisions_total",
    "Descriptor decisions by class: ok, over_limit or unmatched (not ours: answered OK;"
    ' class "" and mode ""); mode: shared (Redis\'s buckets) or local (this instance\'s'
    " fair share, while Redis does not answer).",
    ["class", "decision", "mode"],
)
DEGRADED = Gauge(
    "ratelimit_degraded",
    "1 while this instance decides from its own fair-share buckets because Redis does"
    " not answer; 0 on the shared buckets.",
)


class Outcome(StrEnum):
    """The `decision` label of a descriptor that named one of our classes."""

    OK = "ok"
    OVER_LIMIT = "over_limit"


class DecisionCounts:
    """The counter's children for the configured classes."""

    def __init__(self, class_names: Iterable[str]) -> None:
        self._bound = {
            (name, decision, mode): DECISIONS.labels(name, decision, mode)
            for name in class_names
            for decision in Outcome
            for mode in Mode
        }
        # Unmatched descriptors name no class of ours; "" can never be one.
        self._unmatched = DECISIONS.labels("", "unmatched", "")

    def decided(self, class_name: str, decision: Outcome, mode: Mode) -> None:
        self._bound[class_name, decision, mode].inc()

    def unmatched(self) -> None:
        self._unmatched.inc()
