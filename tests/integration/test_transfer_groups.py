"""Group commit (adapters/transfer_groups.py): single transfers that reach one instance
together are booked by one call, and each caller gets exactly what one call per
transfer gives — the same refusals, in the same order per wallet, the same replays —
and a transfer the database refuses as a whole fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import psycopg
import pytest

from services.localmesh.postgres import PostgresServer
from services.runtime import db
from services.runtime.money import Money
from services.transaction.adapters.ledger_store import SqlLedgerStore
from services.transaction.adapters.shards import ShardConfig, ShardMap
from services.transaction.domain.model import IdempotencyKey, LedgerOutcome, LedgerResult
from tests.integration.ledger_stores import funded, key, migrated, on_shard

DATABASE = "ledger_groups"

Start = Callable[[int], Awaitable[tuple[SqlLedgerStore, list[int]]]]


@pytest.fixture(scope="module")
def config(postgres: PostgresServer) -> ShardConfig:
    return migrated(postgres, DATABASE)


@pytest.fixture
async def stores(config: ShardConfig) -> AsyncIterator[Start]:
    """A store with `groups` group calls in flight per database (0: none), and the
    sizes of the groups it booked."""
    opened: list[ShardMap[db.DriverPool]] = []

    async def start(groups: int) -> tuple[SqlLedgerStore, list[int]]:
        databases = ShardMap.of(config, lambda url: db.create_driver_pool(url, size=8))
        for pool in databases.databases():
            await pool.open()
        opened.append(databases)
        sizes: list[int] = []
        store = SqlLedgerStore(databases, transfer_groups=groups, observe_group=sizes.append)
        await store.refresh_shards()
        return store, sizes

    yield start
    for databases in opened:
        for pool in databases.databases():
            await pool.close()


async def sent(
    store: SqlLedgerStore,
    owner: str,
    source: str,
    payees: list[str],
    amounts: list[int],
    together: bool,
) -> list[LedgerResult]:
    """Transfers from source, one to each payee, in this order: together, or each once
    the one before was answered."""
    calls = [
        store.transfer(owner, key(), source, payee, Money("EUR", amount), "", {})
        for payee, amount in zip(payees, amounts, strict=True)
    ]
    if together:
        return list(await asyncio.gather(*calls))
    return [await call for call in calls]


async def test_transfers_sent_together_are_booked_in_groups_as_one_by_one(
    stores: Start,
) -> None:
    """The same transfers, sent together through a store with groups and one by one
    through a store without: the same answers (a payer of 30 sending 20, 20, 10: the
    second refused), each booked once."""
    answers = {}
    for groups in (0, 1):
        store, sizes = await stores(groups)
        ada = on_shard(7)
        wallet = await funded(store, ada, 30)
        payees = [await funded(store, on_shard(n), 0) for n in (7, 8, 9, 7, 8, 9)]
        amounts = [20, 20, 10, 1, 1, 1]
        results = await sent(store, ada, wallet, payees, amounts, together=bool(groups))
        answers[groups] = [r.outcome for r in results]
        balances = [(await store.wallet(w)) for w in (wallet, *payees)]
        assert [b.balance if b else None for b in balances] == [0, 20, 0, 10, 0, 0, 0]
        if groups:
            assert sizes == [6]  # sent together, they went together
        # Each answered transfer is there once, and its key answers it again.
        booked = [r.transaction.id for r in results if r.transaction]
        assert len(set(booked)) == len(booked) == 2
        assert await store.audit() == []
    ok, short = LedgerOutcome.OK, LedgerOutcome.INSUFFICIENT_FUNDS
    assert answers[0] == answers[1] == [ok, short, ok, short, short, short]


async def test_a_key_sent_twice_in_one_group_books_once(stores: Start) -> None:
    store, sizes = await stores(1)
    bob = on_shard(20)
    wallet, payee = await funded(store, bob, 100), await funded(store, on_shard(21), 0)
    request = key()
    other = key()
    # (All four in one group: they reached the store before its first call.)
    first, *rest = await asyncio.gather(
        store.transfer(bob, other, wallet, payee, Money("EUR", 1), "", {}),
        *(store.transfer(bob, request, wallet, payee, Money("EUR", 5), "", {}) for _ in range(3)),
    )
    assert sizes == [4]
    assert first.outcome is LedgerOutcome.OK
    assert [r.outcome for r in rest] == [
        LedgerOutcome.OK,
        LedgerOutcome.REPLAYED,
        LedgerOutcome.REPLAYED,
    ]
    assert len({r.transaction.id for r in rest if r.transaction}) == 1
    assert (await store.wallet(payee)).balance == 6  # type: ignore[union-attr]


async def test_a_transfer_the_database_refuses_fails_alone(stores: Start) -> None:
    """One transfer of a group with an argument the database refuses (an idempotency key
    too long: raised, not answered): the group's call fails as a whole; each transfer
    is then booked alone, and only that one fails."""
    store, sizes = await stores(1)
    cat = on_shard(30)
    wallet = await funded(store, cat, 100)
    payee = await funded(store, on_shard(31), 0)
    keys = [key(), key(), IdempotencyKey("k" * 300, "h"), key()]
    results = await asyncio.gather(
        *(store.transfer(cat, k, wallet, payee, Money("EUR", 10), "", {}) for k in keys),
        return_exceptions=True,
    )
    assert sizes == [4]
    assert isinstance(results[2], psycopg.errors.InvalidParameterValue), results[2]
    assert [r.outcome for r in results if isinstance(r, LedgerResult)] == [LedgerOutcome.OK] * 3
    assert (await store.wallet(payee)).balance == 30  # type: ignore[union-attr]
    assert await store.audit() == []
