"""A shard of the ledger highly available: its database on a pg_auto_failover formation
(a primary and a synchronous standby, services/localmesh/autofailover.py), reached by a
URL naming both nodes with target_session_attrs=read-write. Its primary is failed over
under a load of transfers within it and to and from another database: no acknowledged
transfer is lost, every request resolves by its key, and what the callers met meanwhile
was only the database being away (UNAVAILABLE at the service's edge)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from services.localmesh.autofailover import Formation
from services.localmesh.postgres import PostgresServer
from services.localmesh.processes import free_port
from services.runtime import db
from services.runtime.db import is_database_fault
from services.runtime.money import Money
from services.transaction import server
from services.transaction.adapters.ledger_store import SqlLedgerStore
from services.transaction.adapters.saga import LegSettings
from services.transaction.adapters.shards import ShardConfig, ShardMap
from services.transaction.domain.model import IdempotencyKey, LedgerOutcome, TransactionStatus
from tests.eventually import eventually_async
from tests.integration.ledger_stores import funded, key, on_shard

DATABASE = "ledger_failover"


@pytest.fixture(scope="module")
def formation() -> Iterator[Formation]:
    made = Formation((free_port(), free_port(), free_port()))
    try:
        made.start()
        with psycopg.connect(made.conninfo("postgres"), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {DATABASE}")
        yield made
    finally:
        made.destroy()


@pytest.fixture(scope="module")
def config(postgres: PostgresServer, formation: Formation) -> ShardConfig:
    postgres.create_database(DATABASE)
    # Shards 0-127 on the session's server, 128-255 on the formation.
    shards = ShardConfig.parse(f"{postgres.dsn(DATABASE)} {formation.url(DATABASE)}")
    server.migrate(shards)
    return shards


@pytest.fixture
async def store(config: ShardConfig) -> AsyncIterator[SqlLedgerStore]:
    databases = ShardMap.of(config, lambda url: db.create_driver_pool(url, size=6))
    for pool in databases.databases():
        await pool.open()
    made = SqlLedgerStore(databases, LegSettings(relay_after=3600))
    yield made
    await made.legs.drain()
    for pool in databases.databases():
        await pool.close()


@dataclass(frozen=True)
class Payer:
    owner: str
    wallet: str
    payee: str


@dataclass(frozen=True)
class Acknowledged:
    payer: Payer
    request: IdempotencyKey
    transaction_id: str


async def test_a_failover_under_load_loses_no_acknowledged_transfer(
    store: SqlLedgerStore, formation: Formation, caplog: pytest.LogCaptureFixture
) -> None:
    """A switchover (`pg_autoctl perform failover`): the primary hands over."""
    before = formation.primary_port()
    await under_load(store, caplog, formation.failover)
    assert formation.primary_port() != before


async def test_a_crash_of_the_primary_under_load_loses_no_acknowledged_transfer(
    store: SqlLedgerStore, formation: Formation, caplog: pytest.LogCaptureFixture
) -> None:
    """The primary killed (SIGKILL, its pg_autoctl with it): the monitor finds it gone and
    promotes the synchronous standby, which had every acknowledged commit. (Last in the
    module: the formation stays one node.)"""
    await under_load(store, caplog, formation.crash_primary)


async def under_load(
    store: SqlLedgerStore, caplog: pytest.LogCaptureFixture, fail_over: Callable[[], None]
) -> None:
    """Transfers from four payers while the formation's primary is `fail_over`-ed: none
    acknowledged is lost, each is there once and answers its key again."""
    # Payers on the formation paying within it and to the other database, and payers of
    # the other database paying into it.
    payers = []
    for payer_shard, payee_shard in ((200, 201), (202, 10), (11, 203), (12, 204)):
        owner = on_shard(payer_shard)
        wallet = await funded(store, owner, 1_000_000)
        payee = await funded(store, on_shard(payee_shard), 0)
        payers.append(Payer(owner, wallet, payee))
    acknowledged: list[Acknowledged] = []
    faults: list[BaseException] = []
    progress = asyncio.Condition()
    enough = asyncio.Event()

    async def settle(payer: Payer, request: IdempotencyKey) -> str:
        """The request sent until it has an answer (the same key every time, as a client
        that lost the answer does)."""
        while True:
            try:
                result = await store.transfer(
                    payer.owner, request, payer.wallet, payer.payee, Money("EUR", 1), "", {}
                )
            except Exception as error:  # the primary away: retried, by its key
                faults.append(error)
                await asyncio.sleep(0.2)  # a client's backoff, not a synchronisation
                continue
            assert result.outcome in (LedgerOutcome.OK, LedgerOutcome.REPLAYED), result.outcome
            assert result.transaction is not None
            return result.transaction.id

    async def pay(payer: Payer) -> None:
        while not enough.is_set():
            request = key()
            transaction_id = await settle(payer, request)
            async with progress:
                acknowledged.append(Acknowledged(payer, request, transaction_id))
                progress.notify_all()

    async def reached(n: int) -> int:
        async with progress:
            await progress.wait_for(lambda: len(acknowledged) >= n)
            return len(acknowledged)

    load = asyncio.gather(*(pay(payer) for payer in payers))
    await reached(40)
    await asyncio.to_thread(fail_over)
    await reached(await reached(0) + 40)
    enough.set()
    await load
    await store.legs.drain()

    # What the fault left on its way, the relay delivers (a delivery it broke is tried
    # again at the next pass).
    async def delivered() -> list[str]:
        await store.legs.relay(datetime.now(UTC) + timedelta(hours=2))
        waiting, _ = await store.legs.backlog(datetime.now(UTC))
        return [f"{waiting} legs on their way"] if waiting else []

    await eventually_async(delivered, "the relay to deliver every leg")

    # The failover broke connections under the load's calls (each then ran again on a
    # fresh one, to the new primary); what reached the callers, if anything, was the
    # database away, never a wrong answer.
    lost = [r for r in caplog.records if r.getMessage().startswith("database connection lost")]
    assert lost, "the failover interrupted no call"
    assert all(is_database_fault(error) for error in faults), faults[:3]
    # Every acknowledged transfer is there, once, posted; each key answers it again.
    ids = [a.transaction_id for a in acknowledged]
    assert len(set(ids)) == len(ids)
    for each in acknowledged:
        transaction = await store.transaction(each.transaction_id)
        assert transaction is not None
        assert transaction.status is TransactionStatus.POSTED
        again = await store.transfer(
            each.payer.owner,
            each.request,
            each.payer.wallet,
            each.payer.payee,
            Money("EUR", 1),
            "",
            {},
        )
        assert (again.outcome, again.transaction and again.transaction.id) == (
            LedgerOutcome.REPLAYED,
            each.transaction_id,
        )
    for payer in payers:
        paid = sum(1 for a in acknowledged if a.payer == payer)
        paying, paid_to = await store.wallet(payer.wallet), await store.wallet(payer.payee)
        assert paying is not None
        assert paid_to is not None
        assert (paying.balance, paid_to.balance) == (1_000_000 - paid, paid)
    assert await store.audit() == []
