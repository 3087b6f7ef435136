"""A top-up or withdrawal refused before anything was sent to its provider (the gateway's
breaker open, the provider unreachable) gives its idempotency key back, so that a retry
with the same key tries the provider again instead of being answered the same 503 forever
(`services/transaction/sql/0004_release_unsent_external/unsent_external.sql`).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from pathlib import Path

from services.runtime.migrations import execute_sql_files

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SQL = Path(__file__).resolve().parents[2] / "sql" / "0004_release_unsent_external"


def upgrade() -> None:
    execute_sql_files(SQL, "unsent_external.sql")


def downgrade() -> None:
    execute_sql_files(SQL, "down.sql")
