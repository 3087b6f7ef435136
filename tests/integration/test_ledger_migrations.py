"""The ledger's migrations on real PostgreSQL: up from empty, down to empty (all at once and
one revision at a time) and up again, always to the same schema; every constraint named
in the SQL files, every function defined in one of them; a database made by the revisions
of before the SQL files (generated constraint names) upgraded to the same schema."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from psycopg import sql

from services.localmesh.postgres import PostgresServer
from services.runtime.migrations import alembic_config, previous_version

ROOT = Path(__file__).resolve().parents[2] / "services" / "transaction"
MIGRATIONS = ROOT / "migrations"
SQL = ROOT / "sql"
REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008")

# What PostgreSQL named the CHECK constraints that the revisions of before the SQL files
# (SQL in Python strings, until 0005) left unnamed, and the names 0005 gives them.
GENERATED_NAMES = {
    ("holds", "holds_check"): "holds_captured_amount_check",
    ("holds", "holds_check1"): "holds_distinct_accounts_check",
    ("holds", "holds_check2"): "holds_expiry_check",
    ("transactions", "transactions_check"): "transactions_amount_positive_check",
    ("transactions", "transactions_check1"): "transactions_status_change_amount_check",
    ("transactions", "transactions_check2"): "transactions_refunded_amount_check",
    ("transactions", "transactions_check3"): "transactions_distinct_accounts_check",
    ("transactions", "transactions_check4"): "transactions_refund_of_check",
    ("transactions", "transactions_check5"): "transactions_hold_check",
    ("transactions", "transactions_check6"): "transactions_refundable_type_check",
}

# The schema as the catalog describes it, one sorted list of rows per kind of object.
CATALOG = {
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attnum
          FROM pg_attribute AS a
          JOIN pg_class AS c ON c.oid = a.attrelid
          LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
           AND c.relname <> 'alembic_version' AND a.attnum > 0 AND NOT a.attisdropped""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
          FROM pg_constraint
         WHERE connamespace = 'public'::regnamespace
           AND conrelid <> 'alembic_version'::regclass""",
    "indexes": """
        SELECT indexname, indexdef FROM pg_indexes
         WHERE schemaname = 'public' AND tablename <> 'alembic_version'""",
    "functions": """
        SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid)
          FROM pg_proc AS p WHERE p.pronamespace = 'public'::regnamespace""",
    "triggers": """
        SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal""",
    "sequences": """
        SELECT sequencename, data_type::text, min_value, max_value, cycle
          FROM pg_sequences WHERE schemaname = 'public'""",
}

Catalog = dict[str, list[tuple[object, ...]]]


def catalog(conninfo: str) -> Catalog:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return {kind: sorted(conn.execute(query).fetchall()) for kind, query in CATALOG.items()}


def current_revision(conninfo: str) -> str | None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if row is None else str(row[0])


class MigratedDatabase:
    """A database of its own on the session's server, and alembic pointed at it."""

    def __init__(self, postgres: PostgresServer, name: str) -> None:
        postgres.create_database(name)
        self.conninfo = postgres.conninfo(name)
        self.config: Config = alembic_config(MIGRATIONS, postgres.dsn(name))

    def upgrade(self, target: str = "head") -> None:
        command.upgrade(self.config, target)

    def downgrade(self, target: str = "base") -> None:
        command.downgrade(self.config, target)


@pytest.fixture(scope="module")
def head_catalog(postgres: PostgresServer) -> Catalog:
    """The schema the revisions make from an empty database."""
    database = MigratedDatabase(postgres, "ledger_migrations_head")
    database.upgrade()
    assert current_revision(database.conninfo) == REVISIONS[-1]
    return catalog(database.conninfo)


def assert_empty(conninfo: str) -> None:
    left = catalog(conninfo)
    assert {kind: rows for kind, rows in left.items() if rows} == {}


def test_migrations_go_down_to_empty_and_up_to_the_same_schema(
    postgres: PostgresServer, head_catalog: Catalog
) -> None:
    database = MigratedDatabase(postgres, "ledger_migrations_cycle")
    database.upgrade()
    assert catalog(database.conninfo) == head_catalog
    database.downgrade()
    assert_empty(database.conninfo)
    database.upgrade()
    assert catalog(database.conninfo) == head_catalog


def test_each_revision_goes_down_and_up_on_its_own(
    postgres: PostgresServer, head_catalog: Catalog
) -> None:
    database = MigratedDatabase(postgres, "ledger_migrations_steps")
    database.upgrade()
    for below in reversed((None, *REVISIONS[:-1])):
        database.downgrade("-1")
        assert current_revision(database.conninfo) == below
    assert_empty(database.conninfo)
    for revision in REVISIONS:
        database.upgrade("+1")
        assert current_revision(database.conninfo) == revision
    assert catalog(database.conninfo) == head_catalog


def test_a_database_of_the_old_revisions_upgrades_to_the_same_schema(
    postgres: PostgresServer, head_catalog: Catalog
) -> None:
    """0001-0004 of before left ten CHECK constraints to PostgreSQL's naming; everything
    else they made is what the files make (compared once with pg_dump when the SQL moved).
    Such a database, at 0004, is rebuilt here by giving those constraints their generated
    names back; 0005 must name them ours."""
    database = MigratedDatabase(postgres, "ledger_migrations_old")
    database.upgrade("0004")
    with psycopg.connect(database.conninfo, autocommit=True) as conn:
        for (table, generated), ours in GENERATED_NAMES.items():
            conn.execute(
                sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                    sql.Identifier(table),
                    sql.Identifier(ours),
                    sql.Identifier(generated),
                )
            )
    assert catalog(database.conninfo) != head_catalog
    database.upgrade()
    assert catalog(database.conninfo) == head_catalog


def sql_files() -> list[Path]:
    return sorted(SQL.glob("*/*.sql"))


def test_every_constraint_has_a_name_written_in_the_sql(head_catalog: Catalog) -> None:
    written = {
        name for path in sql_files() for name in re.findall(r"CONSTRAINT (\w+)", path.read_text())
    }
    in_database = {str(row[1]) for row in head_catalog["constraints"]}
    assert in_database - written == set()


def test_every_function_is_created_or_replaced_in_one_concern(head_catalog: Catalog) -> None:
    """One file name per function (a later revision may bring a new version of the file,
    under the same name), always with CREATE OR REPLACE."""
    concerns: dict[str, set[str]] = defaultdict(set)
    for path in sql_files():
        text = path.read_text()
        assert not re.search(r"CREATE FUNCTION", text), f"{path}: use CREATE OR REPLACE"
        for name in re.findall(r"CREATE OR REPLACE FUNCTION (\w+)\(", text):
            concerns[name].add(path.name)
    in_database = {str(row[0]).split("(")[0] for row in head_catalog["functions"]}
    assert set(concerns) == in_database
    assert {name: files for name, files in concerns.items() if len(files) > 1} == {}


def test_previous_version_is_the_newest_earlier_file_of_that_name(tmp_path: Path) -> None:
    for folder, name in (
        ("0001_a", "audit.sql"),
        ("0003_b", "audit.sql"),
        ("0004_c", "audit.sql"),
        ("0002_d", "other.sql"),
    ):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_text("")
    assert previous_version(tmp_path / "0004_c", "audit.sql") == tmp_path / "0003_b" / "audit.sql"
    assert previous_version(tmp_path / "0003_b", "audit.sql") == tmp_path / "0001_a" / "audit.sql"
    with pytest.raises(FileNotFoundError):
        previous_version(tmp_path / "0001_a", "audit.sql")
