"""A wallet's balance at an instant (revision 0008), on a real PostgreSQL: the balance
after its last posting made by then, what the holds active then held; postings stamped in
the order of their account's versions even when transfers wait for each other's locks."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from services.localmesh.postgres import PostgresServer
from services.runtime.money import Money
from services.transaction.adapters.ledger_store import SqlLedgerStore
from services.transaction.adapters.shards import ShardConfig
from services.transaction.domain.model import LedgerOutcome
from tests.integration.ledger_stores import OPERATOR, funded, key, migrated, on_shard, opened

DATABASE = "ledger_balance_at"


@pytest.fixture(scope="module")
def config(postgres: PostgresServer) -> ShardConfig:
    return migrated(postgres, DATABASE)


@pytest.fixture
async def store(config: ShardConfig) -> AsyncIterator[SqlLedgerStore]:
    async with opened(config) as made:
        yield made


def now() -> datetime:
    return datetime.now(UTC)


async def test_the_balance_and_what_was_held_at_each_instant(store: SqlLedgerStore) -> None:
    ada, bob = on_shard(3), on_shard(200)
    opened = await store.create_wallet(ada, key(), "EUR")
    assert opened.wallet is not None
    wallet = opened.wallet.id
    merchant = await funded(store, bob, 0)
    empty = now()
    await store.adjust(OPERATOR, key(), wallet, Money("EUR", 1000), "")
    funded_at = now()
    paid = await store.transfer(ada, key(), wallet, merchant, Money("EUR", 300), "", {})
    assert paid.outcome is LedgerOutcome.OK
    paid_at = now()
    hold = await store.create_hold(
        ada, key(), wallet, merchant, Money("EUR", 200), now() + timedelta(hours=1), ""
    )
    assert hold.hold is not None
    holding = now()
    voided = await store.void_hold(bob, key(), hold.hold.id)  # the merchant lets it go
    assert voided.outcome is LedgerOutcome.OK
    after = now()

    seen = {}
    for name, instant in [
        ("empty", empty),
        ("funded", funded_at),
        ("paid", paid_at),
        ("holding", holding),
        ("after", after),
    ]:
        found = await store.balance_at(wallet, instant)
        assert found is not None
        assert found.wallet.id == wallet
        assert found.at == instant
        seen[name] = (found.balance, found.held, found.available)
    assert seen == {
        "empty": (0, 0, 0),
        "funded": (1000, 0, 1000),
        "paid": (700, 0, 700),
        "holding": (700, 200, 500),
        "after": (700, 0, 700),
    }
    assert await store.balance_at(merchant, paid_at) is not None
    assert await store.balance_at(on_shard(3), after) is None  # no such wallet


async def test_postings_are_stamped_in_the_order_of_their_account_versions(
    store: SqlLedgerStore, postgres: PostgresServer
) -> None:
    """Transfers from one wallet at once wait for its row lock: each posting's time still
    follows the version it took, so the last posting by time is the last by version, and
    the balance at any instant is the sum of the postings made by then."""
    ada = on_shard(7)
    source = await funded(store, ada, 100_000)
    payees = [await funded(store, on_shard(n), 0) for n in (7, 8, 9)]
    rng = random.Random(16)
    answers = await asyncio.gather(
        *(
            store.transfer(ada, key(), source, rng.choice(payees), Money("EUR", 10 + i), "", {})
            for i in range(40)
        )
    )
    assert {a.outcome for a in answers} == {LedgerOutcome.OK}
    with psycopg.connect(postgres.conninfo(DATABASE), autocommit=True) as connection:
        rows = connection.execute(
            "SELECT account_version, created_at, amount FROM postings"
            " WHERE account_id = %s ORDER BY account_version",
            (source,),
        ).fetchall()
        # The lookup's index, built concurrently by the migration, is there and valid.
        (valid,) = connection.execute(
            "SELECT i.indisvalid FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid"
            " WHERE c.relname = 'postings_account_created_idx'"
        ).fetchone() or (False,)
    assert valid
    times = [row[1] for row in rows]
    assert len(rows) == 41
    assert times == sorted(times)
    for version, stamped, _ in rows[::5]:
        found = await store.balance_at(source, stamped)
        assert found is not None
        assert found.balance == sum(r[2] for r in rows if r[0] <= version)
