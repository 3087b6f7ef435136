"""The ledger over two databases (two logical-shard ranges of one PostgreSQL server):
`migrate` has each hold its shards, every call goes to the database of the shard it
concerns, the sweeps and the audit see both; a movement between the two is two legs, one
in each (the saga: tests/integration/test_ledger_saga.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from services.localmesh.postgres import PostgresServer
from services.runtime import db
from services.runtime.money import Money
from services.transaction import server
from services.transaction.adapters.ledger_store import SqlLedgerStore
from services.transaction.adapters.shards import ShardConfig, ShardMap, ShardMapError
from services.transaction.domain.model import HistoryFilter, LedgerOutcome
from services.transaction.domain.ports import TransferItem
from tests.integration.ledger_stores import funded, key, on_shard

NAMES = ("ledger_shard_a", "ledger_shard_b")


@pytest.fixture(scope="module")
def config(postgres: PostgresServer) -> ShardConfig:
    for name in NAMES:
        postgres.create_database(name)
    shards = ShardConfig.parse(" ".join(postgres.dsn(name) for name in NAMES))
    server.migrate(shards)
    server.migrate(shards)  # a second migrate finds the claims its own
    return shards


@pytest.fixture
async def store(config: ShardConfig) -> AsyncIterator[SqlLedgerStore]:
    databases = ShardMap.of(config, lambda url: db.create_driver_pool(url, size=2))
    for pool in databases.databases():
        await pool.open()
    yield SqlLedgerStore(databases)
    for pool in databases.databases():
        await pool.close()


def rows_in(postgres: PostgresServer, name: str, query: str, *args: object) -> list[str]:
    with psycopg.connect(postgres.conninfo(name)) as connection:
        return [str(row[0]) for row in connection.execute(query, args).fetchall()]


async def test_each_database_holds_its_range_and_the_rows_of_its_shards(
    store: SqlLedgerStore, postgres: PostgresServer
) -> None:
    await store.refresh_shards()
    held = [rows_in(postgres, name, "SELECT unnest(ledger_held_shards())") for name in NAMES]
    assert held == [[str(s) for s in range(128)], [str(s) for s in range(128, 256)]]
    ada, bob, cat = on_shard(5), on_shard(100), on_shard(200)
    a, b, c = [await funded(store, who, 1_000) for who in (ada, bob, cat)]
    assert a in rows_in(postgres, NAMES[0], "SELECT id FROM accounts")
    assert c in rows_in(postgres, NAMES[1], "SELECT id FROM accounts")
    assert c not in rows_in(postgres, NAMES[0], "SELECT id FROM accounts")

    # Within one database: one call, as ever; read back by id and by owner.
    paid = await store.transfer(ada, key(), a, b, Money("EUR", 300), "lunch", {})
    assert paid.outcome is LedgerOutcome.OK
    assert paid.transaction is not None
    assert (await store.transaction(paid.transaction.id)) == paid.transaction
    # Shards 5 and 100 (one database, two shards): two legs, which bob sees as the one
    # transfer ada sees.
    received = (await store.history(bob, HistoryFilter(), None, 10))[0]
    assert received == paid.transaction
    wallet_c = await store.wallet(c)
    assert wallet_c is not None
    assert wallet_c.balance == 1_000
    assert [w.id for w in await store.wallets_of(cat)] == [c]

    # Between the two: a transfer is two legs, a debit on ada's database and a credit on
    # cat's (the saga, tests/integration/test_ledger_saga.py), delivered within the call.
    across = await store.transfer(ada, key(), a, c, Money("EUR", 100), "", {})
    assert across.transaction is not None
    assert across.transaction.status == "posted"
    assert across.transaction.id in rows_in(postgres, NAMES[0], "SELECT id FROM transactions")
    assert across.transaction.id not in rows_in(postgres, NAMES[1], "SELECT id FROM transactions")
    assert (await store.history(cat, HistoryFilter(), None, 10))[0] == across.transaction
    assert rows_in(postgres, NAMES[0], "SELECT count(*) FROM ledger_outbox") == ["0"]
    # A batch with transfers within and between them: one outcome each, as ever.
    batch = await store.transfer_batch(
        ada,
        [
            TransferItem(key(), a, c, Money("EUR", 10), "", {}),
            TransferItem(key(), a, b, Money("EUR", 20), "", {}),
        ],
    )
    assert [r.outcome for r in batch] == [LedgerOutcome.OK, LedgerOutcome.OK]
    balances = [await store.wallet(w) for w in (a, b, c)]
    assert [w.balance if w else None for w in balances] == [570, 1_320, 1_110]
    assert await store.audit() == []


async def test_sweeps_and_the_audit_cover_every_database(
    store: SqlLedgerStore, postgres: PostgresServer
) -> None:
    payer, merchant = on_shard(250), on_shard(251)
    p, m = await funded(store, payer, 500), await funded(store, merchant, 0)
    soon = datetime.now(UTC) + timedelta(seconds=1)
    held = await store.create_hold(payer, key(), p, m, Money("EUR", 50), soon, "")
    assert held.hold is not None
    released = await store.expire_holds(soon + timedelta(seconds=1), 100)
    assert (p, payer) in released
    # A finding on the second database is reported as that database's.
    # (Committed, for the store's connections to see it; put back after.)
    tamper = "UPDATE accounts SET balance = balance + %s WHERE id = %s"
    with psycopg.connect(postgres.conninfo(NAMES[1]), autocommit=True) as connection:
        connection.execute("SET session_replication_role = replica")  # no guards
        connection.execute(tamper, (1, p))
        try:
            findings = await store.audit()
        finally:
            connection.execute(tamper, (-1, p))
    # Reported as the second database's, and (the books of all of them no longer
    # balancing) across them.
    of_one = [f.subject for f in findings if not f.check.endswith("_across")]
    assert of_one
    assert all(subject.startswith("database 2: ") for subject in of_one)
    across = [(f.check, f.subject, f.actual) for f in findings if f.check.endswith("_across")]
    assert across == [("books_balance_across", "all databases EUR", "1")]
    assert await store.audit() == []


async def test_once_placed_the_databases_say_where_the_shards_are(
    config: ShardConfig, postgres: PostgresServer
) -> None:
    """The configured split is the first one only: a later, different one changes
    nothing (shards are moved, not re-split: tests/integration/test_ledger_shard_move.py),
    and a database added to the list holds none. A map with a shard held twice is
    refused by migrate and by the store."""
    postgres.create_database("ledger_shard_c")
    urls = (*config.database_urls, postgres.dsn("ledger_shard_c"))
    regrouped = ShardConfig(
        urls, (frozenset(range(64)), frozenset(range(64, 200)), frozenset(range(200, 256)))
    )
    server.migrate(regrouped)
    held = [
        rows_in(postgres, name, "SELECT unnest(ledger_held_shards())")
        for name in (*NAMES, "ledger_shard_c")
    ]
    assert held == [[str(s) for s in range(128)], [str(s) for s in range(128, 256)], []]
    databases = ShardMap.of(regrouped, lambda url: db.create_driver_pool(url, size=1))
    for pool in databases.databases():
        await pool.open()
    try:
        store = SqlLedgerStore(databases)
        await store.refresh_shards()
        ada = on_shard(100)  # on the first database, not where the configured split puts it
        wallet = await funded(store, ada, 10)
        assert wallet in rows_in(postgres, NAMES[0], "SELECT id FROM accounts")
        with psycopg.connect(postgres.conninfo("ledger_shard_c"), autocommit=True) as connection:
            connection.execute("INSERT INTO ledger_shards (shard) VALUES (100)")
            try:
                with pytest.raises(ShardMapError, match="shard 100 is in databases 1 and 3"):
                    server.migrate(regrouped)
                with pytest.raises(ShardMapError, match="shard 100 is in databases 1 and 3"):
                    await store.refresh_shards()
                # The map as it was: the wallet still reached where it is.
                assert await store.wallet(wallet) is not None
            finally:
                connection.execute("DELETE FROM ledger_shards")
    finally:
        for pool in databases.databases():
            await pool.close()
