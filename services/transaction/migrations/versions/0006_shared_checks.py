"""The checks every movement of money shares, defined once (`checks.sql`: the arguments,
what a wallet can pay, why a payment between two wallets is refused, the lock order), and
new versions of the files whose functions repeated them (accounts, transfers, holds,
refunds, operator, external payments). Behaviour unchanged: the same outcomes for the
same requests, the same locks in the same order.

The first revision to change functions the way `services/transaction/sql/README.md`
says: new versions of the files, in this revision's folder; downgrade re-applies the
versions of before.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from pathlib import Path

from services.runtime.migrations import execute_sql_files, restore_previous_versions

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SQL = Path(__file__).resolve().parents[2] / "sql" / "0006_shared_checks"
NEW_VERSIONS = (
    "accounts.sql",
    "transfers.sql",
    "holds.sql",
    "refunds.sql",
    "operator.sql",
    "external_payments.sql",
)


def upgrade() -> None:
    execute_sql_files(SQL, "checks.sql", *NEW_VERSIONS)


def downgrade() -> None:
    restore_previous_versions(SQL, *NEW_VERSIONS)
    execute_sql_files(SQL, "down.sql")
