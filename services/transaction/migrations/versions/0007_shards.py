"""The ledger on logical shards (`services/transaction/sql/0007_shards/`): every id the
ledger makes carries its shard in its last byte (a wallet its owner's home shard, a
transaction its source account's, a hold its payer's), receipt numbers name their
shard, settlement accounts are one per currency and shard, and `ledger_shards` says
which of the 256 logical shards this database holds.

A database made before this revision keeps the ids it has (random, so their last byte
names no shard of theirs): it can only run as the one database of a ledger.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from pathlib import Path

from services.runtime.migrations import execute_sql_files, restore_previous_versions

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SQL = Path(__file__).resolve().parents[2] / "sql" / "0007_shards"
NEW_VERSIONS = ("accounts.sql", "operator.sql", "external_payments.sql")


def upgrade() -> None:
    execute_sql_files(SQL, "shards.sql", "schema.sql", *NEW_VERSIONS)


def downgrade() -> None:
    restore_previous_versions(SQL, *NEW_VERSIONS)
    execute_sql_files(SQL, "down.sql")
