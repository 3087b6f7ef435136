"""Group commit (`services/transaction/sql/0007_group_commit/`): `ledger_transfer_group`
books the single transfers of several callers that reached one instance together in one
call and one commit, each exactly as `ledger_transfer` books it alone; it locks what its
transfers need up front as batches do, so that lock-up is one function both call
(`ledger_lock_transfers`; a new version of `batches.sql`).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from pathlib import Path

from services.runtime.migrations import execute_sql_files, restore_previous_versions

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SQL = Path(__file__).resolve().parents[2] / "sql" / "0007_group_commit"


NEW_VERSIONS = ("batches.sql",)


def upgrade() -> None:
    execute_sql_files(SQL, "groups.sql", *NEW_VERSIONS)


def downgrade() -> None:
    restore_previous_versions(SQL, *NEW_VERSIONS)
    execute_sql_files(SQL, "down.sql")
