"""Moving a logical shard to another database while money moves (adapters/shard_move.py):
the ledger on two databases of one server, a third database on a second server added to
the list, and shards moved to it under a load of transfers, with legs of the saga on
their way from and to the shard. Every request resolves by its key, exactly once;
nothing of the shard is left behind; the stores that had the old map find the new one;
a move stopped part-way is finished, or made again, by running it again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from services.localmesh.postgres import PostgresServer
from services.localmesh.processes import free_port
from services.runtime import db
from services.runtime.db import is_database_fault
from services.runtime.migrations import upgrade_to_head
from services.runtime.money import Money
from services.transaction import __main__ as commands
from services.transaction import server
from services.transaction.adapters.ledger_store import SqlLedgerStore
from services.transaction.adapters.saga import LegSettings
from services.transaction.adapters.shard_move import MoveReport, ShardMoveError, move_shard
from services.transaction.adapters.shards import ShardConfig, ShardMapError
from services.transaction.domain.model import (
    HistoryFilter,
    IdempotencyKey,
    LedgerOutcome,
    LedgerResult,
    TransactionStatus,
)
from tests.integration.ledger_stores import Instance, debit_legs_only, funded, key, on_shard

DATABASE = "ledger_move"
# The relay runs only when a test calls it.
LATER = timedelta(hours=2)
# The rows of a shard, by table (as the move takes them).
OF_SHARD = {
    "accounts": "ledger_shard_of(id)",
    "transactions": "ledger_shard_of(id)",
    "holds": "ledger_shard_of(id)",
    "postings": "ledger_shard_of(account_id)",
    "idempotency_keys": "shard",
    "ledger_outbox": "ledger_shard_of(transaction_id)",
    "external_payments": "ledger_shard_of(transaction_id)",
    "ledger_refused_legs": "ledger_shard_of(account_id)",
}


@dataclass(frozen=True)
class Ledger:
    first: str  # shards 0-127 (the session's server)
    second: str  # shards 128-255 (the same server)
    added: str  # added later, on a server of its own: no shards until moved
    config: ShardConfig

    def rows(self, url: str, query: str, *args: object) -> list[tuple[object, ...]]:
        with psycopg.connect(db.driver_conninfo(url)) as connection:
            return connection.execute(query, args).fetchall()

    def count(self, url: str, query: str, *args: object) -> int:
        return int(str(self.rows(url, query, *args)[0][0]))

    def held(self, url: str) -> list[int]:
        return [int(str(s)) for (s,) in self.rows(url, "SELECT unnest(ledger_held_shards())")]

    def left_of(self, url: str, shard: int) -> dict[str, int]:
        return {
            table: self.count(url, f"SELECT count(*) FROM {table} WHERE {where} = %s", shard)  # noqa: S608
            for table, where in OF_SHARD.items()
        }


@pytest.fixture(scope="module")
def ledger(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    other = PostgresServer(tmp_path_factory.mktemp("added"), free_port())
    other.ensure_initialized()
    other.start()
    for name in ("a", "b"):
        postgres.create_database(f"{DATABASE}_{name}")
    other.create_database(DATABASE)
    first, second = postgres.dsn(f"{DATABASE}_a"), postgres.dsn(f"{DATABASE}_b")
    server.migrate(ShardConfig.parse(f"{first} {second}"))
    # A database added to the list: migrated, it holds nothing.
    config = ShardConfig.parse(f"{first} {second} {other.dsn(DATABASE)}")
    server.migrate(config)
    yield Ledger(first, second, other.dsn(DATABASE), config)
    other.destroy()


@pytest.fixture
async def stores(ledger: Ledger) -> AsyncIterator[Callable[[], Awaitable[SqlLedgerStore]]]:
    made: list[Instance] = []

    async def start() -> SqlLedgerStore:
        made.append(Instance(ledger.config, LegSettings(relay_after=LATER.total_seconds())))
        return await made[-1].open()

    yield start
    for instance in made:
        await instance.close()


async def answered(call: Callable[[], Awaitable[LedgerResult]], faults: list[str]) -> LedgerResult:
    """As a client does: the same request again (same key) while the ledger answers
    UNAVAILABLE."""
    while True:
        try:
            return await call()
        except Exception as error:
            if not is_database_fault(error):
                raise
            faults.append(repr(error))
            await asyncio.sleep(0.02)  # a client's backoff


async def balance(store: SqlLedgerStore, wallet_id: str) -> int:
    wallet = await store.wallet(wallet_id)
    assert wallet is not None
    return wallet.balance


async def test_a_shard_moves_to_an_added_database_under_load_with_legs_on_their_way(
    ledger: Ledger, stores: Callable[[], Awaitable[SqlLedgerStore]]
) -> None:
    one, two, stale_writer, stale_reader = [await stores() for _ in range(4)]
    ada, cat, bob = on_shard(5), on_shard(6), on_shard(200)
    a, c, b = (
        await funded(one, ada, 100_000),
        await funded(one, cat, 0),
        await funded(one, bob, 10_000),
    )
    # On their way as the shard moves: legs from it (ada → bob: outbox rows on the first
    # database, moving with the shard) and to it (bob → ada, from the second database).
    outgoing = await debit_legs_only(
        one, db.driver_conninfo(ledger.first), ada, a, b, [100, 200, 300], datetime.now(UTC) + LATER
    )
    incoming = await debit_legs_only(
        one, db.driver_conninfo(ledger.second), bob, b, a, [40, 60], datetime.now(UTC) + LATER
    )
    soon = datetime.now(UTC) + timedelta(hours=1)
    hold = await one.create_hold(ada, key(), a, c, Money("EUR", 700), soon, "")
    assert hold.hold is not None
    history_before = await one.history(ada, HistoryFilter(), None, 100)

    # A load of transfers ada → cat (two shards of the first database: two legs in one
    # call; once shard 5 has moved, two databases: the saga) from two instances, going on
    # until after the move, every request retried with its key until answered.
    faults: list[str] = []
    moved = asyncio.Event()
    results: list[LedgerResult] = []

    def transfer(
        store: SqlLedgerStore, request: IdempotencyKey
    ) -> Callable[[], Awaitable[LedgerResult]]:
        return lambda: store.transfer(ada, request, a, c, Money("EUR", 10), "", {})

    async def load(store: SqlLedgerStore) -> None:
        after = 0
        while after < 15:
            results.append(await answered(transfer(store, key()), faults))
            after += moved.is_set()

    async def move() -> None:
        report = await asyncio.to_thread(move_shard, 5, ledger.first, ledger.added)
        assert report.rows["accounts"] >= 3  # the wallet, the settlement, the in-transit ones
        assert report.rows["ledger_outbox"] == 3
        moved.set()

    await asyncio.gather(load(one), load(two), move())

    # The shard is on the added database, whole, and nothing of it is left behind.
    assert 5 not in ledger.held(ledger.first)
    assert ledger.held(ledger.added) == [5]
    assert set(ledger.left_of(ledger.first, 5).values()) == {0}
    assert ledger.left_of(ledger.added, 5)["accounts"] >= 3
    # Every request answered once: posted (or on its way), and the money where it says.
    assert [r.outcome for r in results] == [LedgerOutcome.OK] * len(results)
    assert len({r.transaction.id for r in results if r.transaction}) == len(results)
    # The writes refused while the shard moved were faults (UNAVAILABLE), and all of them
    # found the shard's new database on their retry: each instance's first write after
    # the move went to the old one.
    assert len(faults) >= 2
    assert all("ObjectNotInPrerequisiteState" in f or "ShardGone" in f for f in faults), faults

    # An instance that had not noticed: its write is refused as a fault once, and it
    # reads the map again; the retry goes to the new database.
    request = key()
    # (Its wallet no longer there, the call finds that the database let shard 5 go.)
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="shards moved") as gone:
        await stale_writer.transfer(ada, request, a, c, Money("EUR", 1), "", {})
    assert is_database_fault(gone.value)
    retried = await answered(
        lambda: stale_writer.transfer(ada, request, a, c, Money("EUR", 1), "", {}), []
    )
    assert retried.outcome is LedgerOutcome.OK
    # One that only reads finds the wallet, its history and hold where they are now.
    wallet = await stale_reader.wallet(a)
    assert wallet is not None
    history = await stale_reader.history(ada, HistoryFilter(), None, 200)
    assert {t.id for t in history_before} <= {t.id for t in history}
    assert await stale_reader.hold(hold.hold.id) == (await one.hold(hold.hold.id))

    # The legs on their way: delivered once, from the shard's new database and to it.
    later = datetime.now(UTC) + LATER
    await one.legs.relay(later)
    await two.legs.relay(later)
    for url in (ledger.first, ledger.second, ledger.added):
        assert ledger.count(url, "SELECT count(*) FROM ledger_outbox") == 0
    for debit in outgoing:
        assert (
            ledger.count(
                ledger.second, "SELECT count(*) FROM transactions WHERE counterpart_id = %s", debit
            )
            == 1
        )
    for debit in incoming:
        assert (
            ledger.count(
                ledger.added, "SELECT count(*) FROM transactions WHERE counterpart_id = %s", debit
            )
            == 1
        )
        settled = await two.transaction(debit)
        assert settled is not None
        assert settled.status is TransactionStatus.POSTED
    # The hold moved with its payer, and the merchant captures it on the new database.
    captured = await two.capture_hold(cat, key(), hold.hold.id, None, datetime.now(UTC))
    assert captured.outcome is LedgerOutcome.OK

    paid = 10 * len(results) + 1
    assert await balance(one, a) == 100_000 - 600 + 100 - paid - 700
    assert await balance(one, c) == paid + 700
    assert await balance(one, b) == 10_000 - 100 + 600
    assert await one.audit() == []


async def test_a_move_stopped_part_way_is_finished_or_made_again_by_running_it_again(
    ledger: Ledger, stores: Callable[[], Awaitable[SqlLedgerStore]]
) -> None:
    store = await stores()
    eve = on_shard(9)
    e = await funded(store, eve, 500)

    # Stopped after the first database let the shard go, before the added one held it:
    # no database holds it. The map stays as it was (its writes refused, as faults),
    # until the move is run again.
    move_shard(9, ledger.first, ledger.added)
    with psycopg.connect(db.driver_conninfo(ledger.added), autocommit=True) as connection:
        connection.execute("UPDATE ledger_shards SET state = 'arriving' WHERE shard = 9")
    with pytest.raises(ShardMapError, match="no database holds shards 9"):
        await store.refresh_shards()
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        await store.adjust(eve, key(), e, Money("EUR", 1), "")
    # Only the database that let the shard go to that copy finishes it (a copy from
    # another move, or another database, is never held).
    with pytest.raises(ShardMoveError, match="not what the source let go"):
        move_shard(9, ledger.second, ledger.added)
    assert move_shard(9, ledger.first, ledger.added).resumed
    await store.refresh_shards()
    assert (await store.adjust(eve, key(), e, Money("EUR", 1), "")).outcome is LedgerOutcome.OK

    # Stopped before the database it left let it go (moving it back): the copy there is
    # out of date (writes went on here). Running the move again throws it away and copies
    # the shard as it is now.
    with psycopg.connect(db.driver_conninfo(ledger.first), autocommit=True) as connection:
        connection.execute("SET session_replication_role = replica")
        # (It had the shard before: its record says it left.)
        connection.execute("UPDATE ledger_shards SET state = 'arriving' WHERE shard = 9")
        connection.execute(
            "INSERT INTO accounts (id, kind, owner_id, currency, balance)"
            " VALUES (%s, 'user_wallet', %s, 'EUR', 500)",
            (e, eve),
        )
    report = move_shard(9, ledger.added, ledger.first)
    assert report.resumed
    await store.refresh_shards()
    assert await balance(store, e) == 501
    assert ledger.count(ledger.first, "SELECT count(*) FROM accounts WHERE id = %s", e) == 1
    assert set(ledger.left_of(ledger.added, 9).values()) == {0}
    assert await store.audit() == []


async def test_two_runs_of_one_move_at_once_move_it_once(
    ledger: Ledger, stores: Callable[[], Awaitable[SqlLedgerStore]]
) -> None:
    store = await stores()
    ivy = on_shard(40)
    wallet = await funded(store, ivy, 250)
    runs = await asyncio.gather(
        *(asyncio.to_thread(move_shard, 40, ledger.first, ledger.added) for _ in range(2)),
        return_exceptions=True,
    )
    copied = [r for r in runs if isinstance(r, MoveReport) and r.rows]
    assert len(copied) == 1, runs
    # The other found it running (or, after it, finished: nothing left to do).
    for other in runs:
        if other is not copied[0]:
            assert (isinstance(other, ShardMoveError) and "another move" in str(other)) or (
                isinstance(other, MoveReport) and other.resumed and not other.rows
            ), other
    await store.refresh_shards()
    assert await balance(store, wallet) == 250
    assert set(ledger.left_of(ledger.first, 40).values()) == {0}
    assert await store.audit() == []


def test_a_database_that_gave_away_its_last_shard_writes_for_none(
    ledger: Ledger, postgres: PostgresServer
) -> None:
    """It keeps a record of what it let go: holding none, it serves none (not all)."""
    postgres.create_database(f"{DATABASE}_spare")
    spare = postgres.dsn(f"{DATABASE}_spare")
    upgrade_to_head(server.MIGRATIONS, spare)  # holding nothing yet
    assert ledger.held(spare) == []
    # Shard 30 of the ledger goes there and back: the spare holds nothing again.
    move_shard(30, ledger.first, spare)
    assert ledger.held(spare) == [30]
    move_shard(30, spare, ledger.first)
    assert ledger.held(spare) == []
    with (
        psycopg.connect(db.driver_conninfo(spare), autocommit=True) as connection,
        pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="shard 30 is not held"),
    ):
        connection.execute("SELECT ledger_create_wallet(%s, 'k', 'h', 'EUR')", (on_shard(30),))
    assert 30 in ledger.held(ledger.first)


def test_the_command_moves_a_range_of_shards_and_says_what_it_moved(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    owner = on_shard(20)
    with psycopg.connect(db.driver_conninfo(ledger.first), autocommit=True) as connection:
        connection.execute("SELECT ledger_create_wallet(%s, %s, %s, 'EUR')", (owner, "k", "h"))
    monkeypatch.setenv("TRANSACTION_DATABASE_URL", " ".join(ledger.config.database_urls))
    assert commands.main(["move-shard", "20-21", "--to", "3"]) == 0
    assert commands.main(["move-shard", "21", "--to", "3"]) == 0
    assert commands.main(["move-shard", "21", "--to", "4"]) == 2
    out = capsys.readouterr()
    assert out.out.splitlines() == [
        "shard 20: moved to database 3 (1 accounts, 1 idempotency_keys)",
        "shard 21: moved to database 3 (no rows)",
        "shard 21: in database 3",
    ]
    assert "databases 1 to 3" in out.err
    assert {20, 21} <= set(ledger.held(ledger.added))
