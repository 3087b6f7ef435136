"""What the tests of the ledger's store on several databases share: ids on a chosen
logical shard, fresh idempotency keys, funded wallets, legs a crashed instance left."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import psycopg

from services.localmesh.postgres import PostgresServer
from services.runtime import db
from services.runtime.money import Money
from services.transaction import server
from services.transaction.adapters.ledger_store import SqlLedgerStore
from services.transaction.adapters.saga import LegSettings
from services.transaction.adapters.shards import ShardConfig, ShardMap
from services.transaction.domain.model import IdempotencyKey, LedgerOutcome

# The operator who funds the tests' wallets (adjustments need one).
OPERATOR = str(uuid.uuid4())


def migrated(postgres: PostgresServer, database: str) -> ShardConfig:
    """A new database of the session's server, at the ledger's latest revision."""
    postgres.create_database(database)
    config = ShardConfig.parse(postgres.dsn(database))
    server.migrate(config)
    return config


@asynccontextmanager
async def opened(config: ShardConfig, **options: Any) -> AsyncIterator[SqlLedgerStore]:
    """A store on the databases of `config` (pools of 8), its shard map read."""
    databases = ShardMap.of(config, lambda url: db.create_driver_pool(url, size=8))
    for pool in databases.databases():
        await pool.open()
    try:
        store = SqlLedgerStore(databases, **options)
        await store.refresh_shards()
        yield store
    finally:
        for pool in databases.databases():
            await pool.close()


def on_shard(shard: int) -> str:
    """A new id (a user's) whose home shard is `shard`: its last byte."""
    return str(uuid.UUID(bytes=uuid.uuid4().bytes[:15] + bytes([shard])))


def key() -> IdempotencyKey:
    return IdempotencyKey(str(uuid.uuid4()), uuid.uuid4().hex)


async def funded(store: SqlLedgerStore, owner: str, amount: int) -> str:
    """A new EUR wallet of `owner` holding `amount`."""
    made = await store.create_wallet(owner, key(), "EUR")
    assert made.wallet is not None
    if amount:
        adjusted = await store.adjust(OPERATOR, key(), made.wallet.id, Money("EUR", amount), "")
        assert adjusted.outcome is LedgerOutcome.OK
    return made.wallet.id


async def debit_legs_only(
    store: SqlLedgerStore,
    conninfo: str,
    owner: str,
    source: str,
    target: str,
    amounts: list[int],
    first_attempt: datetime,
) -> list[str]:
    """Transfers to another database as an instance that dies right after booking them
    leaves them: debit legs with their outbox rows in the payer's database (`conninfo`),
    nothing delivered, the relay's first attempt at `first_attempt`. Their ids."""
    payee = json.dumps(await store.legs.payee(target))
    debits = []
    with psycopg.connect(conninfo, autocommit=True) as connection:
        for amount in amounts:
            request = key()
            row = connection.execute(
                "SELECT ledger_transfer(%s, %s, %s, %s, %s, %s, 'EUR', '', '{}', %s, %s)",
                (
                    owner,
                    request.key,
                    request.request_hash,
                    source,
                    target,
                    amount,
                    payee,
                    first_attempt,
                ),
            ).fetchone()
            assert row is not None
            debits.append(str(row[0]["transaction"]["id"]))
    return debits


class Instance:
    """One transaction-service instance's ledger store: its own pools and shard map."""

    def __init__(self, config: ShardConfig, legs: LegSettings) -> None:
        self.databases = ShardMap.of(config, lambda url: db.create_driver_pool(url, size=4))
        self.store = SqlLedgerStore(self.databases, legs)

    async def open(self) -> SqlLedgerStore:
        """The store, its pools open and its map read from the databases."""
        for pool in self.databases.databases():
            await pool.open()
        await self.store.refresh_shards()
        return self.store

    async def close(self) -> None:
        await self.store.legs.drain()
        for pool in self.databases.databases():
            await pool.close()
