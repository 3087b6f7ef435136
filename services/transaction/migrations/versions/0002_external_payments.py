"""Top-ups and withdrawals: money that enters or leaves the ledger through a payment
provider, as transactions that stay *pending* until the provider answers (the columns and
statuses of `transactions` they need are in 0001's schema). Adds `external_payments`, the
reconciler's queue, and the functions that reserve, settle and claim them. The SQL is in
`services/transaction/sql/0002_external_payments/`.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from pathlib import Path

from services.runtime.migrations import execute_sql_files

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SQL = Path(__file__).resolve().parents[2] / "sql" / "0002_external_payments"


def upgrade() -> None:
    execute_sql_files(SQL, "schema.sql", "external_payments.sql")


def downgrade() -> None:
    execute_sql_files(SQL, "down.sql")
