"""The double-entry ledger: accounts, transactions, postings, holds, idempotency keys,
and the plpgsql functions that are the only way the service moves money. The SQL is in
`services/transaction/sql/0001_ledger/` (one file per concern; see the README there).

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from pathlib import Path

from services.runtime.migrations import execute_sql_files

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SQL = Path(__file__).resolve().parents[2] / "sql" / "0001_ledger"
# In dependency order: the tables, then what the functions call before their callers.
UPGRADE = (
    "schema.sql",
    "guards.sql",
    "idempotency.sql",
    "postings.sql",
    "results.sql",
    "accounts.sql",
    "transfers.sql",
    "holds.sql",
    "refunds.sql",
    "operator.sql",
    "audit.sql",
)


def upgrade() -> None:
    execute_sql_files(SQL, *UPGRADE)


def downgrade() -> None:
    execute_sql_files(SQL, "down.sql")
