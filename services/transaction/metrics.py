"""The ledger's counters: money-moving calls by outcome, and the money they moved.

Recorded by the api layer, so the domain stays free of infrastructure: it says
whether a movement was new or replayed (`Posted`), and refuses with DomainErrors.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from prometheus_client import Counter, Gauge, Histogram

from services.runtime.errors import DomainError
from services.transaction.domain.model import Posted, TransactionStatus, TransactionType

LEDGER_TRANSACTIONS = Counter(
    "ledger_transactions_total",
    "Money-moving calls by transaction type and outcome: ok (a new transaction), replayed"
    " (the stored answer to a repeated idempotency key) or the refusal's reason.",
    ["type", "outcome"],
)
LEDGER_AMOUNT = Counter(
    "ledger_amount_minor_total",
    "Minor units moved by new transactions (not replays), by type and currency.",
    ["type", "currency"],
)
# Present from the start at 0, so rates over them are right from the first scrape.
for _type in TransactionType:
    LEDGER_TRANSACTIONS.labels(_type, "ok")
    LEDGER_TRANSACTIONS.labels(_type, "replayed")

EXTERNAL_SETTLED = Counter(
    "ledger_external_settled_total",
    "Top-ups and withdrawals settled, by type, result (posted, failed) and path: sync (the"
    " gateway's answer), webhook (its notice) or reconciler.",
    ["type", "result", "path"],
)
RECONCILER_BACKLOG = Gauge(
    "ledger_external_pending",
    "Top-ups and withdrawals still waiting for their provider (whole ledger).",
)
RECONCILER_OLDEST_SECONDS = Gauge(
    "ledger_external_pending_oldest_seconds",
    "Age of the oldest top-up or withdrawal still pending, in seconds (0: none).",
)
RECONCILER_PASSES = Counter(
    "ledger_reconciler_passes_total", "Reconciler passes by result (ok, error).", ["result"]
)

LEG_DELIVERIES = Counter(
    "ledger_leg_deliveries_total",
    "Credit legs of movements between databases delivered, by path (sync: the call that"
    " made the debit leg; relay) and outcome: delivered, refused (the debit leg failed,"
    " its money back) or error (to be tried again).",
    ["path", "outcome"],
)
LEGS_IN_FLIGHT = Gauge(
    "ledger_legs_in_flight",
    "Debit legs on their way to another database (outbox rows of every database that"
    " answered the last count).",
)
LEGS_OLDEST_SECONDS = Gauge(
    "ledger_legs_in_flight_oldest_seconds",
    "Age of the oldest debit leg on its way to another database, in seconds (0: none).",
)
RELAY_PASSES = Counter(
    "ledger_leg_relay_passes_total",
    "Leg relay passes by result: ok, partial (a database could not be reached; its legs"
    " wait for the next pass) or error.",
    ["result"],
)
for _path in ("sync", "relay"):
    for _outcome in ("delivered", "refused", "error"):
        LEG_DELIVERIES.labels(_path, _outcome)


TRANSFER_GROUP_SIZE = Histogram(
    "ledger_transfer_group_size",
    "Single transfers booked by one call to the database (group commit,"
    " TRANSACTION_TRANSFER_GROUPS).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 100),
)


def observe_leg(path: str, outcome: str) -> None:
    LEG_DELIVERIES.labels(path, outcome).inc()


_P = ParamSpec("_P")
_R = TypeVar("_R")


def record_posted(posted: Posted) -> None:
    transaction = posted.transaction
    if posted.replayed:
        LEDGER_TRANSACTIONS.labels(transaction.type, "replayed").inc()
        return
    LEDGER_TRANSACTIONS.labels(transaction.type, "ok").inc()
    LEDGER_AMOUNT.labels(transaction.type, transaction.currency).inc(transaction.amount)


def record_external(posted: Posted) -> None:
    """A top-up or withdrawal answered: counted like a movement once it has posted
    (a pending one is counted when it settles, in EXTERNAL_SETTLED)."""
    if posted.replayed or posted.transaction.status is TransactionStatus.POSTED:
        record_posted(posted)
    else:
        LEDGER_TRANSACTIONS.labels(posted.transaction.type, "pending").inc()


def observe_settled(kind: TransactionType, result: str, path: str) -> None:
    EXTERNAL_SETTLED.labels(kind, result, path).inc()


def record_refusal(kind: TransactionType, error: DomainError) -> None:
    LEDGER_TRANSACTIONS.labels(kind, error.reason or error.kind.name).inc()


def counts_refusals(
    kind: TransactionType,
) -> Callable[[Callable[_P, Awaitable[_R]]], Callable[_P, Awaitable[_R]]]:
    """Counts each refusal of a money-moving handler under its reason (its kind,
    e.g. INVALID_ARGUMENT, when it has none); INTERNAL for unexpected errors."""

    def decorate(handler: Callable[_P, Awaitable[_R]]) -> Callable[_P, Awaitable[_R]]:
        @functools.wraps(handler)
        async def counted(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return await handler(*args, **kwargs)
            except DomainError as error:
                record_refusal(kind, error)
                raise
            except Exception:
                LEDGER_TRANSACTIONS.labels(kind, "INTERNAL").inc()
                raise

        return counted

    return decorate
