"""Movements between wallets of two databases: the saga of `sql/0006_shards/saga.sql`,
driven from here. The debit leg commits on the payer's database with an outbox row that
carries its credit leg; the courier delivers that leg to the payee's database
(`ledger_receive_leg`, once by the debit leg's id) and settles the debit leg with the
answer (`ledger_settle_leg`: posted, or failed with its money back). The call that made
the debit leg waits up to `deliver_within` seconds for both, and answers PENDING when
they take longer; what it leaves (a crash, the other database down) the relay of every
instance finishes, claiming due outbox rows with SKIP LOCKED and a doubling backoff.

A payee in another database is known by what never changes about a wallet (its owner
and currency), read there once and remembered, so that a transfer to a database that is
down is still accepted (PENDING) once its payee has been seen; whether the wallet is
still open is decided when the credit leg arrives."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.runtime.db import RetryingPool
from services.transaction.adapters.codec import transaction_from_json
from services.transaction.adapters.ledger_databases import LedgerDatabases
from services.transaction.adapters.ledger_sql import (
    TRANSACTION_JSON_SQL,
    fetch_document,
    fetch_rows,
)
from services.transaction.domain.model import LedgerOutcome, Transaction

log = logging.getLogger(__name__)

# What a wallet of another database is, for the debit leg: its owner and currency never
# change; its status is the one last read (a wallet closed since is refused on arrival).
_PAYEE = """SELECT json_build_object('id', a.id, 'owner_id', a.owner_id,
    'currency', a.currency, 'status', a.status)
    FROM accounts a WHERE a.id = CAST(:id AS uuid) AND a.kind = 'user_wallet'"""

_SETTLE = f"""SELECT {TRANSACTION_JSON_SQL}
    FROM ledger_settle_leg(CAST(:id AS uuid), CAST(:answer AS jsonb)) t
    LEFT JOIN accounts sa ON sa.id = t.source_account_id
    LEFT JOIN accounts da ON da.id = t.destination_account_id"""

_CLAIM = """SELECT transaction_id, credit_leg
    FROM ledger_claim_due_legs(:now, :limit, :base, :max)"""

_BACKLOG = """SELECT count(*) AS n, coalesce(extract(epoch FROM :now - min(created_at)), 0) AS age
    FROM ledger_outbox"""

_NOTE_ERROR = """UPDATE ledger_outbox SET last_error = left(:error, 500)
    WHERE transaction_id = CAST(:id AS uuid) RETURNING transaction_id"""

_CREDIT_LEG = "SELECT credit_leg FROM ledger_outbox WHERE transaction_id = CAST(:id AS uuid)"

# How many payees of other databases an instance remembers (a few hundred bytes each).
_PAYEES_REMEMBERED = 100_000


@dataclass(frozen=True)
class LegSettings:
    # How long a call waits for its credit leg before answering PENDING.
    deliver_within: float = 1.0
    # When the relay first tries a leg its call has not delivered, then the backoff
    # (doubling from relay_backoff up to relay_max_backoff), and how many per pass.
    relay_after: float = 5.0
    relay_backoff: float = 1.0
    relay_max_backoff: float = 60.0
    relay_batch: int = 100


@dataclass(frozen=True)
class RelayPass:
    delivered: int = 0
    refused: int = 0
    failed: int = 0
    # Databases whose due legs could not be claimed (down): tried again next pass.
    unreachable: int = 0


def ignore_leg(path: str, outcome: str) -> None:
    """An observer of deliveries that keeps nothing (metrics.observe_leg counts them)."""


class LegCourier:
    def __init__(
        self,
        databases: LedgerDatabases,
        settings: LegSettings,
        observe: Callable[[str, str], None] = ignore_leg,
    ) -> None:
        self._databases = databases
        self._shards = databases.shards
        self.settings = settings
        self._observe = observe
        self._payees: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # Deliveries that outlived their call's wait: kept until done (asyncio keeps
        # only weak references to tasks).
        self._unfinished: set[asyncio.Task[Transaction | None]] = set()

    async def payee(self, wallet_id: str) -> dict[str, Any] | None:
        """The wallet of another database as the debit leg needs it; None if there is
        no such wallet."""
        known = self._payees.get(wallet_id)
        if known is not None:
            self._payees.move_to_end(wallet_id)
            return known
        payee = await self._databases.found(
            wallet_id, lambda database: fetch_document(database, _PAYEE, {"id": wallet_id})
        )
        if payee is not None:
            self._payees[wallet_id] = payee
            if len(self._payees) > _PAYEES_REMEMBERED:
                self._payees.popitem(last=False)
        return payee

    def first_attempt_at(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.settings.relay_after)

    async def deliver_within(
        self, debit_id: str, credit_leg: dict[str, Any] | None
    ) -> Transaction | None:
        """The debit leg settled (posted or failed) if that happens within
        `deliver_within` seconds, else None (it is still PENDING; the delivery goes on,
        and the relay finishes what it does not)."""
        task = asyncio.ensure_future(self._deliver(debit_id, credit_leg, "sync"))
        self._unfinished.add(task)
        task.add_done_callback(self._finished)
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.settings.deliver_within)
        except TimeoutError:
            return None
        except Exception as error:  # the other database down: PENDING, the relay retries
            log.warning("delivery of a leg failed", extra={"leg": debit_id, "error": repr(error)})
            return None

    def _finished(self, task: asyncio.Task[Transaction | None]) -> None:
        self._unfinished.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._observe("sync", "error")

    async def _deliver(
        self, debit_id: str, credit_leg: dict[str, Any] | None, path: str
    ) -> Transaction | None:
        """Delivers the credit leg and settles its debit leg; the debit leg as it ends,
        or None if it is not on its way (settled already, by another)."""
        source = self._shards.for_id(debit_id)
        if credit_leg is None:
            credit_leg = await fetch_document(source, _CREDIT_LEG, {"id": debit_id})
            if credit_leg is None:
                return None
        destination = self._shards.for_id(str(credit_leg["id"]))
        answer = await fetch_document(
            destination,
            "SELECT ledger_receive_leg(CAST(:leg AS jsonb))",
            {"leg": json.dumps(credit_leg)},
        )
        assert answer is not None, "ledger_receive_leg answers"
        settled = await fetch_document(
            source, _SETTLE, {"id": debit_id, "answer": json.dumps(answer)}
        )
        self._observe(path, LedgerOutcome(answer["outcome"]).value)
        return transaction_from_json(settled) if settled else None

    async def relay(self, now: datetime) -> RelayPass:
        """One pass of the relay over every database: delivers each due leg it claims.
        A leg whose delivery fails waits for its next attempt (already scheduled by the
        claim); a database that cannot be reached is passed over (its legs wait, the
        others' go on)."""
        delivered = refused = failed = unreachable = 0
        for database in self._shards.databases():
            try:
                claimed = await fetch_rows(database, _CLAIM, self._claim_params(now))
            except Exception as error:
                unreachable += 1
                log.warning("relay could not claim legs", extra={"error": repr(error)})
                continue
            for row in claimed:
                try:
                    leg = await self._deliver(str(row.transaction_id), row.credit_leg, "relay")
                except Exception as error:
                    failed += 1
                    self._observe("relay", "error")
                    log.warning(
                        "relay could not deliver a leg",
                        extra={"leg": str(row.transaction_id), "error": repr(error)},
                    )
                    await self._note_error(database, str(row.transaction_id), error)
                    continue
                if leg is not None and leg.failure_code:
                    refused += 1
                elif leg is not None:
                    delivered += 1
        return RelayPass(delivered, refused, failed, unreachable)

    async def _note_error(self, database: RetryingPool, debit_id: str, error: Exception) -> None:
        """Keeps why a leg could not be delivered on its outbox row (for an operator; the
        next attempt is scheduled already)."""
        try:
            await fetch_rows(database, _NOTE_ERROR, {"id": debit_id, "error": repr(error)})
        except Exception as unrecorded:
            log.warning("could not record a leg's error", extra={"error": repr(unrecorded)})

    def _claim_params(self, now: datetime) -> dict[str, Any]:
        settings = self.settings
        return {
            "now": now,
            "limit": settings.relay_batch,
            "base": settings.relay_backoff,
            "max": settings.relay_max_backoff,
        }

    async def backlog(self, now: datetime) -> tuple[int, float]:
        """Legs on their way in the databases that answer, and the age of the oldest
        (seconds); one that does not is left out until it answers again."""
        waiting, oldest = 0, 0.0
        for database in self._shards.databases():
            try:
                rows = await fetch_rows(database, _BACKLOG, {"now": now})
            except Exception as error:
                log.warning("could not count the legs on their way", extra={"error": repr(error)})
                continue
            waiting, oldest = waiting + int(rows[0].n), max(oldest, float(rows[0].age))
        return waiting, oldest

    async def drain(self) -> None:
        """Waits for the deliveries that outlived their calls (at shutdown)."""
        if self._unfinished:
            await asyncio.gather(*self._unfinished, return_exceptions=True)
