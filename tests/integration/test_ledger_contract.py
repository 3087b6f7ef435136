"""The contract between the ledger's SQL and this service: every outcome word a ledger
function in the migrated database can return is a LedgerOutcome, and every refusal among
them is mapped to the error a caller sees. Read from the database itself (the functions'
source in pg_proc), so a new outcome in a migration fails here until it is mapped."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest

from services.localmesh.postgres import PostgresServer
from services.runtime.migrations import upgrade_to_head
from services.transaction.adapters.codec import HoldJson, TransactionJson, WalletJson
from services.transaction.adapters.ledger_sql import TRANSACTION_JSON_SQL, WALLET_JSON_SQL
from services.transaction.domain.ledger import refusal_for
from services.transaction.domain.model import ACCEPTED_OUTCOMES, LedgerOutcome

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "transaction" / "migrations"
DATABASE = "ledger_contract"
# How a function spells an outcome: '{"outcome": "word"}' or jsonb_build_object('outcome', 'word').
_OUTCOME = re.compile(r"""(?:"outcome"\s*:\s*"|'outcome'\s*,\s*')([a-z_]+)["']""")


@pytest.fixture(scope="module")
def conninfo(postgres: PostgresServer) -> str:
    postgres.create_database(DATABASE)
    upgrade_to_head(MIGRATIONS, postgres.dsn(DATABASE))
    return postgres.conninfo(DATABASE)


def outcomes_in_sql(connection: psycopg.Connection[tuple[str, str]]) -> dict[str, set[str]]:
    """Outcome word -> the ledger functions that can return it."""
    found: dict[str, set[str]] = {}
    rows = connection.execute(
        "SELECT p.proname, p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'public' AND p.proname LIKE 'ledger\\_%'"
    ).fetchall()
    for name, source in rows:
        for word in _OUTCOME.findall(source):
            found.setdefault(word, set()).add(name)
    return found


def unmapped(found: dict[str, set[str]]) -> list[str]:
    problems = []
    for word, functions in sorted(found.items()):
        try:
            outcome = LedgerOutcome(word)
        except ValueError:
            problems.append(f"{word!r} (from {', '.join(sorted(functions))}) is no LedgerOutcome")
            continue
        if outcome not in ACCEPTED_OUTCOMES and refusal_for(outcome) is None:
            problems.append(f"{word!r} is a refusal no error is mapped to")
    return problems


def test_every_outcome_of_the_sql_is_known_and_mapped(conninfo: str) -> None:
    with psycopg.connect(conninfo) as connection:
        found = outcomes_in_sql(connection)
    assert unmapped(found) == []
    # And the other way round: no word of ours is one the SQL never says.
    assert set(LedgerOutcome) == {LedgerOutcome(word) for word in found}


def test_a_new_outcome_in_the_sql_fails_the_contract(conninfo: str) -> None:
    """What a migration adding an outcome nobody mapped looks like (rolled back)."""
    with psycopg.connect(conninfo) as connection:
        connection.execute(
            "CREATE FUNCTION ledger_contract_probe() RETURNS jsonb LANGUAGE sql"
            """ AS $$ SELECT '{"outcome": "limit_reached"}'::jsonb $$"""
        )
        found = outcomes_in_sql(connection)
        connection.rollback()
    assert unmapped(found) == ["'limit_reached' (from ledger_contract_probe) is no LedgerOutcome"]


@pytest.mark.parametrize(
    ("function", "row_type", "document"),
    [
        ("ledger_wallet_json", "accounts", WalletJson),
        ("ledger_txn_json", "transactions", TransactionJson),
        ("ledger_hold_json", "holds", HoldJson),
    ],
)
def test_the_json_documents_of_the_sql_are_the_codecs(
    conninfo: str, function: str, row_type: str, document: type
) -> None:
    """The keys a ledger JSON function writes are the keys of the codec's TypedDict (a
    NULL row gives every key, with null values)."""
    with psycopg.connect(conninfo) as connection:
        arguments = connection.execute(
            "SELECT pronargs FROM pg_proc WHERE proname = %s", (function,)
        ).fetchone()
        assert arguments is not None
        extra = ", NULL" * (arguments[0] - 1)
        row = connection.execute(f"SELECT {function}(NULL::{row_type}{extra})").fetchone()
    assert row is not None
    assert set(row[0]) == set(document.__annotations__)


@pytest.mark.parametrize(
    ("select", "document"),
    [
        # The store's constant fragments, no input: not an injection.
        (f"SELECT {WALLET_JSON_SQL} FROM (SELECT (NULL::accounts).*) a", WalletJson),  # noqa: S608
        (
            f"SELECT {TRANSACTION_JSON_SQL} FROM (SELECT (NULL::transactions).*) t"  # noqa: S608
            " LEFT JOIN accounts sa ON false LEFT JOIN accounts da ON false",
            TransactionJson,
        ),
    ],
    ids=["wallet", "transaction"],
)
def test_the_stores_reads_build_the_codecs_documents(
    conninfo: str, select: str, document: type
) -> None:
    with psycopg.connect(conninfo) as connection:
        row = connection.execute(select).fetchone()
    assert row is not None
    assert set(row[0]) == set(document.__annotations__)
