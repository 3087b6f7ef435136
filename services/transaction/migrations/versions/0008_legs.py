"""Movements between two logical shards as two legs, one balanced transaction on each
shard, through in-transit accounts (`services/transaction/sql/0008_legs/legs.sql`):
transfers, captures of holds, refunds and batches whose wallets are on two shards. Both
legs commit in the call that makes them while both shards are in one database; each
shard's books then balance by themselves, so a shard can later be moved to another
database whole. The audit checks it (each shard balanced, legs paired, nothing in
transit).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from pathlib import Path

from services.runtime.migrations import execute_sql_files, restore_previous_versions

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SQL = Path(__file__).resolve().parents[2] / "sql" / "0008_legs"
NEW_VERSIONS = (
    "results.sql",
    "transfers.sql",
    "holds.sql",
    "refunds.sql",
    "batches.sql",
    "audit.sql",
)


def upgrade() -> None:
    execute_sql_files(SQL, "schema.sql", "legs.sql", *NEW_VERSIONS)


def downgrade() -> None:
    restore_previous_versions(SQL, *NEW_VERSIONS)
    execute_sql_files(SQL, "down.sql")
