"""The ledger's schema and plpgsql functions on real PostgreSQL, called with psycopg the way
the transaction service calls them: one function call, one transaction, one round trip."""

from __future__ import annotations

import random
import re
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from services.localmesh.postgres import PostgresServer
from services.runtime.migrations import upgrade_to_head
from services.transaction.adapters.codec import HoldJson, TransactionJson, WalletJson
from tests.integration.ledger_client import (
    OPERATOR,
    LedgerClient,
    Result,
    batch_item,
    funded_wallet,
    request_hash,
    run_threads,
    transfer_batch,
    user,
)

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "transaction" / "migrations"
# The keys of the ledger's JSON documents: the codec's, one definition
# (tests/integration/test_ledger_contract.py checks them against the SQL too).
TXN_KEYS = set(TransactionJson.__annotations__)
WALLET_KEYS = set(WalletJson.__annotations__)
HOLD_KEYS = set(HoldJson.__annotations__)


# --- fixtures and helpers ---------------------------------------------------------------


def postings_of(ledger: LedgerClient, transaction_id: str) -> list[tuple[Any, ...]]:
    return ledger.conn.execute(
        "SELECT account_id::text, currency, amount, balance_after, account_version"
        " FROM postings WHERE transaction_id = %s ORDER BY amount",
        (transaction_id,),
    ).fetchall()


# --- wallets and transfers ---------------------------------------------------------------


def test_create_wallet_returns_the_contract_shape(ledger: LedgerClient) -> None:
    owner = user()
    result = ledger.create_wallet(owner, "EUR")
    assert set(result) == {"outcome", "wallet"}
    wallet = result["wallet"]
    assert set(wallet) == WALLET_KEYS
    assert wallet["owner_id"] == str(owner)
    assert (wallet["currency"], wallet["balance"], wallet["held"]) == ("EUR", 0, 0)
    assert (wallet["status"], wallet["overdraft_limit"]) == ("active", 0)
    datetime.fromisoformat(wallet["created_at"])
    assert ledger.create_wallet(owner, "USD")["outcome"] == "ok"
    assert ledger.create_wallet(owner, "EUR") == {"outcome": "wallet_exists"}


def shard_of(id_: str) -> int:
    return uuid.UUID(id_).bytes[15]


def test_every_id_the_ledger_makes_names_its_shard(ledger: LedgerClient) -> None:
    """A wallet on its owner's home shard (the last byte of the user id), a transaction on
    its source account's, a hold on its payer's; the receipt number names the shard too."""
    ada, bob = user(3), user(250)
    a, b = funded_wallet(ledger, ada, 1_000), funded_wallet(ledger, bob, 1_000)
    assert (shard_of(a), shard_of(b)) == (3, 250)
    paid = ledger.transfer(ada, a, b, 100)["transaction"]
    assert shard_of(paid["id"]) == 3
    assert paid["receipt_number"].startswith("R-03-")
    back = ledger.transfer(bob, b, a, 40)["transaction"]
    assert (shard_of(back["id"]), back["receipt_number"][:5]) == (250, "R-fa-")
    hold = ledger.create_hold(bob, b, a, 10)["hold"]
    assert shard_of(hold["id"]) == 250
    # Between shards, a movement is shown with its debit leg's id, on the payer's shard.
    captured = ledger.capture_hold(ada, hold["id"], None)
    assert shard_of(captured["transaction"]["id"]) == 250
    assert captured["hold"]["capture_transaction_id"] == captured["transaction"]["id"]
    refund = ledger.refund(bob, paid["id"], 10)["transaction"]
    assert shard_of(refund["id"]) == 250  # the refunder pays
    frozen = ledger.set_status(OPERATOR, a, "frozen")["transaction"]
    assert shard_of(frozen["id"]) == 3  # no source: the wallet's shard
    # Money from outside comes through the settlement account of the wallet's shard.
    assert {shard_of(ledger.settlement(w)) for w in (a, b)} == {3, 250}
    assert ledger.audit() == []


def test_a_database_claims_its_shards_once(postgres: PostgresServer) -> None:
    """The first claim is what the database holds; a later, different one changes nothing
    (moving a shard is another procedure). One that holds none writes none."""
    postgres.create_database("ledger_claims")
    upgrade_to_head(MIGRATIONS, postgres.dsn("ledger_claims"))
    with psycopg.connect(postgres.conninfo("ledger_claims"), autocommit=True) as connection:
        ledger = LedgerClient(connection)
        assert ledger.scalar("SELECT ledger_held_shards()") == []
        with pytest.raises(
            psycopg.errors.ObjectNotInPrerequisiteState, match="shard 1 is not held"
        ):
            ledger.create_wallet(uuid.UUID(int=1))
        assert ledger.scalar("SELECT ledger_claim_shards('{0,1,2}')") == [0, 1, 2]
        assert ledger.scalar("SELECT ledger_claim_shards('{9}')") == [0, 1, 2]
        assert ledger.scalar("SELECT ledger_held_shards()") == [0, 1, 2]
        assert ledger.create_wallet(uuid.UUID(int=1))["outcome"] == "ok"


def test_transfer_moves_money_with_balanced_versioned_postings(ledger: LedgerClient) -> None:
    ada, bob = user(), user()
    source = funded_wallet(ledger, ada, 10_000)
    destination = funded_wallet(ledger, bob, 500)

    result = ledger.transfer(ada, source, destination, 2_500, memo="lunch", metadata={"x": "y"})

    assert set(result) == {"outcome", "transaction"}
    assert result["outcome"] == "ok"
    txn = result["transaction"]
    assert set(txn) == TXN_KEYS
    assert txn["type"] == "transfer"
    assert txn["status"] == "posted"
    assert (txn["amount"], txn["currency"], txn["fee"], txn["refunded_amount"]) == (
        2_500,
        "EUR",
        0,
        0,
    )
    assert (txn["source_account_id"], txn["destination_account_id"]) == (source, destination)
    assert (txn["source_owner_id"], txn["destination_owner_id"]) == (str(ada), str(bob))
    assert (txn["memo"], txn["metadata"], txn["initiated_by"]) == ("lunch", {"x": "y"}, str(ada))
    assert txn["refund_of"] is None
    assert txn["hold_id"] is None
    assert re.fullmatch(r"R-[0-9a-f]{2}-\d{11}", txn["receipt_number"])

    assert ledger.balance(source) == 7_500
    assert ledger.balance(destination) == 3_000
    # Each wallet: one posting from its funding, one from the transfer.
    assert postings_of(ledger, txn["id"]) == [
        (source, "EUR", -2_500, 7_500, 2),
        (destination, "EUR", 2_500, 3_000, 2),
    ]
    assert ledger.account(source)["version"] == 2
    assert ledger.account(destination)["version"] == 2
    assert ledger.audit() == []


def test_receipt_numbers_are_unique_and_increase(ledger: LedgerClient) -> None:
    ada, bob = user(), user()
    source = funded_wallet(ledger, ada, 1_000)
    destination = funded_wallet(ledger, bob, 0)
    receipts = [
        ledger.transfer(ada, source, destination, 10)["transaction"]["receipt_number"]
        for _ in range(20)
    ]
    assert all(re.fullmatch(r"R-[0-9a-f]{2}-\d{11}", r) for r in receipts)
    assert receipts == sorted(receipts)
    assert len(set(receipts)) == len(receipts)
    stored = ledger.conn.execute(
        "SELECT receipt_number FROM transactions ORDER BY created_at, receipt_number"
    ).fetchall()
    assert len({r for (r,) in stored}) == len(stored) == 21  # a funding and 20 transfers


def test_overdraft_limit_is_the_floor(ledger: LedgerClient) -> None:
    ada, bob = user(), user()
    source = funded_wallet(ledger, ada, 1_000)
    destination = funded_wallet(ledger, bob, 0)
    ledger.conn.execute("UPDATE accounts SET overdraft_limit = 300 WHERE id = %s", (source,))
    assert ledger.transfer(ada, source, destination, 1_300)["outcome"] == "ok"
    assert ledger.balance(source) == -300
    assert ledger.transfer(ada, source, destination, 1)["outcome"] == "insufficient_funds"
    with pytest.raises(psycopg.errors.CheckViolation):
        ledger.conn.execute("UPDATE accounts SET overdraft_limit = 0 WHERE id = %s", (source,))
    assert ledger.audit() == []


def test_programming_errors_raise_instead_of_refusing(ledger: LedgerClient) -> None:
    ada, bob = user(), user()
    source = funded_wallet(ledger, ada, 1_000)
    destination = funded_wallet(ledger, bob, 0)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="amount"):
        ledger.transfer(ada, source, destination, 0)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="currency"):
        ledger.transfer(ada, source, destination, 1, currency="eur")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="idempotency key"):
        ledger.transfer(ada, source, destination, 1, key="")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="idempotency key"):
        ledger.transfer(ada, source, destination, 1, key="k" * 256)
    with pytest.raises(psycopg.errors.CheckViolation):
        ledger.transfer(ada, source, destination, 1, memo="m" * 501)
    assert ledger.balance(source) == 1_000


# --- every refusal writes nothing ---------------------------------------------------------


@dataclass
class World:
    """People, wallets, holds and transactions in every state a refusal needs."""

    ada: uuid.UUID = field(default_factory=uuid.uuid4)  # active, funded, with an active hold
    bob: uuid.UUID = field(default_factory=uuid.uuid4)  # merchant, spent what he received
    cat: uuid.UUID = field(default_factory=uuid.uuid4)  # frozen, with a hold and a transfer in
    dan: uuid.UUID = field(default_factory=uuid.uuid4)  # closed after paying everything out
    eve: uuid.UUID = field(default_factory=uuid.uuid4)  # a USD wallet only
    w: dict[str, str] = field(default_factory=dict)
    h: dict[str, str] = field(default_factory=dict)
    t: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def world(ledger: LedgerClient) -> World:
    world = World()
    w, h, t = world.w, world.h, world.t
    w["ada"] = funded_wallet(ledger, world.ada, 10_000)
    w["ada_usd"] = funded_wallet(ledger, world.ada, 0, "USD")
    w["ada_gbp"] = funded_wallet(ledger, world.ada, 0, "GBP")  # no GBP settlement account
    w["bob"] = funded_wallet(ledger, world.bob, 0)
    w["cat"] = funded_wallet(ledger, world.cat, 5_000)
    w["dan"] = funded_wallet(ledger, world.dan, 700)
    w["eve"] = funded_wallet(ledger, world.eve, 1_000, "USD")
    t["adjustment"] = ledger.conn.execute(
        "SELECT id::text FROM transactions WHERE destination_account_id = %s", (w["ada"],)
    ).fetchone()[0]  # type: ignore[index]
    h["active"] = ledger.create_hold(world.ada, w["ada"], w["bob"], 1_000)["hold"]["id"]
    h["voided"] = ledger.create_hold(world.ada, w["ada"], w["bob"], 100)["hold"]["id"]
    assert ledger.void_hold(world.bob, h["voided"])["outcome"] == "ok"
    h["cat"] = ledger.create_hold(world.cat, w["cat"], w["bob"], 500)["hold"]["id"]
    t["ada_to_bob"] = ledger.transfer(world.ada, w["ada"], w["bob"], 400)["transaction"]["id"]
    t["ada_to_cat"] = ledger.transfer(world.ada, w["ada"], w["cat"], 300)["transaction"]["id"]
    t["dan_to_bob"] = ledger.transfer(world.dan, w["dan"], w["bob"], 700)["transaction"]["id"]
    # Bob passes on what he received: he cannot refund it any more.
    assert ledger.transfer(world.bob, w["bob"], w["ada"], 1_100)["outcome"] == "ok"
    t["refund"] = ledger.refund(world.cat, t["ada_to_cat"], 100)["transaction"]["id"]
    assert ledger.close_wallet(world.dan, w["dan"])["outcome"] == "ok"
    assert ledger.set_status(OPERATOR, w["cat"], "frozen")["outcome"] == "ok"
    assert ledger.audit() == []
    return world


LATER = datetime.now(UTC) + timedelta(days=1)
NOWHERE = str(uuid.uuid4())

REFUSALS: dict[str, tuple[str, Callable[[LedgerClient, World], Result]]] = {
    # create_wallet
    "wallet exists": ("wallet_exists", lambda lg, x: lg.create_wallet(x.ada, "EUR")),
    # transfer
    "transfer from unknown wallet": (
        "wallet_not_found",
        lambda lg, x: lg.transfer(x.ada, NOWHERE, x.w["bob"], 1),
    ),
    "transfer from someone else's wallet": (
        "wallet_not_found",
        lambda lg, x: lg.transfer(x.ada, x.w["bob"], x.w["ada"], 1),
    ),
    "transfer to unknown wallet": (
        "destination_not_found",
        lambda lg, x: lg.transfer(x.ada, x.w["ada"], NOWHERE, 1),
    ),
    "transfer to the same wallet": (
        "self_transfer",
        lambda lg, x: lg.transfer(x.ada, x.w["ada"], x.w["ada"], 1),
    ),
    "transfer to an own wallet": (
        "self_transfer",
        lambda lg, x: lg.transfer(x.ada, x.w["ada"], x.w["ada_usd"], 1),
    ),
    "transfer in another currency": (
        "currency_mismatch",
        lambda lg, x: lg.transfer(x.ada, x.w["ada"], x.w["bob"], 1, currency="USD"),
    ),
    "transfer to a wallet in another currency": (
        "currency_mismatch",
        lambda lg, x: lg.transfer(x.ada, x.w["ada"], x.w["eve"], 1),
    ),
    "transfer from a frozen wallet": (
        "source_frozen",
        lambda lg, x: lg.transfer(x.cat, x.w["cat"], x.w["bob"], 1),
    ),
    "transfer from a closed wallet": (
        "source_closed",
        lambda lg, x: lg.transfer(x.dan, x.w["dan"], x.w["bob"], 1),
    ),
    "transfer to a closed wallet": (
        "destination_closed",
        lambda lg, x: lg.transfer(x.ada, x.w["ada"], x.w["dan"], 1),
    ),
    "transfer of more than available (held counts)": (
        # balance 10_000 - 400 - 300 + 1_100 + 100 = 10_500, held 1_000
        "insufficient_funds",
        lambda lg, x: lg.transfer(x.ada, x.w["ada"], x.w["bob"], 9_501),
    ),
    # create_hold
    "hold on someone else's wallet": (
        "wallet_not_found",
        lambda lg, x: lg.create_hold(x.bob, x.w["ada"], x.w["bob"], 1),
    ),
    "hold for an unknown merchant": (
        "destination_not_found",
        lambda lg, x: lg.create_hold(x.ada, x.w["ada"], NOWHERE, 1),
    ),
    "hold for oneself": (
        "self_transfer",
        lambda lg, x: lg.create_hold(x.ada, x.w["ada"], x.w["ada_usd"], 1),
    ),
    "hold in another currency": (
        "currency_mismatch",
        lambda lg, x: lg.create_hold(x.ada, x.w["ada"], x.w["bob"], 1, currency="USD"),
    ),
    "hold on a frozen wallet": (
        "source_frozen",
        lambda lg, x: lg.create_hold(x.cat, x.w["cat"], x.w["bob"], 1),
    ),
    "hold on a closed wallet": (
        "source_closed",
        lambda lg, x: lg.create_hold(x.dan, x.w["dan"], x.w["bob"], 1),
    ),
    "hold for a closed merchant": (
        "destination_closed",
        lambda lg, x: lg.create_hold(x.ada, x.w["ada"], x.w["dan"], 1),
    ),
    "hold of more than available": (
        "insufficient_funds",
        lambda lg, x: lg.create_hold(x.ada, x.w["ada"], x.w["bob"], 9_501),
    ),
    # capture_hold
    "capture of an unknown hold": (
        "hold_not_found",
        lambda lg, x: lg.capture_hold(x.bob, NOWHERE, None),
    ),
    "capture by the payer": (
        "not_owner",
        lambda lg, x: lg.capture_hold(x.ada, x.h["active"], None),
    ),
    "capture of a voided hold": (
        "hold_not_active",
        lambda lg, x: lg.capture_hold(x.bob, x.h["voided"], None),
    ),
    "capture after expiry": (
        "hold_expired",
        lambda lg, x: lg.capture_hold(x.bob, x.h["active"], None, now=LATER),
    ),
    "capture of more than held": (
        "amount_exceeds_hold",
        lambda lg, x: lg.capture_hold(x.bob, x.h["active"], 1_001),
    ),
    "capture from a frozen payer": (
        "source_frozen",
        lambda lg, x: lg.capture_hold(x.bob, x.h["cat"], None),
    ),
    # void_hold
    "void of an unknown hold": ("hold_not_found", lambda lg, x: lg.void_hold(x.bob, NOWHERE)),
    "void by the payer": ("not_owner", lambda lg, x: lg.void_hold(x.ada, x.h["active"])),
    "void of a voided hold": ("hold_not_active", lambda lg, x: lg.void_hold(x.bob, x.h["voided"])),
    # refund
    "refund of an unknown transaction": (
        "transaction_not_found",
        lambda lg, x: lg.refund(x.bob, NOWHERE, None),
    ),
    "refund by the payer": ("not_owner", lambda lg, x: lg.refund(x.ada, x.t["ada_to_bob"], None)),
    "refund of an adjustment": (
        "not_refundable",
        lambda lg, x: lg.refund(x.ada, x.t["adjustment"], None),
    ),
    "refund of a refund": ("not_refundable", lambda lg, x: lg.refund(x.ada, x.t["refund"], None)),
    "refund of more than is left": (
        "amount_exceeds_refundable",
        lambda lg, x: lg.refund(x.cat, x.t["ada_to_cat"], 201, is_admin=True),
    ),
    "refund from a frozen wallet": (
        "source_frozen",
        lambda lg, x: lg.refund(x.cat, x.t["ada_to_cat"], 100),
    ),
    "refund to a closed wallet": (
        "destination_closed",
        lambda lg, x: lg.refund(x.bob, x.t["dan_to_bob"], 100),
    ),
    "refund without the money": (
        "insufficient_funds",
        lambda lg, x: lg.refund(x.bob, x.t["ada_to_bob"], 400),
    ),
    # adjust
    "adjust of an unknown wallet": (
        "wallet_not_found",
        lambda lg, x: lg.adjust(OPERATOR, NOWHERE, 1),
    ),
    "adjust in another currency": (
        "currency_mismatch",
        lambda lg, x: lg.adjust(OPERATOR, x.w["ada"], 1, "USD"),
    ),
    "adjust of a closed wallet": (
        "wallet_closed",
        lambda lg, x: lg.adjust(OPERATOR, x.w["dan"], 1),
    ),
    "debit of more than available": (
        "insufficient_funds",
        lambda lg, x: lg.adjust(OPERATOR, x.w["ada"], -9_501),
    ),
    "debit in a currency without a settlement account yet": (
        "insufficient_funds",
        lambda lg, x: lg.adjust(OPERATOR, x.w["ada_gbp"], -1, "GBP"),
    ),
    # set_wallet_status
    "freeze of an unknown wallet": (
        "wallet_not_found",
        lambda lg, x: lg.set_status(OPERATOR, NOWHERE, "frozen"),
    ),
    "freeze of a closed wallet": (
        "wallet_closed",
        lambda lg, x: lg.set_status(OPERATOR, x.w["dan"], "frozen"),
    ),
    "freeze of a frozen wallet": (
        "status_unchanged",
        lambda lg, x: lg.set_status(OPERATOR, x.w["cat"], "frozen"),
    ),
    "unfreeze of an active wallet": (
        "status_unchanged",
        lambda lg, x: lg.set_status(OPERATOR, x.w["ada"], "active"),
    ),
    # close_wallet
    "close of someone else's wallet": (
        "wallet_not_found",
        lambda lg, x: lg.close_wallet(x.bob, x.w["ada"]),
    ),
    "close of a closed wallet": ("wallet_closed", lambda lg, x: lg.close_wallet(x.dan, x.w["dan"])),
    "close of a wallet with money": (
        "balance_not_zero",
        lambda lg, x: lg.close_wallet(x.ada, x.w["ada"]),
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS), ids=list(REFUSALS))
def test_refusal_writes_nothing(ledger: LedgerClient, world: World, case: str) -> None:
    outcome, call = REFUSALS[case]
    before = ledger.snapshot()
    result = call(ledger, world)
    assert result == {"outcome": outcome}
    assert ledger.snapshot() == before


def test_every_documented_refusal_is_exercised() -> None:
    documented = {
        "wallet_not_found",
        "destination_not_found",
        "hold_not_found",
        "transaction_not_found",
        "not_owner",
        "wallet_exists",
        "currency_mismatch",
        "self_transfer",
        "source_frozen",
        "source_closed",
        "destination_closed",
        "wallet_closed",
        "insufficient_funds",
        "hold_not_active",
        "hold_expired",
        "amount_exceeds_hold",
        "not_refundable",
        "amount_exceeds_refundable",
        "status_unchanged",
        "balance_not_zero",
    }
    assert {outcome for outcome, _ in REFUSALS.values()} == documented


def test_a_refused_key_can_be_used_again_once_fixed(ledger: LedgerClient) -> None:
    ada, bob = user(), user()
    source = funded_wallet(ledger, ada, 100)
    destination = funded_wallet(ledger, bob, 0)
    first = ledger.transfer(ada, source, destination, 150, key="pay-bob")
    assert first == {"outcome": "insufficient_funds"}
    assert ledger.adjust(OPERATOR, source, 100)["outcome"] == "ok"
    assert ledger.transfer(ada, source, destination, 150, key="pay-bob")["outcome"] == "ok"
    assert ledger.balance(destination) == 150


# --- idempotency --------------------------------------------------------------------------


def test_replay_returns_the_identical_result_and_moves_nothing(ledger: LedgerClient) -> None:
    ada, bob = user(), user()
    source = funded_wallet(ledger, ada, 1_000)
    destination = funded_wallet(ledger, bob, 0)
    first = ledger.transfer(ada, source, destination, 300, key="k1")
    before = ledger.snapshot()
    again = ledger.transfer(ada, source, destination, 300, key="k1")
    assert again["outcome"] == "replayed"
    assert again["transaction"] == first["transaction"]
    assert ledger.snapshot() == before
    assert ledger.balance(destination) == 300
    # The same key of another owner is another key.
    assert ledger.transfer(bob, destination, source, 300, key="k1")["outcome"] == "ok"


def test_same_key_different_request_is_a_mismatch(ledger: LedgerClient) -> None:
    ada, bob = user(), user()
    source = funded_wallet(ledger, ada, 1_000)
    destination = funded_wallet(ledger, bob, 0)
    assert ledger.transfer(ada, source, destination, 300, key="k1")["outcome"] == "ok"
    before = ledger.snapshot()
    assert ledger.transfer(ada, source, destination, 301, key="k1") == {"outcome": "key_mismatch"}
    # Same key, another operation (even with the same hash).
    result = ledger.call(
        "ledger_create_wallet",
        ada,
        "k1",
        request_hash("ledger_transfer", uuid.UUID(source), uuid.UUID(destination), 300),
        "USD",
    )
    assert result == {"outcome": "key_mismatch"}
    assert ledger.snapshot() == before


def test_key_held_by_an_open_transaction_is_in_progress(
    ledger: LedgerClient, ledger_conninfo: str
) -> None:
    ada, bob = user(), user()
    source = funded_wallet(ledger, ada, 1_000)
    destination = funded_wallet(ledger, bob, 0)
    with psycopg.connect(ledger_conninfo) as other:  # not autocommit: stays open
        first = LedgerClient(other).transfer(ada, source, destination, 300, key="k1")
        assert first["outcome"] == "ok"
        before = ledger.snapshot()
        assert ledger.transfer(ada, source, destination, 300, key="k1") == {
            "outcome": "in_progress"
        }
        assert ledger.snapshot() == before
        other.commit()
    again = ledger.transfer(ada, source, destination, 300, key="k1")
    assert again["outcome"] == "replayed"
    assert again["transaction"] == first["transaction"]
    assert ledger.balance(source) == 700


def test_every_mutating_function_replays(ledger: LedgerClient, world: World) -> None:
    w, h, t = world.w, world.h, world.t
    assert ledger.adjust(OPERATOR, w["eve"], -1_000, "USD")["outcome"] == "ok"
    calls: list[Callable[[str], Result]] = [
        lambda k: ledger.create_wallet(world.bob, "USD", key=k),
        lambda k: ledger.transfer(world.ada, w["ada"], w["bob"], 5, key=k),
        lambda k: ledger.create_hold(world.ada, w["ada"], w["bob"], 5, expires_at=LATER, key=k),
        lambda k: ledger.capture_hold(world.bob, h["active"], 10, key=k),
        lambda k: ledger.refund(world.ada, t["ada_to_bob"], 10, is_admin=True, key=k),
        lambda k: ledger.adjust(OPERATOR, w["bob"], 7, key=k),
        lambda k: ledger.set_status(OPERATOR, w["cat"], "active", key=k),
        lambda k: ledger.close_wallet(world.eve, w["eve"], key=k),
    ]
    for index, call in enumerate(calls):
        first = call(f"key-{index}")
        assert first["outcome"] == "ok", index
        before = ledger.snapshot()
        again = call(f"key-{index}")
        assert again == first | {"outcome": "replayed"}, index
        assert ledger.snapshot() == before
    hold = ledger.create_hold(world.ada, w["ada"], w["bob"], 5)["hold"]["id"]
    first = ledger.void_hold(world.bob, hold, key="void")
    assert ledger.void_hold(world.bob, hold, key="void") == first | {"outcome": "replayed"}
    assert ledger.audit() == []


# --- immutability -------------------------------------------------------------------------


@pytest.fixture
def one_transfer(ledger: LedgerClient) -> tuple[str, str, str]:
    ada, bob = user(), user()
    source = funded_wallet(ledger, ada, 1_000)
    destination = funded_wallet(ledger, bob, 0)
    txn = ledger.transfer(ada, source, destination, 300)["transaction"]["id"]
    return txn, source, destination


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE postings SET amount = amount * 2",
        "UPDATE postings SET balance_after = 0 WHERE false",
        "DELETE FROM postings",
        "TRUNCATE postings",
        "DELETE FROM transactions",
        "TRUNCATE transactions CASCADE",
        "DELETE FROM holds",
        "DELETE FROM accounts",
        "UPDATE transactions SET amount = amount + 1",
        "UPDATE transactions SET memo = 'rewritten'",
        "UPDATE transactions SET destination_account_id = source_account_id,"
        " source_account_id = destination_account_id",
    ],
)
def test_history_cannot_be_rewritten(
    ledger: LedgerClient, one_transfer: tuple[str, str, str], statement: str
) -> None:
    before = ledger.snapshot()
    with pytest.raises(psycopg.errors.RestrictViolation, match=r"not allowed|may change"):
        ledger.conn.execute(statement)
    assert ledger.snapshot() == before


def test_refunded_amount_never_decreases(ledger: LedgerClient) -> None:
    ada, bob = user(), user()
    source = funded_wallet(ledger, ada, 1_000)
    destination = funded_wallet(ledger, bob, 0)
    txn = ledger.transfer(ada, source, destination, 300)["transaction"]["id"]
    assert ledger.refund(bob, txn, 100)["outcome"] == "ok"
    with pytest.raises(psycopg.errors.RestrictViolation, match="cannot decrease"):
        ledger.conn.execute(
            "UPDATE transactions SET refunded_amount = 0, status = 'posted' WHERE id = %s",
            (txn,),
        )


def test_unbalanced_postings_are_refused(
    ledger: LedgerClient, one_transfer: tuple[str, str, str]
) -> None:
    txn, source, destination = one_transfer
    insert = (
        "INSERT INTO postings (transaction_id, account_id, currency, amount, balance_after,"
        " account_version) VALUES (%s, %s, 'EUR', %s, 0, 100), (%s, %s, 'EUR', %s, 0, 100)"
    )
    with pytest.raises(psycopg.errors.CheckViolation, match=f"{txn} do not balance in EUR"):
        ledger.conn.execute(insert, (txn, source, -5, txn, destination, 4))
    with pytest.raises(psycopg.errors.CheckViolation, match="do not balance"):
        ledger.conn.execute(
            "INSERT INTO postings (transaction_id, account_id, currency, amount, balance_after,"
            " account_version) VALUES (%s, %s, 'EUR', 5, 0, 100)",
            (txn, source),
        )
    with pytest.raises(psycopg.errors.CheckViolation):  # a posting of nothing
        ledger.conn.execute(insert, (txn, source, 0, txn, destination, 0))
    assert ledger.audit() == []


def test_a_posting_in_another_currency_than_its_account_is_refused(
    ledger: LedgerClient, one_transfer: tuple[str, str, str]
) -> None:
    txn, source, destination = one_transfer
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        ledger.conn.execute(
            "INSERT INTO postings (transaction_id, account_id, currency, amount, balance_after,"
            " account_version) VALUES (%s, %s, 'USD', -5, 0, 100), (%s, %s, 'USD', 5, 0, 100)",
            (txn, source, txn, destination),
        )


def test_constraints_refuse_impossible_accounts(ledger: LedgerClient) -> None:
    owner = user()
    wallet = funded_wallet(ledger, owner, 100)
    statements = [
        ("UPDATE accounts SET balance = -1 WHERE id = %s", (wallet,)),
        ("UPDATE accounts SET held = 101 WHERE id = %s", (wallet,)),
        ("UPDATE accounts SET held = -1 WHERE id = %s", (wallet,)),
        ("UPDATE accounts SET status = 'closed' WHERE id = %s", (wallet,)),
        (
            "INSERT INTO accounts (id, kind, currency)"
            " VALUES (gen_random_uuid(), 'user_wallet', 'EUR')",
            (),
        ),
        (
            "INSERT INTO accounts (kind, owner_id, currency) VALUES ('settlement', %s, 'EUR')",
            (owner,),
        ),
        (
            "INSERT INTO accounts (kind, owner_id, currency) VALUES ('user_wallet', %s, 'eur')",
            (owner,),
        ),
    ]
    for statement, args in statements:
        with pytest.raises(psycopg.errors.CheckViolation):
            ledger.conn.execute(statement, args)
    # One settlement account per currency and shard; a system account's id names its shard.
    with pytest.raises(psycopg.errors.UniqueViolation):
        ledger.conn.execute(
            "INSERT INTO accounts (id, kind, currency)"
            " VALUES (ledger_new_id(ledger_shard_of(%s)), 'settlement', 'EUR')",
            (wallet,),
        )
    with pytest.raises(psycopg.errors.NotNullViolation):
        ledger.conn.execute("INSERT INTO accounts (kind, currency) VALUES ('settlement', 'USD')")


# --- holds --------------------------------------------------------------------------------


@pytest.fixture
def shop(ledger: LedgerClient) -> tuple[uuid.UUID, str, uuid.UUID, str]:
    payer, merchant = user(), user()
    return payer, funded_wallet(ledger, payer, 1_000), merchant, funded_wallet(ledger, merchant, 0)


def test_hold_reserves_and_partial_capture_releases_the_rest(
    ledger: LedgerClient, shop: tuple[uuid.UUID, str, uuid.UUID, str]
) -> None:
    payer, wallet, merchant, shop_wallet = shop
    created = ledger.create_hold(payer, wallet, shop_wallet, 600, memo="order 42")
    assert set(created) == {"outcome", "hold"}
    hold = created["hold"]
    assert set(hold) == HOLD_KEYS
    assert (hold["status"], hold["amount"], hold["captured_amount"]) == ("active", 600, 0)
    assert (hold["account_id"], hold["merchant_account_id"]) == (wallet, shop_wallet)
    assert hold["created_by"] == str(payer)
    assert ledger.account(wallet)["held"] == 600
    assert ledger.transfer(payer, wallet, shop_wallet, 401)["outcome"] == "insufficient_funds"

    captured = ledger.capture_hold(merchant, hold["id"], 250)
    assert set(captured) == {"outcome", "hold", "transaction"}
    txn = captured["transaction"]
    assert (txn["type"], txn["amount"], txn["hold_id"], txn["memo"]) == (
        "payment",
        250,
        hold["id"],
        "order 42",
    )
    assert (txn["source_owner_id"], txn["destination_owner_id"]) == (str(payer), str(merchant))
    assert captured["hold"]["status"] == "captured"
    assert captured["hold"]["captured_amount"] == 250
    assert captured["hold"]["capture_transaction_id"] == txn["id"]
    payer_account = ledger.account(wallet)
    assert (payer_account["balance"], payer_account["held"]) == (750, 0)
    assert ledger.balance(shop_wallet) == 250
    assert postings_of(ledger, txn["id"]) == [
        (wallet, "EUR", -250, 750, 2),
        (shop_wallet, "EUR", 250, 250, 1),
    ]
    assert ledger.capture_hold(merchant, hold["id"], None) == {"outcome": "hold_not_active"}
    assert ledger.void_hold(merchant, hold["id"]) == {"outcome": "hold_not_active"}
    assert ledger.audit() == []


def test_capture_of_everything_and_void(
    ledger: LedgerClient, shop: tuple[uuid.UUID, str, uuid.UUID, str]
) -> None:
    payer, wallet, merchant, shop_wallet = shop
    full = ledger.create_hold(payer, wallet, shop_wallet, 300)["hold"]["id"]
    voided = ledger.create_hold(payer, wallet, shop_wallet, 200)["hold"]["id"]
    assert ledger.account(wallet)["held"] == 500
    assert ledger.capture_hold(merchant, full, None)["transaction"]["amount"] == 300
    result = ledger.void_hold(merchant, voided)
    assert set(result) == {"outcome", "hold"}
    assert result["hold"]["status"] == "voided"
    assert ledger.capture_hold(merchant, voided, None) == {"outcome": "hold_not_active"}
    account = ledger.account(wallet)
    assert (account["balance"], account["held"]) == (700, 0)
    assert ledger.audit() == []


def test_expiry_releases_holds_and_capture_after_expiry_is_refused(
    ledger: LedgerClient, ledger_conninfo: str, shop: tuple[uuid.UUID, str, uuid.UUID, str]
) -> None:
    payer, wallet, merchant, shop_wallet = shop
    now = datetime.now(UTC)
    soon = [
        ledger.create_hold(payer, wallet, shop_wallet, 100, expires_at=now + timedelta(minutes=m))[
            "hold"
        ]["id"]
        for m in (1, 2, 3)
    ]
    later = ledger.create_hold(payer, wallet, shop_wallet, 100, expires_at=now + timedelta(days=1))
    assert ledger.account(wallet)["held"] == 400
    in_an_hour = now + timedelta(hours=1)
    assert ledger.capture_hold(merchant, soon[0], None, now=in_an_hour) == {
        "outcome": "hold_expired"
    }

    # A hold locked elsewhere (a capture in flight) is skipped, not waited for.
    with psycopg.connect(ledger_conninfo) as other:
        other.execute("SELECT FROM holds WHERE id = %s FOR UPDATE", (soon[2],))
        ledger.conn.execute("SET lock_timeout = '2s'")
        assert ledger.expire_holds(in_an_hour, limit=1) == 1
        assert ledger.expire_holds(in_an_hour, limit=10) == 1
        assert ledger.expire_holds(in_an_hour, limit=10) == 0
    assert ledger.expire_holds(in_an_hour, limit=10) == 1
    statuses = dict(ledger.conn.execute("SELECT id::text, status FROM holds").fetchall())
    assert [statuses[h] for h in soon] == ["expired"] * 3
    assert statuses[later["hold"]["id"]] == "active"
    assert ledger.account(wallet)["held"] == 100
    assert ledger.balance(wallet) == 1_000
    assert ledger.capture_hold(merchant, soon[0], None) == {"outcome": "hold_not_active"}
    assert ledger.audit() == []


# --- refunds ------------------------------------------------------------------------------


def test_partial_then_full_refund(ledger: LedgerClient) -> None:
    ada, bob = user(), user()
    source = funded_wallet(ledger, ada, 1_000)
    destination = funded_wallet(ledger, bob, 0)
    original = ledger.transfer(ada, source, destination, 1_000)["transaction"]["id"]

    first = ledger.refund(bob, original, 300, reason="damaged")
    refund = first["transaction"]
    assert (refund["type"], refund["amount"], refund["refund_of"]) == ("refund", 300, original)
    assert (refund["source_account_id"], refund["destination_account_id"]) == (
        destination,
        source,
    )
    assert (refund["memo"], refund["initiated_by"]) == ("damaged", str(bob))
    assert (refund["source_owner_id"], refund["destination_owner_id"]) == (str(bob), str(ada))
    assert refund["status"] == "posted"
    status = "SELECT status, refunded_amount FROM transactions WHERE id = %s"
    assert ledger.conn.execute(status, (original,)).fetchone() == ("partially_refunded", 300)

    assert ledger.refund(bob, original, 701) == {"outcome": "amount_exceeds_refundable"}
    assert ledger.refund(bob, original, None)["transaction"]["amount"] == 700
    assert ledger.conn.execute(status, (original,)).fetchone() == ("refunded", 1_000)
    assert ledger.refund(bob, original, 1) == {"outcome": "not_refundable"}
    assert ledger.refund(ada, refund["id"], None) == {"outcome": "not_refundable"}
    assert (ledger.balance(source), ledger.balance(destination)) == (1_000, 0)
    assert ledger.audit() == []


def test_admin_refunds_a_payment(
    ledger: LedgerClient, shop: tuple[uuid.UUID, str, uuid.UUID, str]
) -> None:
    payer, wallet, merchant, shop_wallet = shop
    hold = ledger.create_hold(payer, wallet, shop_wallet, 500)["hold"]["id"]
    payment = ledger.capture_hold(merchant, hold, None)["transaction"]["id"]
    admin = user()
    assert ledger.refund(admin, payment, 200) == {"outcome": "not_owner"}
    refund = ledger.refund(admin, payment, 200, is_admin=True)["transaction"]
    assert refund["initiated_by"] == str(admin)
    assert (ledger.balance(wallet), ledger.balance(shop_wallet)) == (700, 300)
    assert ledger.audit() == []


# --- operators: adjustments, freezing, closing --------------------------------------------


def test_adjustments_flow_through_the_settlement_account(ledger: LedgerClient) -> None:
    owner = user()
    wallet = ledger.create_wallet(owner)["wallet"]["id"]
    credit = ledger.adjust(OPERATOR, wallet, 1_000, reason="card top-up")
    assert set(credit) == {"outcome", "transaction", "wallet"}
    settlement = ledger.scalar("SELECT id::text FROM accounts WHERE kind = 'settlement'")
    txn = credit["transaction"]
    assert (txn["type"], txn["amount"], txn["memo"]) == ("adjustment", 1_000, "card top-up")
    assert (txn["source_account_id"], txn["destination_account_id"]) == (settlement, wallet)
    assert (txn["source_owner_id"], txn["destination_owner_id"]) == (None, str(owner))
    assert txn["initiated_by"] == str(OPERATOR)
    assert credit["wallet"]["balance"] == 1_000

    debit = ledger.adjust(OPERATOR, wallet, -400, reason="chargeback")
    txn = debit["transaction"]
    assert (txn["amount"], txn["source_account_id"], txn["destination_account_id"]) == (
        400,
        wallet,
        settlement,
    )
    assert debit["wallet"]["balance"] == 600
    assert ledger.balance(settlement) == -600
    assert ledger.scalar("SELECT count(*) FROM accounts WHERE kind = 'settlement'") == 1
    other = ledger.create_wallet(owner, "JPY")["wallet"]["id"]
    assert ledger.adjust(OPERATOR, other, 5, "JPY")["outcome"] == "ok"
    assert ledger.scalar("SELECT count(*) FROM accounts WHERE kind = 'settlement'") == 2
    assert ledger.audit() == []


def test_freeze_blocks_debits_not_credits_and_unfreeze_restores(ledger: LedgerClient) -> None:
    ada, bob = user(), user()
    a = funded_wallet(ledger, ada, 1_000)
    b = funded_wallet(ledger, bob, 1_000)
    frozen = ledger.set_status(OPERATOR, a, "frozen", reason="fraud review")
    assert set(frozen) == {"outcome", "transaction", "wallet"}
    assert frozen["wallet"]["status"] == "frozen"
    txn = frozen["transaction"]
    assert (txn["type"], txn["amount"], txn["memo"]) == ("freeze", 0, "fraud review")
    assert (txn["source_account_id"], txn["destination_account_id"]) == (None, a)
    assert postings_of(ledger, txn["id"]) == []

    assert ledger.transfer(ada, a, b, 1) == {"outcome": "source_frozen"}
    assert ledger.create_hold(ada, a, b, 1) == {"outcome": "source_frozen"}
    assert ledger.transfer(bob, b, a, 100)["outcome"] == "ok"  # money may come in
    assert ledger.adjust(OPERATOR, a, -50)["outcome"] == "ok"  # operators may debit
    assert ledger.adjust(OPERATOR, a, 20)["outcome"] == "ok"

    unfrozen = ledger.set_status(OPERATOR, a, "active", reason="cleared")
    assert unfrozen["transaction"]["type"] == "unfreeze"
    assert unfrozen["wallet"]["status"] == "active"
    assert ledger.transfer(ada, a, b, 1)["outcome"] == "ok"
    assert ledger.balance(a) == 1_069
    assert ledger.audit() == []


def test_close_needs_an_empty_wallet_and_is_final(ledger: LedgerClient) -> None:
    ada, bob = user(), user()
    a = funded_wallet(ledger, ada, 100)
    b = funded_wallet(ledger, bob, 0)
    assert ledger.close_wallet(ada, a) == {"outcome": "balance_not_zero"}
    hold = ledger.create_hold(ada, a, b, 100)["hold"]["id"]
    assert ledger.adjust(OPERATOR, a, 1)["outcome"] == "ok"  # balance 101, held 100
    assert ledger.transfer(ada, a, b, 1)["outcome"] == "ok"  # balance 100, held 100
    assert ledger.close_wallet(ada, a) == {"outcome": "balance_not_zero"}
    assert ledger.void_hold(bob, hold)["outcome"] == "ok"
    assert ledger.transfer(ada, a, b, 100)["outcome"] == "ok"
    closed = ledger.close_wallet(ada, a)
    assert set(closed) == {"outcome", "wallet"}
    assert closed["wallet"]["status"] == "closed"
    assert ledger.transfer(bob, b, a, 1) == {"outcome": "destination_closed"}
    assert ledger.adjust(OPERATOR, a, 1) == {"outcome": "wallet_closed"}
    assert ledger.set_status(OPERATOR, a, "frozen") == {"outcome": "wallet_closed"}
    assert ledger.create_wallet(ada, "EUR") == {"outcome": "wallet_exists"}
    assert ledger.audit() == []


# --- concurrency --------------------------------------------------------------------------


def test_concurrent_transfers_keep_every_invariant(
    ledger: LedgerClient, ledger_conninfo: str, capsys: pytest.CaptureFixture[str]
) -> None:
    threads, per_thread, funding = 8, 250, 100_000
    owners = [user() for _ in range(6)]
    wallets = [funded_wallet(ledger, owner, funding) for owner in owners]
    rng = random.Random(20261201)
    requests = []
    for index in range(threads * per_thread):
        source, destination = rng.sample(range(len(wallets)), 2)
        requests.append((f"c-{index}", source, destination, rng.randint(1, 3_000)))
    outcomes: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    lock = threading.Lock()
    calls = [0]

    def send(client: LedgerClient, request: tuple[str, int, int, int]) -> None:
        key, source, destination, amount = request
        result = client.transfer(
            owners[source],
            wallets[source],
            wallets[destination],
            amount,
            metadata={"key": key},
            key=key,
        )
        txn = result.get("transaction")
        with lock:
            outcomes[key].append((result["outcome"], txn["id"] if txn else None))
            calls[0] += 1

    def worker(index: int) -> None:
        worker_rng = random.Random(index)
        with psycopg.connect(ledger_conninfo, autocommit=True) as conn:
            client = LedgerClient(conn)
            for request in requests[index * per_thread : (index + 1) * per_thread]:
                send(client, request)
                if worker_rng.random() < 0.15:  # a retry, maybe of another thread's call
                    send(client, worker_rng.choice(requests))

    started = time.perf_counter()
    errors = run_threads(threads, worker)
    elapsed = time.perf_counter() - started
    assert errors == []

    posted = {key for key, seen in outcomes.items() for outcome, _ in seen if outcome == "ok"}
    for key, seen in outcomes.items():
        assert {outcome for outcome, _ in seen} <= {
            "ok",
            "replayed",
            "in_progress",
            "insufficient_funds",
        }
        assert [outcome for outcome, _ in seen].count("ok") <= 1, key
        ids = {txn for outcome, txn in seen if outcome in {"ok", "replayed"}}
        assert len(ids) <= 1, key
        if "replayed" in {outcome for outcome, _ in seen}:
            assert key in posted
    stored = dict(
        ledger.conn.execute(
            "SELECT metadata->>'key', count(*) FROM transactions WHERE type = 'transfer' GROUP BY 1"
        ).fetchall()
    )
    assert set(stored) == posted
    assert set(stored.values()) == {1}
    assert ledger.audit() == []
    balances = [ledger.balance(wallet) for wallet in wallets]
    assert sum(balances) == funding * len(wallets)
    assert min(balances) >= 0
    with capsys.disabled():
        print(
            f"\n{calls[0]} calls, {len(posted)} transfers in {elapsed:.2f}s:"
            f" {len(posted) / elapsed:.0f} transfers/s, {calls[0] / elapsed:.0f} calls/s"
        )


def test_every_function_racing_every_other_never_deadlocks(
    ledger: LedgerClient, ledger_conninfo: str
) -> None:
    """Transfers, holds, captures, voids, refunds, adjustments, freezes and expiry, all at
    once on few wallets: each takes its locks in the fixed order, so none may fail with a
    deadlock (or anything else), and the ledger stays sound."""
    owners = [user() for _ in range(6)]
    wallets = [funded_wallet(ledger, owner, 50_000) for owner in owners]
    owner_of = dict(zip(wallets, owners, strict=True))
    holds: list[tuple[str, uuid.UUID]] = []  # (hold, merchant's owner)
    payments: list[tuple[str, uuid.UUID]] = []  # (transaction, recipient)
    seen: dict[str, int] = defaultdict(int)
    lock = threading.Lock()
    start = datetime.now(UTC)

    def worker(index: int) -> None:
        rng = random.Random(1000 + index)
        with psycopg.connect(ledger_conninfo, autocommit=True) as conn:
            client = LedgerClient(conn)
            for _ in range(150):
                source, destination = rng.sample(wallets, 2)
                payer, payee = owner_of[source], owner_of[destination]
                amount = rng.randint(1, 2_000)
                choice = rng.random()
                if choice < 0.35:
                    result = client.transfer(payer, source, destination, amount)
                    if result["outcome"] == "ok":
                        with lock:
                            payments.append((result["transaction"]["id"], payee))
                elif choice < 0.5:
                    expires = start + timedelta(minutes=rng.randint(1, 120))
                    result = client.create_hold(
                        payer, source, destination, amount, expires_at=expires
                    )
                    if result["outcome"] == "ok":
                        with lock:
                            holds.append((result["hold"]["id"], payee))
                elif choice < 0.6 and holds:
                    hold, merchant = rng.choice(holds)
                    part = rng.choice([None, rng.randint(1, 500)])
                    result = client.capture_hold(merchant, hold, part, now=start)
                    if result["outcome"] == "ok":
                        with lock:
                            payments.append((result["transaction"]["id"], merchant))
                elif choice < 0.65 and holds:
                    hold, merchant = rng.choice(holds)
                    result = client.void_hold(merchant, hold)
                elif choice < 0.77 and payments:
                    txn, recipient = rng.choice(payments)
                    part = rng.choice([None, rng.randint(1, 300)])
                    result = client.refund(recipient, txn, part)
                elif choice < 0.87:
                    result = client.adjust(OPERATOR, source, rng.choice([-1, 1]) * amount)
                elif choice < 0.95:
                    status = rng.choice(["frozen", "active"])
                    result = client.set_status(OPERATOR, source, status)
                else:
                    client.expire_holds(start + timedelta(minutes=60), limit=5)
                    result = {"outcome": "expired"}
                with lock:
                    seen[result["outcome"]] += 1

    assert run_threads(8, worker) == []
    assert seen["ok"] > 300
    assert ledger.audit() == []
    with psycopg.connect(ledger_conninfo, autocommit=True) as conn:
        conn.execute("SELECT ledger_expire_holds(%s, 10000)", (start + timedelta(days=1),))
    assert ledger.scalar("SELECT sum(held) FROM accounts") == 0
    assert ledger.scalar("SELECT count(*) FROM holds WHERE status = 'active'") == 0
    assert ledger.audit() == []


def test_concurrent_refunds_and_captures_happen_once(
    ledger: LedgerClient, ledger_conninfo: str
) -> None:
    ada, bob = user(), user()
    a = funded_wallet(ledger, ada, 10_000)
    b = funded_wallet(ledger, bob, 0)
    original = ledger.transfer(ada, a, b, 1_000)["transaction"]["id"]
    holds = [ledger.create_hold(ada, a, b, 500)["hold"]["id"] for _ in range(3)]
    results: list[str] = []

    def worker(index: int) -> None:
        with psycopg.connect(ledger_conninfo, autocommit=True) as conn:
            client = LedgerClient(conn)
            outcome = client.refund(bob, original, None)["outcome"]
            captures = [client.capture_hold(bob, hold, None)["outcome"] for hold in holds]
            results.extend([outcome, *captures])

    assert run_threads(8, worker) == []
    assert results.count("ok") == 1 + len(holds)
    assert set(results) <= {"ok", "not_refundable", "hold_not_active"}
    assert (ledger.balance(a), ledger.balance(b)) == (8_500, 1_500)
    assert ledger.audit() == []


def test_concurrent_first_adjustments_create_one_settlement_account_per_shard(
    ledger: LedgerClient, ledger_conninfo: str
) -> None:
    wallets = [
        ledger.create_wallet(user(7 if i % 2 else 200), "CHF")["wallet"]["id"] for i in range(8)
    ]

    def worker(index: int) -> None:
        with psycopg.connect(ledger_conninfo, autocommit=True) as conn:
            assert (
                LedgerClient(conn).adjust(OPERATOR, wallets[index], 100, "CHF")["outcome"] == "ok"
            )

    assert run_threads(8, worker) == []
    settlement = (
        "SELECT array_agg(ledger_shard_of(id) ORDER BY ledger_shard_of(id)) FROM accounts"
        " WHERE kind = 'settlement' AND currency = 'CHF'"
    )
    assert ledger.scalar(settlement) == [7, 200]
    assert ledger.audit() == []


def test_concurrent_wallet_creation_makes_one_wallet(
    ledger: LedgerClient, ledger_conninfo: str
) -> None:
    owner = user()
    results: list[str] = []

    def worker(index: int) -> None:
        with psycopg.connect(ledger_conninfo, autocommit=True) as conn:
            results.append(LedgerClient(conn).create_wallet(owner, "EUR")["outcome"])

    assert run_threads(8, worker) == []
    assert sorted(results) == ["ok"] + ["wallet_exists"] * 7


# --- the audit ----------------------------------------------------------------------------


@pytest.fixture
def tampering(
    ledger: LedgerClient, ledger_conninfo: str
) -> Iterator[tuple[psycopg.Connection[Any], dict[str, str]]]:
    """A sound ledger, and a connection in a transaction that is rolled back at the end:
    what a test breaks there is never committed."""
    ada, bob = user(), user()
    ids = {
        "a": funded_wallet(ledger, ada, 1_000),
        "b": funded_wallet(ledger, bob, 0),
    }
    ids["transfer"] = ledger.transfer(ada, ids["a"], ids["b"], 300)["transaction"]["id"]
    ids["hold"] = ledger.create_hold(ada, ids["a"], ids["b"], 100)["hold"]["id"]
    ids["refund"] = ledger.refund(bob, ids["transfer"], 50)["transaction"]["id"]
    assert ledger.audit() == []
    with psycopg.connect(ledger_conninfo) as conn:
        conn.execute("SET LOCAL session_replication_role = replica")  # no triggers
        yield conn, ids
        conn.rollback()
    assert ledger.audit() == []


def audit_in(conn: psycopg.Connection[Any]) -> set[tuple[str, str, str, str]]:
    return set(conn.execute("SELECT * FROM ledger_audit()").fetchall())


def test_audit_reports_a_balance_changed_behind_the_ledgers_back(
    tampering: tuple[psycopg.Connection[Any], dict[str, str]],
) -> None:
    conn, ids = tampering
    conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = %s", (ids["b"],))
    assert audit_in(conn) == {("account_balance", ids["b"], "250", "251")}


def test_audit_reports_an_unbalanced_posting(
    tampering: tuple[psycopg.Connection[Any], dict[str, str]],
) -> None:
    conn, ids = tampering
    conn.execute(
        "INSERT INTO postings (transaction_id, account_id, currency, amount, balance_after,"
        " account_version) VALUES (%s, %s, 'EUR', 7, 257, 3)",
        (ids["transfer"], ids["b"]),
    )
    found = audit_in(conn)
    assert ("transaction_balanced", f"{ids['transfer']} EUR", "0", "7") in found
    assert ("currency_balanced", "EUR", "0", "7") in found
    assert ("account_balance", ids["b"], "257", "250") in found
    assert ("account_version", ids["b"], "3", "2") in found
    assert {name for name, *_ in found} == {
        "transaction_balanced",
        "currency_balanced",
        "shard_balanced",
        "account_balance",
        "account_version",
        "transaction_postings",
    }


def test_audit_reports_a_rewritten_posting(
    tampering: tuple[psycopg.Connection[Any], dict[str, str]],
) -> None:
    conn, ids = tampering
    conn.execute(
        "UPDATE postings SET amount = amount + 10 WHERE transaction_id = %s AND account_id = %s",
        (ids["transfer"], ids["b"]),
    )
    names = {name for name, *_ in audit_in(conn)}
    assert names == {
        "transaction_balanced",
        "currency_balanced",
        "shard_balanced",
        "account_balance",
        "posting_balance_after",
        "transaction_postings",
    }


def test_audit_reports_holds_refunds_and_missing_postings(
    tampering: tuple[psycopg.Connection[Any], dict[str, str]],
) -> None:
    conn, ids = tampering
    conn.execute("UPDATE accounts SET held = 0 WHERE id = %s", (ids["a"],))
    conn.execute("UPDATE transactions SET refunded_amount = 60 WHERE id = %s", (ids["transfer"],))
    conn.execute("DELETE FROM postings WHERE transaction_id = %s", (ids["refund"],))
    conn.execute(
        "UPDATE accounts SET balance = balance + CASE WHEN id = %s THEN -50 ELSE 50 END,"
        " version = version - 1 WHERE id IN (%s, %s)",
        (ids["a"], ids["a"], ids["b"]),
    )
    found = audit_in(conn)
    assert ("account_held", ids["a"], "100", "0") in found
    assert ("refunded_amount", ids["transfer"], "50", "60") in found
    assert ("transaction_has_postings", ids["refund"], "postings", "none") in found
    assert {name for name, *_ in found} == {
        "account_held",
        "refunded_amount",
        "transaction_has_postings",
    }


def test_audit_reports_a_wallet_below_its_floor(
    tampering: tuple[psycopg.Connection[Any], dict[str, str]],
) -> None:
    conn, ids = tampering
    conn.execute(
        "ALTER TABLE accounts DROP CONSTRAINT accounts_available_check"
    )  # rolled back with the rest
    conn.execute("UPDATE accounts SET held = held + 10000 WHERE id = %s", (ids["a"],))
    conn.execute(
        # With the triggers off, the id too (holds_place_on_shard gives it otherwise).
        "INSERT INTO holds (id, account_id, merchant_account_id, merchant_owner_id, currency,"
        " amount, expires_at, created_by) VALUES (gen_random_uuid(), %s, %s,"
        " (SELECT owner_id FROM accounts WHERE id = %s), 'EUR', 10000,"
        " now() + interval '1 day', %s)",
        (ids["a"], ids["b"], ids["b"], str(uuid.uuid4())),
    )
    assert audit_in(conn) == {("wallet_available", ids["a"], ">= 0", "-9350")}


def test_audit_reports_a_hold_naming_another_merchant_than_its_wallets_owner(
    tampering: tuple[psycopg.Connection[Any], dict[str, str]],
) -> None:
    """Holds name their merchant wallet without a foreign key (it may be another
    database's); one of this database is checked by the audit instead."""
    conn, ids = tampering
    stranger = str(uuid.uuid4())
    conn.execute("UPDATE holds SET merchant_owner_id = %s WHERE id = %s", (stranger, ids["hold"]))
    [(name, subject, expected, _)] = [f for f in audit_in(conn) if f[0] == "hold_merchant"]
    assert (name, subject, expected) == ("hold_merchant", ids["hold"], f"EUR wallet of {stranger}")


# --- batches ----------------------------------------------------------------------------


def test_a_batch_books_each_transfer_with_its_own_outcome(ledger: LedgerClient) -> None:
    ada, bob, cat = user(), user(), user()
    a = funded_wallet(ledger, ada, 1_000)
    b = funded_wallet(ledger, bob, 0)
    c = funded_wallet(ledger, cat, 0)
    items = [
        batch_item(a, b, 600),
        batch_item(a, c, 600),  # only 400 left: refused, the others go on
        batch_item(a, c, 400),
        batch_item(a, str(uuid.uuid4()), 1),
    ]
    results = transfer_batch(ledger, ada, items)
    assert [r["outcome"] for r in results] == [
        "ok",
        "insufficient_funds",
        "ok",
        "destination_not_found",
    ]
    assert (ledger.balance(a), ledger.balance(b), ledger.balance(c)) == (0, 600, 400)
    # The same batch again: the booked ones replay, the refused ones are asked again.
    again = transfer_batch(ledger, ada, items)
    assert [r["outcome"] for r in again] == [
        "replayed",
        "insufficient_funds",
        "replayed",
        "destination_not_found",
    ]
    assert again[0]["transaction"]["id"] == results[0]["transaction"]["id"]
    # A key of the batch sent alone (same request) is the same transfer.
    alone = ledger.transfer(ada, a, b, 600, key=items[0]["key"])
    assert alone["outcome"] == "replayed"
    assert (ledger.balance(a), ledger.balance(b), ledger.balance(c)) == (0, 600, 400)
    assert ledger.audit() == []


def test_a_batch_cannot_spend_another_owners_wallet_and_must_be_well_formed(
    ledger: LedgerClient,
) -> None:
    ada, bob = user(), user()
    a = funded_wallet(ledger, ada, 1_000)
    b = funded_wallet(ledger, bob, 1_000)
    results = transfer_batch(ledger, ada, [batch_item(b, a, 10)])
    assert [r["outcome"] for r in results] == ["wallet_not_found"]
    assert (ledger.balance(a), ledger.balance(b)) == (1_000, 1_000)
    for bad in ([], [batch_item(a, b, 1)] * 101, [batch_item(a, b, 0)]):
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            transfer_batch(ledger, ada, bad)
    # Rolled back as a whole: nothing of a failing batch stays.
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        transfer_batch(ledger, ada, [batch_item(a, b, 5), batch_item(a, b, -1)])
    assert (ledger.balance(a), ledger.balance(b)) == (1_000, 1_000)


def test_batches_crossing_each_other_never_deadlock(
    ledger: LedgerClient, ledger_conninfo: str
) -> None:
    """Each batch locks all its wallets in id order first: two batches over the same
    wallets in opposite orders, and single transfers among them, all go through."""
    owners = [user() for _ in range(6)]
    wallets = [funded_wallet(ledger, owner, 100_000) for owner in owners]

    def worker(index: int) -> None:
        rng = random.Random(500 + index)
        with psycopg.connect(ledger_conninfo, autocommit=True) as conn:
            client = LedgerClient(conn)
            for _ in range(60):
                payer = rng.randrange(len(wallets))
                others = [w for i, w in enumerate(wallets) if i != payer]
                rng.shuffle(others)
                if rng.random() < 0.7:
                    items = [batch_item(wallets[payer], w, rng.randint(1, 50)) for w in others]
                    results = transfer_batch(client, owners[payer], items)
                    assert {r["outcome"] for r in results} <= {"ok", "insufficient_funds"}
                else:
                    result = client.transfer(owners[payer], wallets[payer], others[0], 7)
                    assert result["outcome"] in {"ok", "insufficient_funds"}

    assert run_threads(8, worker) == []
    assert ledger.audit() == []
    assert sum(ledger.balance(w) for w in wallets) == 100_000 * len(wallets)
