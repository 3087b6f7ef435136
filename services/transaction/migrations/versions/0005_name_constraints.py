"""Our names for the ten CHECK constraints that the first 0001-0004 (SQL in Python
strings) left to PostgreSQL (`holds_check1`, `transactions_check4`, ...). Those revisions
were rewritten to load `services/transaction/sql/`, where every constraint is named; a
database they made (a `make run` database of before) still has the generated names, and
this renames them. On a database made by the files it changes nothing.

Downgrade does nothing: the rewritten 0001 names the constraints the same way.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from pathlib import Path

from services.runtime.migrations import execute_sql_files

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SQL = Path(__file__).resolve().parents[2] / "sql" / "0005_name_constraints"


def upgrade() -> None:
    execute_sql_files(SQL, "rename.sql")


def downgrade() -> None:
    pass
