"""How the store talks to one of the ledger's databases: statements through its retrying
pool (each safe to run twice: a read, or a ledger function with its idempotency key or
its own once-only rule, so RetryingPool may run it again on a fresh connection), and the
documents its reads build."""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import namedtuple_row

from services.runtime.db import RetryingPool


@functools.cache
def driver_sql(statement: str) -> str:
    """`:name` parameters (readable, as in SQLAlchemy) → psycopg's `%(name)s`; each
    constant statement is converted once."""
    return re.sub(r"(?<![:\w]):([a-z_]+)", r"%(\1)s", statement)


async def fetch_rows(database: RetryingPool, sql: str, params: dict[str, Any]) -> list[Any]:
    async def fetch(connection: AsyncConnection[Any]) -> list[Any]:
        cursor = connection.cursor(row_factory=namedtuple_row)
        await cursor.execute(driver_sql(sql), params)
        return await cursor.fetchall()

    return await database.run(fetch)


async def fetch_one(database: RetryingPool, sql: str, params: dict[str, Any]) -> Any:
    """The first column of the first row (None: no row)."""
    rows = await fetch_rows(database, sql, params)
    return rows[0][0] if rows else None


async def fetch_document(
    database: RetryingPool, sql: str, params: dict[str, Any]
) -> dict[str, Any] | None:
    """A JSON document the statement returns (psycopg gives json as a dict already,
    text as a string)."""
    document = await fetch_one(database, sql, params)
    if document is None or isinstance(document, dict):
        return document
    loaded: dict[str, Any] = json.loads(document)
    return loaded


# The documents the store's own reads build (json_build_object, cheaper than a call of
# the ledger's jsonb functions on the hot read path): the keys of the codec's WalletJson
# and TransactionJson, checked by tests/integration/test_ledger_contract.py. A leg of a
# movement between shards shows the other side's wallet and owner in place of its
# in-transit account, as ledger_txn_json does (sql/0006_shards/results.sql).
WALLET_JSON_SQL = """json_build_object('id', a.id, 'owner_id', a.owner_id, 'currency', a.currency,
    'balance', a.balance, 'held', a.held, 'overdraft_limit', a.overdraft_limit,
    'status', a.status, 'created_at', a.created_at)"""

# The id a transaction is shown with: a credit leg shows its debit leg's.
SHOWN_ID = "CASE WHEN t.leg = 'credit' THEN t.counterpart_id ELSE t.id END"

TRANSACTION_JSON_SQL = f"""json_build_object('id', {SHOWN_ID}, 'type', t.type, 'status', t.status,
    'amount', t.amount, 'currency', t.currency, 'fee', t.fee,
    'source_account_id',
    CASE WHEN t.leg = 'credit' THEN t.counterparty_account_id ELSE t.source_account_id END,
    'destination_account_id',
    CASE WHEN t.leg = 'debit' THEN t.counterparty_account_id ELSE t.destination_account_id END,
    'source_owner_id',
    CASE WHEN t.leg = 'credit' THEN t.counterparty_owner_id ELSE sa.owner_id END,
    'destination_owner_id',
    CASE WHEN t.leg = 'debit' THEN t.counterparty_owner_id ELSE da.owner_id END, 'memo', t.memo,
    'metadata', t.metadata, 'receipt_number', t.receipt_number,
    'refunded_amount', t.refunded_amount,
    'refund_of', CASE WHEN t.refund_of IS NOT NULL THEN ledger_shown_refund_of(t) END,
    'hold_id', t.hold_id,
    'initiated_by', t.initiated_by, 'created_at', t.created_at,
    'payment_provider', t.payment_provider, 'failure_code', t.failure_code,
    'failure_message', t.failure_message)"""

TRANSACTION_FROM = """FROM transactions t
    LEFT JOIN accounts sa ON sa.id = t.source_account_id
    LEFT JOIN accounts da ON da.id = t.destination_account_id"""

TRANSACTION_BY_ID = (
    f"SELECT {TRANSACTION_JSON_SQL} {TRANSACTION_FROM} WHERE t.id = CAST(:id AS uuid)"
)
