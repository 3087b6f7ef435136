"""The ledger's databases as the service uses them: a retrying pool each, and where the
logical shards are, kept as the databases say (adapters/shards.py is the map itself).

A shard moved to another database of the list (adapters/shard_move.py) is found three
ways, so that no call acts on the old map for long: the map is read again after every
relay pass (`refresh`, from the service's background loop); a write to a database that
no longer holds its shard is refused there (SQLSTATE 55000: UNAVAILABLE to the caller,
whose retry then reaches the new database) and has the map read again at once; and a
read that finds nothing asks the database whether it still holds the shard, and if not
reads the map again and reads once more — so a user never sees their wallet missing
because it just moved."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg.errors
from psycopg import AsyncConnection

from services.runtime.db import DriverPool, RetryingPool
from services.transaction.adapters.ledger_sql import fetch_one
from services.transaction.adapters.shards import ShardMap, ShardMapError, shard_of

log = logging.getLogger(__name__)
T = TypeVar("T")


class ShardGone(psycopg.errors.ObjectNotInPrerequisiteState):
    """No database holds the shard just now (between the two commits of a move): a
    fault, retried by the caller."""


class ShardPool(RetryingPool):
    """One database of the ledger: a retrying pool that tells when a write found its
    shard gone."""

    def __init__(self, pool: DriverPool, on_shard_gone: Callable[[], object]) -> None:
        super().__init__(pool)
        self._on_shard_gone = on_shard_gone

    async def run(self, work: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
        try:
            return await super().run(work)
        except psycopg.errors.ObjectNotInPrerequisiteState:
            self._on_shard_gone()
            raise


class LedgerDatabases:
    def __init__(self, pools: ShardMap[DriverPool]) -> None:
        self.shards: ShardMap[ShardPool] = pools.map(lambda pool: ShardPool(pool, self._shard_gone))
        self._refreshing: asyncio.Task[None] | None = None
        # How many times the shards have moved under this instance: a call that decided
        # where its wallets are before a move cannot trust a "not found" after it.
        self.moves = 0

    async def refresh(self) -> None:
        """Reads from every database which shards it holds, and routes by that
        (ShardMapError, and the map as it was, unless each shard is held once: a move
        between its two commits)."""
        held = [
            frozenset(await fetch_one(database, "SELECT ledger_held_shards()", {}) or ())
            for database in self.shards.databases()
        ]
        if held != [shards for _, shards in self.shards.held()]:
            self.shards.regroup(held)
            self.moves += 1
            log.info("shard map read again: shards moved")

    def _shard_gone(self) -> asyncio.Task[None]:
        # One refresh at a time: the calls that meet a moved shard together share it.
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self.refresh())
            self._refreshing.add_done_callback(_log_failure)
        return self._refreshing

    async def _refreshed(self) -> None:
        """The map read again (shared with the calls doing so now); as it was if the
        databases do not hold every shard once just now."""
        with contextlib.suppress(ShardMapError):
            await asyncio.shield(self._shard_gone())

    async def found(
        self,
        id_: str,
        read: Callable[[ShardPool], Awaitable[T]],
        missing: Callable[[T], bool] = lambda found: not found,
    ) -> T:
        """`read` on the database of id_'s shard; if it finds nothing there, and that
        database no longer holds the shard, on the database that now does."""
        database = self.shards.for_id(id_)
        found = await read(database)
        if not missing(found):
            return found
        shard = shard_of(id_)
        if await fetch_one(
            database, "SELECT ledger_holds_shard(CAST(:s AS smallint))", {"s": shard}
        ):
            return found
        await self._refreshed()
        now = self.shards.for_shard(shard)
        if now is database:
            raise ShardGone(f"logical shard {shard} is moving just now")
        return await read(now)

    async def confirm_held(self, database: ShardPool, moves: int) -> None:
        """A call routed to `database` when `moves` shards had moved found no wallet,
        hold or transaction there, or failed: ShardGone (once the map is read again)
        unless no shard has moved since (so the map is the one it was routed by) and
        the database holds exactly the shards that map gives it — its answer then
        stands."""
        if moves == self.moves:
            routed = next(shards for each, shards in self.shards.held() if each is database)
            held = await fetch_one(database, "SELECT ledger_held_shards()", {})
            if frozenset(held or ()) == routed:
                return
        await self._refreshed()
        raise ShardGone("the shards moved while the call was on its way: try again")


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("could not read the shard map again", extra={"error": repr(task.exception())})
