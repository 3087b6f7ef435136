"""The rate-limit service's counter: one decision per descriptor, by class.

Recorded by the api layer on every call through the edge, so the label children
are bound once per class, not looked up per decision.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from prometheus_client import Counter

DECISIONS = Counter(
    "ratelimit_decisions_total",
    "Descriptor decisions by class: ok, over_limit, unmatched (not ours: answered OK;"
    ' class "") or error (Redis did not answer: Envoy applies the failure mode).',
    ["class", "decision"],
)


class Outcome(StrEnum):
    """The `decision` label of a descriptor that named one of our classes."""

    OK = "ok"
    OVER_LIMIT = "over_limit"
    ERROR = "error"


class DecisionCounts:
    """The counter's children for the configured classes."""

    def __init__(self, class_names: Iterable[str]) -> None:
        self._bound = {
            (name, decision): DECISIONS.labels(name, decision)
            for name in class_names
            for decision in Outcome
        }
        # Unmatched descriptors name no class of ours; "" can never be one.
        self._unmatched = DECISIONS.labels("", "unmatched")

    def decided(self, class_name: str, decision: Outcome) -> None:
        self._bound[class_name, decision].inc()

    def unmatched(self) -> None:
        self._unmatched.inc()
