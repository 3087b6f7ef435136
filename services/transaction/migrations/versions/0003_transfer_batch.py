"""Batches of transfers: several transfers of one owner in one call, one round trip and
one commit, each with its own idempotency key and its own outcome
(`services/transaction/sql/0003_transfer_batch/batches.sql` says how).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from pathlib import Path

from services.runtime.migrations import execute_sql_files

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SQL = Path(__file__).resolve().parents[2] / "sql" / "0003_transfer_batch"


def upgrade() -> None:
    execute_sql_files(SQL, "batches.sql")


def downgrade() -> None:
    execute_sql_files(SQL, "down.sql")
