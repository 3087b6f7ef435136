"""Balances at an instant (`services/transaction/sql/0008_balance_at/`): postings are
stamped when written (clock_timestamp(), after their account is locked, so time follows
each account's versions), and indexed by account and time, so a wallet's balance at any
instant is one index lookup.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from pathlib import Path

from alembic import op

from services.runtime.migrations import execute_sql_files

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SQL = Path(__file__).resolve().parents[2] / "sql" / "0008_balance_at"


def upgrade() -> None:
    execute_sql_files(SQL, "schema.sql")
    # CREATE INDEX CONCURRENTLY cannot run in a transaction: each file on its own, committed.
    with op.get_context().autocommit_block():
        execute_sql_files(SQL, "drop_invalid_index.sql", "index.sql")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        execute_sql_files(SQL, "drop_index.sql")
    execute_sql_files(SQL, "down.sql")
