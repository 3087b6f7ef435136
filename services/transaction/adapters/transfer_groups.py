"""Group commit: single transfers to one database, booked together (issue 15).

Whatever is queued while this instance's previous call to the database runs goes into
the next call (up to 100): one round trip and one commit for the group
(`ledger_transfer_group`, sql/0007_group_commit/), as a batch, though its transfers come
from several callers. No transfer waits for a timer: alone, it goes at once, as a single
call; it waits only for the calls already on their way (at most `in_flight` at a time).
Each caller gets exactly ledger_transfer's answer to its own transfer — its refusal, its
replay, its receipt — booked in the order the calls arrived. Should the group's call
fail as a whole (one transfer's argument refused by the database, a deadlock), each
transfer of it is booked again alone, and gets its own answer or error: a failure is
never another transfer's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from services.runtime.db import RetryingPool, is_connection_lost
from services.transaction.adapters.ledger_sql import fetch_document, fetch_one

GROUP_LIMIT = 100

TRANSFER_SQL = (
    "SELECT ledger_transfer(CAST(:owner AS uuid), :key, :hash, CAST(:source AS uuid),"
    " CAST(:destination AS uuid), :amount, :currency, :memo, CAST(:metadata AS jsonb),"
    " CAST(:payee AS jsonb), CAST(:first_attempt AS timestamptz))"
)
_GROUP_SQL = (
    "SELECT ledger_transfer_group(CAST(:items AS jsonb), CAST(:first_attempt AS timestamptz))"
)


def ignore_group(size: int) -> None:
    """The default observer of each call's group size."""


@dataclass
class _Queued:
    params: dict[str, Any]
    answer: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class TransferGroups:
    """The single transfers of one database of the ledger, in groups."""

    def __init__(
        self,
        database: RetryingPool,
        in_flight: int = 1,
        observe: Callable[[int], None] = ignore_group,
    ) -> None:
        self._database = database
        self._in_flight = in_flight
        self._observe = observe
        self._queue: list[_Queued] = []
        self._draining: set[asyncio.Task[None]] = set()

    async def transfer(self, params: dict[str, Any]) -> dict[str, Any]:
        """ledger_transfer's answer to these arguments (TRANSFER_SQL's)."""
        queued = _Queued(params)
        self._queue.append(queued)
        self._start_draining()
        return await queued.answer

    def _start_draining(self) -> None:
        if self._queue and len(self._draining) < self._in_flight:
            task = asyncio.ensure_future(self._drain())
            self._draining.add(task)
            task.add_done_callback(self._drained)

    def _drained(self, task: asyncio.Task[None]) -> None:
        self._draining.discard(task)
        self._start_draining()  # (what came while it stopped, if it stopped early)

    async def _drain(self) -> None:
        while self._queue:
            group, self._queue = self._queue[:GROUP_LIMIT], self._queue[GROUP_LIMIT:]
            await self._book(group)

    async def _book(self, group: list[_Queued]) -> None:
        self._observe(len(group))
        try:
            if len(group) == 1 or not await self._booked_together(group):
                for queued in group:
                    await self._book_alone(queued)
        except BaseException as error:
            # (Whatever it was, no caller of the group is left waiting.)
            for queued in group:
                _settle(queued, error=error)
            if not isinstance(error, Exception):
                raise

    async def _booked_together(self, group: list[_Queued]) -> bool:
        """The group in one call; False if it failed as a whole (to be booked alone)."""
        try:
            answers = await fetch_one(
                self._database,
                _GROUP_SQL,
                {
                    "items": json.dumps([_item(q.params) for q in group]),
                    # (When the relay may first try a leg to another database: the
                    # group's first; those within one have none.)
                    "first_attempt": next(
                        (q.params["first_attempt"] for q in group if q.params["first_attempt"]),
                        None,
                    ),
                },
            )
        except psycopg.Error as error:
            if not is_connection_lost(error):
                return False
            # The database away (RetryingPool tried again already): a fault for each,
            # as for a single call.
            for queued in group:
                _settle(queued, error=error)
            return True
        for queued, answer in zip(group, _documents(answers), strict=True):
            _settle(queued, answer)
        return True

    async def _book_alone(self, queued: _Queued) -> None:
        try:
            answer = await fetch_document(self._database, TRANSFER_SQL, queued.params)
        except Exception as error:
            _settle(queued, error=error)
        else:
            assert answer is not None, "ledger_transfer answers"
            _settle(queued, answer)


def _settle(
    queued: _Queued, answer: dict[str, Any] | None = None, error: BaseException | None = None
) -> None:
    """The caller's answer (or error), unless it has one already or stopped waiting."""
    if queued.answer.done():
        return
    if error is not None:
        queued.answer.set_exception(error)
    else:
        assert answer is not None
        queued.answer.set_result(answer)


def _item(params: dict[str, Any]) -> dict[str, Any]:
    """TRANSFER_SQL's arguments as an item of ledger_transfer_group."""
    item = {
        name: params[name]
        for name in ("owner", "key", "hash", "source", "destination", "amount", "currency")
    } | {"memo": params["memo"], "metadata": json.loads(params["metadata"])}
    if params.get("payee"):
        item["payee"] = json.loads(params["payee"])
    return item


def _documents(answers: Any) -> list[dict[str, Any]]:
    loaded = answers if isinstance(answers, list) else json.loads(answers)
    return [a if isinstance(a, dict) else json.loads(a) for a in loaded]
