"""One database's side of the movements between databases, read in one snapshot
(REPEATABLE READ, read only) for the audit across databases (domain/audit_across.py).
A leg is "between databases" when the other leg's shard is not one this database holds
(ledger_shards, held)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from services.runtime.db import RetryingPool
from services.transaction.domain.audit_across import CreditLeg, DebitLeg, LegSample

_TOTALS = "SELECT currency, sum(balance) FROM accounts GROUP BY currency"
_TRANSIT = """SELECT ledger_shard_of(id), peer_shard, currency, balance FROM accounts
    WHERE kind = 'in_transit' AND peer_shard NOT IN (SELECT s.shard FROM ledger_shards AS s
        WHERE s.state = 'held')"""
_DEBITS = """SELECT id::text, ledger_shard_of(id), ledger_shard_of(counterpart_id),
    counterpart_id::text, amount, currency, status FROM transactions
    WHERE leg = 'debit'
      AND ledger_shard_of(counterpart_id) NOT IN (SELECT s.shard FROM ledger_shards AS s
        WHERE s.state = 'held')"""
_CREDITS = """SELECT counterpart_id::text, ledger_shard_of(id),
    ledger_shard_of(counterpart_id), amount, currency FROM transactions
    WHERE leg = 'credit'
      AND ledger_shard_of(counterpart_id) NOT IN (SELECT s.shard FROM ledger_shards AS s
        WHERE s.state = 'held')"""
_REFUSED = "SELECT transaction_id::text, ledger_shard_of(transaction_id) FROM ledger_refused_legs"
_OUTBOX = "SELECT transaction_id::text, amount FROM ledger_outbox"


async def sample_legs(database: RetryingPool) -> LegSample:
    async def read(connection: AsyncConnection[Any]) -> LegSample:
        # The pool's connections autocommit: this one snapshot is begun, and ended, here.
        await connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        try:

            async def rows(sql: str) -> list[Any]:
                cursor = await connection.execute(sql)
                return await cursor.fetchall()

            return LegSample(
                totals={currency: int(total) for currency, total in await rows(_TOTALS)},
                transit={
                    (shard, peer, currency): balance
                    for shard, peer, currency, balance in await rows(_TRANSIT)
                },
                debits={
                    id_: DebitLeg(shard, peer, credit_id, amount, currency, status)
                    for id_, shard, peer, credit_id, amount, currency, status in await rows(_DEBITS)
                },
                credits={
                    debit_id: CreditLeg(shard, peer, amount, currency)
                    for debit_id, shard, peer, amount, currency in await rows(_CREDITS)
                },
                refused=dict(await rows(_REFUSED)),
                outbox=dict(await rows(_OUTBOX)),
            )
        finally:
            await connection.execute("ROLLBACK")

    return await database.run(read)
