"""What the clients did and what they were told: the history the checker judges.

An *intent* is one movement of money a client wanted, named by its idempotency key
(a batch has one intent per item). An *attempt* is one call that carried one or more
intents: the first send, a concurrent twin with the same key, a re-send after the
client gave up waiting, or the checker's re-send at the end. Times are seconds since
the start of the run (time.monotonic), the clock the fault log uses too.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    OK = "ok"  # an answer with a result
    REFUSED = "refused"  # a definite refusal (4xx other than 409/429): nothing was booked
    FAILED = "failed"  # a 5xx-class answer, 409 in progress or 429: effect unknown
    UNKNOWN = "unknown"  # no answer (client timeout, connection error): effect unknown


# gRPC codes counted as server errors (the 5xx classification).
SERVER_ERROR_CODES = frozenset({"UNAVAILABLE", "INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED"})
# Answers that do not say whether the call was booked: 409 ABORTED ("the same key is
# in flight": an edge retry, or a twin) and 429.
INDETERMINATE_CODES = frozenset({"ABORTED", "RESOURCE_EXHAUSTED"})
INDETERMINATE_HTTP = frozenset({409, 429})


class Clock:
    """Seconds since the run started, shared by clients and the fault injector."""

    def __init__(self) -> None:
        self.origin = time.monotonic()
        self.wall_origin = time.time()

    def now(self) -> float:
        return round(time.monotonic() - self.origin, 4)


@dataclass
class Intent:
    key: str
    client: int
    op: str  # transfer | transfer_by_email | batch_item | top_up
    owner_user_id: str
    source_wallet_id: str | None  # None for a top-up (the money comes from a card)
    destination_wallet_id: str
    amount: int
    payment_method: str | None = None
    batch_id: str | None = None
    # Filled in by the checker.
    resolution: str = ""  # ok | refused | unresolved
    transaction_id: str | None = None


@dataclass
class ItemResult:
    """What one attempt said about one intent."""

    outcome: Outcome
    status: str  # "200", "FAILED_PRECONDITION", "timeout"...
    transaction_id: str | None = None
    transaction_status: str | None = None


@dataclass
class Attempt:
    client: int
    op: str  # transfer | transfer_by_email | batch | top_up | read
    api: str  # rest | grpc
    keys: list[str]
    send: str  # first | twin | after_timeout | resolution
    start: float
    timeout: float
    end: float = 0.0
    outcome: Outcome = Outcome.UNKNOWN
    status: str = ""
    detail: str = ""
    results: dict[str, ItemResult] = field(default_factory=dict)

    @property
    def deliberate_timeout(self) -> bool:
        """A send made with a tiny timeout on purpose (to lose its answer): its timeout
        is the client's doing, not a server error."""
        return self.send == "first" and self.timeout < 1.0

    @property
    def server_error(self) -> bool:
        """HTTP ≥ 500, a 5xx-class gRPC code, or no answer at all (a client deadline is
        DEADLINE_EXCEEDED for gRPC; REST gets the same treatment)."""
        if self.outcome is Outcome.UNKNOWN:
            return not self.deliberate_timeout
        if self.status.isdigit():
            return int(self.status) >= 500
        return self.status in SERVER_ERROR_CODES


@dataclass
class History:
    clock: Clock
    intents: dict[str, Intent] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)

    def add_intent(self, intent: Intent) -> None:
        self.intents[intent.key] = intent

    def attempts_of(self, key: str) -> list[Attempt]:
        return [a for a in self.attempts if key in a.keys]

    def to_json(self) -> dict[str, Any]:
        return {
            "started_at_unix": self.clock.wall_origin,
            "intents": [asdict(i) for i in self.intents.values()],
            "attempts": [asdict(a) for a in self.attempts],
        }
