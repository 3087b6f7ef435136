"""Top-ups and withdrawals in the ledger's SQL (migration 0002) on real PostgreSQL:
`ledger_begin_external`, `ledger_settle_external`, `ledger_claim_due_external`, the
payment_pending check of `ledger_close_wallet`, the transactions guard trigger and the
audit, called with psycopg the way the transaction service calls them."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.integration.ledger_client import (
    OPERATOR,
    PROVIDER,
    LedgerClient,
    Result,
    funded_wallet,
    request_hash,
    run_threads,
    user,
)

# --- top-ups ------------------------------------------------------------------------------


def test_top_up_is_pending_without_postings_then_settles_once(ledger: LedgerClient) -> None:
    ada = user()
    wallet = funded_wallet(ledger, ada, 1_000)
    settlement = ledger.settlement(wallet)
    settlement_before = ledger.money(settlement)

    begun = ledger.top_up(ada, wallet, 2_500, instrument="pm_card_visa")

    assert begun["outcome"] == "ok"
    txn = begun["transaction"]
    assert (txn["type"], txn["status"], txn["amount"], txn["currency"]) == (
        "top_up",
        "pending",
        2_500,
        "EUR",
    )
    assert (txn["source_account_id"], txn["destination_account_id"]) == (settlement, wallet)
    assert (txn["source_owner_id"], txn["destination_owner_id"]) == (None, str(ada))
    assert (txn["payment_provider"], txn["failure_code"]) == (PROVIDER, None)
    assert (begun["wallet"]["balance"], begun["wallet"]["held"]) == (1_000, 0)
    assert ledger.postings(txn["id"]) == []
    assert ledger.money(wallet) == (1_000, 0)
    assert ledger.money(settlement) == settlement_before
    external = ledger.external(txn["id"])
    assert (external["pending"], external["provider"], external["instrument"]) == (
        True,
        PROVIDER,
        "pm_card_visa",
    )
    assert external["checks"] == 0
    assert ledger.audit() == []

    settled = ledger.settle(txn["id"], True)

    assert settled["outcome"] == "settled"
    assert settled["transaction"]["status"] == "posted"
    assert settled["transaction"]["failure_code"] is None
    assert settled["wallet"]["balance"] == 3_500
    assert ledger.postings(txn["id"]) == [(settlement, -2_500), (wallet, 2_500)]
    assert ledger.money(wallet) == (3_500, 0)
    assert ledger.money(settlement) == (settlement_before[0] - 2_500, 0)
    stored = ledger.transaction(txn["id"])
    assert stored["status"] == "posted"
    assert stored["settled_at"] is not None
    assert ledger.external(txn["id"])["pending"] is False
    assert ledger.audit() == []

    before = ledger.snapshot()
    for succeeded, code in ((True, None), (False, "card_declined")):
        again = ledger.settle(txn["id"], succeeded, code, "late answer")
        assert again["outcome"] == "already_settled"
        assert again["transaction"]["status"] == "posted"
        assert again["transaction"]["failure_code"] is None
        assert again["wallet"]["balance"] == 3_500
    assert ledger.snapshot() == before


def test_failed_top_up_moves_no_money_and_stays_failed(ledger: LedgerClient) -> None:
    ada = user()
    wallet = funded_wallet(ledger, ada, 1_000)
    txn = ledger.top_up(ada, wallet, 700)["transaction"]["id"]

    settled = ledger.settle(txn, False, "card_declined", "Your card was declined.")

    assert settled["outcome"] == "settled"
    assert settled["transaction"]["status"] == "failed"
    assert settled["transaction"]["failure_code"] == "card_declined"
    assert settled["transaction"]["failure_message"] == "Your card was declined."
    assert ledger.postings(txn) == []
    assert ledger.money(wallet) == (1_000, 0)
    assert ledger.external(txn)["pending"] is False
    before = ledger.snapshot()
    again = ledger.settle(txn, True)
    assert again["outcome"] == "already_settled"
    assert again["transaction"]["status"] == "failed"
    assert ledger.snapshot() == before
    assert ledger.audit() == []


def test_settle_refuses_bad_arguments_and_unknown_transactions(ledger: LedgerClient) -> None:
    ada, bob = user(), user()
    wallet = funded_wallet(ledger, ada, 1_000)
    other = funded_wallet(ledger, bob, 0)
    txn = ledger.top_up(ada, wallet, 100)["transaction"]["id"]
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        ledger.settle(txn, False, None)
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        ledger.settle(txn, False, "")
    assert ledger.transaction(txn)["status"] == "pending"
    assert ledger.settle(str(uuid.uuid4()), True) == {"outcome": "transaction_not_found"}
    transfer = ledger.mutate(
        "ledger_transfer",
        ada,
        uuid.UUID(wallet),
        uuid.UUID(other),
        10,
        "EUR",
        None,
        Jsonb({}),
    )
    assert transfer["outcome"] == "ok"
    assert ledger.settle(transfer["transaction"]["id"], True) == {
        "outcome": "transaction_not_found"
    }


def test_concurrent_settles_of_one_top_up_credit_it_once(
    ledger: LedgerClient, ledger_conninfo: str
) -> None:
    ada = user()
    wallet = funded_wallet(ledger, ada, 0)
    ledger.adjust(OPERATOR, wallet, 1, "EUR", "funding")  # creates the settlement account
    txn = ledger.top_up(ada, wallet, 5_000)["transaction"]["id"]
    settlement = ledger.settlement(wallet)
    settlement_before = ledger.money(settlement)[0]
    barrier = threading.Barrier(8, timeout=30)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        with psycopg.connect(ledger_conninfo, autocommit=True) as conn:
            client = LedgerClient(conn)
            barrier.wait()
            result = client.settle(txn, True)
            with lock:
                outcomes.append(result["outcome"])

    assert run_threads(8, worker) == []
    assert Counter(outcomes) == {"settled": 1, "already_settled": 7}
    assert len(ledger.postings(txn)) == 2
    assert ledger.money(wallet) == (5_001, 0)
    assert ledger.money(settlement)[0] == settlement_before - 5_000
    assert ledger.transaction(txn)["status"] == "posted"
    assert ledger.audit() == []


def test_concurrent_mixed_settles_of_one_withdrawal_settle_it_once(
    ledger: LedgerClient, ledger_conninfo: str
) -> None:
    """Half the callers say it succeeded, half that it failed: the first one wins, and the
    wallet agrees with the status it left."""
    ada = user()
    wallet = funded_wallet(ledger, ada, 10_000)
    txn = ledger.withdraw(ada, wallet, 4_000)["transaction"]["id"]
    barrier = threading.Barrier(8, timeout=30)
    results: list[Result] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        with psycopg.connect(ledger_conninfo, autocommit=True) as conn:
            client = LedgerClient(conn)
            barrier.wait()
            succeeded = index % 2 == 0
            result = client.settle(txn, succeeded, None if succeeded else "account_closed")
            with lock:
                results.append(result)

    assert run_threads(8, worker) == []
    assert Counter(r["outcome"] for r in results) == {"settled": 1, "already_settled": 7}
    status = ledger.transaction(txn)["status"]
    assert {r["transaction"]["status"] for r in results} == {status}
    if status == "posted":
        assert ledger.money(wallet) == (6_000, 0)
        assert len(ledger.postings(txn)) == 2
    else:
        assert status == "failed"
        assert ledger.money(wallet) == (10_000, 0)
        assert ledger.postings(txn) == []
    assert ledger.audit() == []


# --- withdrawals --------------------------------------------------------------------------


def test_withdrawal_holds_then_a_failure_releases_the_hold(ledger: LedgerClient) -> None:
    ada = user()
    wallet = funded_wallet(ledger, ada, 10_000)
    settlement = ledger.settlement(wallet)
    settlement_before = ledger.money(settlement)

    begun = ledger.withdraw(ada, wallet, 3_000)

    assert begun["outcome"] == "ok"
    txn = begun["transaction"]
    assert (txn["type"], txn["status"]) == ("withdrawal", "pending")
    assert (txn["source_account_id"], txn["destination_account_id"]) == (wallet, settlement)
    assert (txn["source_owner_id"], txn["destination_owner_id"]) == (str(ada), None)
    assert (begun["wallet"]["balance"], begun["wallet"]["held"]) == (10_000, 3_000)
    assert ledger.money(wallet) == (10_000, 3_000)  # available 7_000
    assert ledger.postings(txn["id"]) == []
    assert ledger.audit() == []
    # The held amount cannot be spent again.
    assert ledger.withdraw(ada, wallet, 7_001)["outcome"] == "insufficient_funds"

    settled = ledger.settle(txn["id"], False, "account_closed", "The bank account is closed.")

    assert settled["outcome"] == "settled"
    assert settled["transaction"]["status"] == "failed"
    assert settled["transaction"]["failure_code"] == "account_closed"
    assert (settled["wallet"]["balance"], settled["wallet"]["held"]) == (10_000, 0)
    assert ledger.money(wallet) == (10_000, 0)
    assert ledger.money(settlement) == settlement_before
    assert ledger.postings(txn["id"]) == []
    assert ledger.transaction(txn["id"])["failure_code"] == "account_closed"
    assert ledger.audit() == []


def test_withdrawal_that_succeeds_posts_the_debit_and_releases_the_hold(
    ledger: LedgerClient,
) -> None:
    ada = user()
    wallet = funded_wallet(ledger, ada, 10_000)
    settlement = ledger.settlement(wallet)
    settlement_before = ledger.money(settlement)[0]
    txn = ledger.withdraw(ada, wallet, 3_000)["transaction"]["id"]
    assert ledger.money(wallet) == (10_000, 3_000)

    settled = ledger.settle(txn, True)

    assert settled["outcome"] == "settled"
    assert settled["transaction"]["status"] == "posted"
    assert (settled["wallet"]["balance"], settled["wallet"]["held"]) == (7_000, 0)
    assert ledger.money(wallet) == (7_000, 0)
    assert ledger.money(settlement)[0] == settlement_before + 3_000
    assert ledger.postings(txn) == [(wallet, -3_000), (settlement, 3_000)]
    assert ledger.settle(txn, False, "late")["outcome"] == "already_settled"
    assert ledger.money(wallet) == (7_000, 0)
    assert ledger.audit() == []


def test_withdrawal_beyond_the_available_amount_writes_nothing(ledger: LedgerClient) -> None:
    ada = user()
    wallet = funded_wallet(ledger, ada, 1_000)
    assert ledger.withdraw(ada, wallet, 400)["outcome"] == "ok"  # 600 available
    before = ledger.snapshot()

    assert ledger.withdraw(ada, wallet, 601) == {"outcome": "insufficient_funds"}

    assert ledger.snapshot() == before
    assert ledger.money(wallet) == (1_000, 400)
    assert ledger.withdraw(ada, wallet, 600)["outcome"] == "ok"
    assert ledger.money(wallet) == (1_000, 1_000)
    assert ledger.audit() == []


# --- idempotency --------------------------------------------------------------------------


def test_same_key_and_request_replays_and_moves_nothing(ledger: LedgerClient) -> None:
    ada = user()
    wallet = funded_wallet(ledger, ada, 5_000)
    first = ledger.withdraw(ada, wallet, 1_000, key="w-1")
    assert first["outcome"] == "ok"
    before = ledger.snapshot()

    again = ledger.withdraw(
        ada, wallet, 1_000, key="w-1", first_check_at=datetime.now(UTC) + timedelta(hours=1)
    )

    assert again["outcome"] == "replayed"
    assert again["transaction"]["id"] == first["transaction"]["id"]
    assert again == first | {"outcome": "replayed"}
    assert ledger.snapshot() == before
    assert ledger.money(wallet) == (5_000, 1_000)  # held once

    top = ledger.top_up(ada, wallet, 300, key="t-1")
    assert (
        ledger.top_up(ada, wallet, 300, key="t-1")["transaction"]["id"]
        == (top["transaction"]["id"])
    )
    assert ledger.scalar("SELECT count(*) FROM transactions WHERE type = 'top_up'") == 1


def test_same_key_with_another_request_is_a_mismatch(ledger: LedgerClient) -> None:
    ada = user()
    wallet = funded_wallet(ledger, ada, 5_000)
    assert ledger.withdraw(ada, wallet, 1_000, key="k")["outcome"] == "ok"
    before = ledger.snapshot()

    assert ledger.withdraw(ada, wallet, 1_001, key="k") == {"outcome": "key_mismatch"}
    assert ledger.withdraw(ada, wallet, 1_000, key="k", hash_extra="other") == {
        "outcome": "key_mismatch"
    }
    # The same key for the other operation, even with the same hash.
    assert ledger.call(
        "ledger_begin_external",
        ada,
        "k",
        request_hash("withdrawal", wallet, 1_000, "EUR", PROVIDER, "ba_123", None),
        "top_up",
        uuid.UUID(wallet),
        1_000,
        "EUR",
        PROVIDER,
        "ba_123",
        datetime.now(UTC),
    ) == {"outcome": "key_mismatch"}

    assert ledger.snapshot() == before


# --- refusals -----------------------------------------------------------------------------


def test_wallets_that_cannot_take_a_payment_refuse_and_write_nothing(ledger: LedgerClient) -> None:
    ada, bob, cat, dan = (user() for _ in range(4))
    active = funded_wallet(ledger, ada, 1_000)
    frozen = funded_wallet(ledger, bob, 1_000)
    closed = funded_wallet(ledger, cat, 0)
    usd = funded_wallet(ledger, dan, 1_000, "USD")
    assert ledger.set_status(OPERATOR, frozen, "frozen")["outcome"] == "ok"
    assert ledger.close_wallet(cat, closed)["outcome"] == "ok"
    before = ledger.snapshot()

    for kind in ("top_up", "withdrawal"):
        assert ledger.begin(bob, kind, frozen, 10) == {"outcome": "wallet_frozen"}
        assert ledger.begin(cat, kind, closed, 10) == {"outcome": "wallet_closed"}
        assert ledger.begin(bob, kind, active, 10) == {"outcome": "wallet_not_found"}
        assert ledger.begin(ada, kind, str(uuid.uuid4()), 10) == {"outcome": "wallet_not_found"}
        assert ledger.begin(ada, kind, active, 10, "USD") == {"outcome": "currency_mismatch"}
        assert ledger.begin(dan, kind, usd, 10, "EUR") == {"outcome": "currency_mismatch"}
        # A settlement account is not a wallet.
        assert ledger.begin(ada, kind, ledger.settlement(active), 10) == {
            "outcome": "wallet_not_found"
        }

    assert ledger.snapshot() == before


def test_a_refusal_in_a_new_currency_creates_no_settlement_account(ledger: LedgerClient) -> None:
    """The settlement account of a currency is created on first use, and a refused
    call is no use: it writes nothing, not even that account."""
    ada, bob = user(), user()
    frozen = funded_wallet(ledger, ada, 0, "GBP")
    assert ledger.set_status(OPERATOR, frozen, "frozen")["outcome"] == "ok"
    empty = ledger.new_wallet(bob, "CHF")
    before = ledger.snapshot()

    assert ledger.begin(ada, "top_up", frozen, 10, "GBP") == {"outcome": "wallet_frozen"}
    assert ledger.begin(bob, "withdrawal", empty, 10, "CHF") == {"outcome": "insufficient_funds"}

    assert ledger.snapshot() == before
    assert (
        ledger.scalar(
            "SELECT count(*) FROM accounts WHERE kind = 'settlement' AND currency IN ('GBP', 'CHF')"
        )
        == 0
    )


def test_programming_errors_raise(ledger: LedgerClient) -> None:
    ada = user()
    wallet = funded_wallet(ledger, ada, 1_000)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="type"):
        ledger.begin(ada, "transfer", wallet, 10)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="amount"):
        ledger.top_up(ada, wallet, 0)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="currency"):
        ledger.top_up(ada, wallet, 10, currency="eur")
    with pytest.raises(psycopg.errors.CheckViolation):
        ledger.top_up(ada, wallet, 10, provider="Not-A-Provider")
    assert ledger.scalar("SELECT count(*) FROM external_payments") == 0
    assert ledger.scalar("SELECT count(*) FROM transactions WHERE type = 'top_up'") == 0


# --- closing a wallet ---------------------------------------------------------------------


def test_a_pending_top_up_keeps_the_wallet_open(ledger: LedgerClient) -> None:
    ada = user()
    wallet = ledger.new_wallet(ada)
    txn = ledger.top_up(ada, wallet, 500)["transaction"]["id"]

    assert ledger.close_wallet(ada, wallet) == {"outcome": "payment_pending"}
    assert ledger.account(wallet)["status"] == "active"

    assert ledger.settle(txn, False, "card_declined")["outcome"] == "settled"
    closed = ledger.close_wallet(ada, wallet)
    assert closed["outcome"] == "ok"
    assert closed["wallet"]["status"] == "closed"
    assert ledger.audit() == []


def test_a_settled_top_up_leaves_the_wallet_closable_once_emptied(ledger: LedgerClient) -> None:
    ada = user()
    wallet = ledger.new_wallet(ada)
    top_up = ledger.top_up(ada, wallet, 500)["transaction"]["id"]
    assert ledger.close_wallet(ada, wallet) == {"outcome": "payment_pending"}
    assert ledger.settle(top_up, True)["outcome"] == "settled"

    assert ledger.close_wallet(ada, wallet) == {"outcome": "balance_not_zero"}
    withdrawal = ledger.withdraw(ada, wallet, 500)["transaction"]["id"]
    assert ledger.close_wallet(ada, wallet) == {"outcome": "balance_not_zero"}  # held
    assert ledger.settle(withdrawal, True)["outcome"] == "settled"

    assert ledger.close_wallet(ada, wallet)["outcome"] == "ok"
    assert ledger.money(wallet) == (0, 0)
    assert ledger.top_up(ada, wallet, 1) == {"outcome": "wallet_closed"}
    assert ledger.audit() == []


# --- the guard trigger --------------------------------------------------------------------


@pytest.fixture
def settled_payments(ledger: LedgerClient) -> dict[str, str]:
    ada = user()
    wallet = funded_wallet(ledger, ada, 10_000)
    posted = ledger.top_up(ada, wallet, 100)["transaction"]["id"]
    failed = ledger.withdraw(ada, wallet, 100)["transaction"]["id"]
    pending = ledger.top_up(ada, wallet, 100)["transaction"]["id"]
    ledger.settle(posted, True)
    ledger.settle(failed, False, "account_closed", "closed")
    return {"posted": posted, "failed": failed, "pending": pending}


@pytest.mark.parametrize(
    ("which", "assignment"),
    [
        ("posted", "status = 'pending'"),
        ("posted", "status = 'failed', failure_code = 'x'"),
        ("posted", "failure_code = 'x'"),
        ("posted", "failure_message = 'x'"),
        ("posted", "settled_at = settled_at + interval '1 second'"),
        ("failed", "status = 'posted', failure_code = NULL, failure_message = NULL"),
        ("failed", "status = 'posted'"),
        ("failed", "status = 'pending', failure_code = NULL"),
        ("failed", "failure_code = 'other'"),
        ("pending", "amount = amount + 1"),
        ("pending", "payment_provider = 'stripe'"),
        ("posted", "amount = amount + 1"),
    ],
)
def test_guard_trigger_refuses_rewriting_a_payment(
    ledger: LedgerClient, settled_payments: dict[str, str], which: str, assignment: str
) -> None:
    transaction = settled_payments[which]
    before = ledger.transaction(transaction)
    with pytest.raises(psycopg.errors.RestrictViolation):
        ledger.conn.execute(
            sql.SQL("UPDATE transactions SET {} WHERE id = %s").format(sql.SQL(assignment)),
            (transaction,),
        )
    assert ledger.transaction(transaction) == before


def test_guard_trigger_lets_a_pending_payment_settle_once(
    ledger: LedgerClient, settled_payments: dict[str, str]
) -> None:
    pending = settled_payments["pending"]
    ledger.conn.execute(
        "UPDATE transactions SET status = 'failed', failure_code = 'x', settled_at = now()"
        " WHERE id = %s",
        (pending,),
    )
    assert ledger.transaction(pending)["status"] == "failed"
    with pytest.raises(psycopg.errors.RestrictViolation):
        ledger.conn.execute(
            "UPDATE transactions SET status = 'posted', failure_code = NULL WHERE id = %s",
            (pending,),
        )


# --- the reconciler's queue ---------------------------------------------------------------


def test_claim_returns_only_due_pending_payments_and_pushes_them_back(ledger: LedgerClient) -> None:
    ada = user()
    wallet = funded_wallet(ledger, ada, 10_000)
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    due_top_up = ledger.top_up(ada, wallet, 100, first_check_at=now - timedelta(minutes=1))
    due_withdrawal = ledger.withdraw(ada, wallet, 200, first_check_at=now)
    not_yet = ledger.top_up(ada, wallet, 300, first_check_at=now + timedelta(seconds=1))
    settled = ledger.top_up(ada, wallet, 400, first_check_at=now - timedelta(hours=1))
    ledger.settle(settled["transaction"]["id"], True)  # no longer pending
    due = {due_top_up["transaction"]["id"], due_withdrawal["transaction"]["id"]}

    claimed = ledger.claim(now, limit=10, base=10, cap=3600)

    assert {row["transaction_id"] for row in claimed} == due
    by_id = {row["transaction_id"]: row for row in claimed}
    top = by_id[due_top_up["transaction"]["id"]]
    assert (top["type"], top["provider"], top["instrument"], top["amount"], top["currency"]) == (
        "top_up",
        PROVIDER,
        "pm_card_visa",
        100,
        "EUR",
    )
    assert by_id[due_withdrawal["transaction"]["id"]]["instrument"] == "ba_123"
    assert {row["checks"] for row in claimed} == {1}
    for transaction_id in due:
        external = ledger.external(transaction_id)
        assert datetime.fromisoformat(external["next_check_at"]) == now + timedelta(seconds=10)

    assert ledger.claim(now) == []  # claimed: not due again until pushed time
    later = now + timedelta(seconds=10)
    again = ledger.claim(later, base=10, cap=3600)
    assert {row["transaction_id"] for row in again} == due | {not_yet["transaction"]["id"]}
    assert {row["checks"] for row in again if row["transaction_id"] in due} == {2}
    for transaction_id in due:
        external = ledger.external(transaction_id)
        # Exponential: base * 2^(checks before this claim).
        assert datetime.fromisoformat(external["next_check_at"]) == later + timedelta(seconds=20)


def test_claim_respects_its_limit_and_caps_the_backoff(ledger: LedgerClient) -> None:
    ada = user()
    wallet = funded_wallet(ledger, ada, 0)
    now = datetime(2030, 1, 1, tzinfo=UTC)
    ids = [
        ledger.top_up(ada, wallet, 10 + i, first_check_at=now - timedelta(seconds=10 - i))[
            "transaction"
        ]["id"]
        for i in range(5)
    ]
    first = ledger.claim(now, limit=2)
    assert {row["transaction_id"] for row in first} == set(ids[:2])  # the longest due first
    assert len(ledger.claim(now, limit=10)) == 3
    assert ledger.claim(now, limit=10) == []

    # Many checks later the wait is capped.
    ledger.conn.execute(
        "UPDATE external_payments SET checks = 40 WHERE transaction_id = %s", (ids[0],)
    )
    far = now + timedelta(days=365)
    assert ids[0] in {row["transaction_id"] for row in ledger.claim(far, base=10, cap=600)}
    assert datetime.fromisoformat(ledger.external(ids[0])["next_check_at"]) == far + timedelta(
        seconds=600
    )


def test_claim_skips_rows_another_claim_holds(ledger: LedgerClient, ledger_conninfo: str) -> None:
    ada = user()
    wallet = funded_wallet(ledger, ada, 0)
    now = datetime(2030, 1, 1, tzinfo=UTC)
    for i in range(6):
        ledger.top_up(ada, wallet, 10 + i, first_check_at=now - timedelta(seconds=60 - i))
    with psycopg.connect(ledger_conninfo) as holder:  # a claim whose transaction stays open
        held = {row["transaction_id"] for row in LedgerClient(holder).claim(now, limit=3)}
        assert len(held) == 3
        # Were the held rows waited for instead of skipped, this would time out.
        ledger.conn.execute("SET statement_timeout = '5s'")
        others = {row["transaction_id"] for row in ledger.claim(now, limit=10)}
        ledger.conn.execute("RESET statement_timeout")
        holder.commit()
    assert len(others) == 3
    assert held.isdisjoint(others)
    assert ledger.claim(now, limit=10) == []


def test_concurrent_claims_never_return_the_same_row(
    ledger: LedgerClient, ledger_conninfo: str
) -> None:
    ada = user()
    wallet = funded_wallet(ledger, ada, 0)
    now = datetime(2030, 1, 1, tzinfo=UTC)
    expected = {
        ledger.top_up(ada, wallet, 1 + i, first_check_at=now - timedelta(seconds=i))["transaction"][
            "id"
        ]
        for i in range(200)
    }
    claimed: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8, timeout=30)

    def worker(index: int) -> None:
        with psycopg.connect(ledger_conninfo, autocommit=True) as conn:
            client = LedgerClient(conn)
            barrier.wait()
            while True:
                rows = client.claim(now, limit=7)
                if not rows:
                    return
                with lock:
                    claimed.extend(row["transaction_id"] for row in rows)

    assert run_threads(8, worker) == []
    assert len(claimed) == len(set(claimed))
    assert set(claimed) == expected
    assert ledger.scalar("SELECT max(checks) FROM external_payments") == 1


# --- the audit ----------------------------------------------------------------------------


def mixed_payments(ledger: LedgerClient) -> dict[str, str]:
    ada, bob = user(), user()
    ids = {"a": funded_wallet(ledger, ada, 20_000), "b": funded_wallet(ledger, bob, 5_000)}
    for name, owner, wallet, kind, amount in (
        ("top_pending", ada, "a", "top_up", 1_000),
        ("top_posted", ada, "a", "top_up", 2_000),
        ("top_failed", bob, "b", "top_up", 3_000),
        ("out_pending", ada, "a", "withdrawal", 4_000),
        ("out_posted", bob, "b", "withdrawal", 1_500),
        ("out_failed", ada, "a", "withdrawal", 2_500),
    ):
        result = ledger.begin(owner, kind, ids[wallet], amount)
        assert result["outcome"] == "ok"
        ids[name] = result["transaction"]["id"]
    ledger.settle(ids["top_posted"], True)
    ledger.settle(ids["top_failed"], False, "card_declined")
    ledger.settle(ids["out_posted"], True)
    ledger.settle(ids["out_failed"], False, "account_closed")
    return ids


def test_audit_is_clean_after_pending_posted_and_failed_payments(ledger: LedgerClient) -> None:
    ids = mixed_payments(ledger)
    assert ledger.money(ids["a"]) == (22_000, 4_000)
    assert ledger.money(ids["b"]) == (3_500, 0)
    assert ledger.audit() == []


def test_audit_reports_a_held_amount_that_matches_no_pending_withdrawal(
    ledger: LedgerClient, ledger_conninfo: str
) -> None:
    ids = mixed_payments(ledger)
    assert ledger.audit() == []
    with psycopg.connect(ledger_conninfo) as conn:
        conn.execute("UPDATE accounts SET held = held + 1 WHERE id = %s", (ids["a"],))
        found = set(conn.execute("SELECT * FROM ledger_audit()").fetchall())
        assert found == {("account_held", ids["a"], "4000", "4001")}
        conn.rollback()
    assert ledger.money(ids["a"]) == (22_000, 4_000)
    assert ledger.audit() == []


def test_audit_reports_postings_of_a_pending_payment(
    ledger: LedgerClient, ledger_conninfo: str
) -> None:
    ids = mixed_payments(ledger)
    with psycopg.connect(ledger_conninfo) as conn:
        conn.execute("SET LOCAL session_replication_role = replica")  # no triggers
        settlement = conn.execute(
            "SELECT source_account_id FROM transactions WHERE id = %s", (ids["top_pending"],)
        ).fetchone()
        assert settlement is not None
        conn.execute(
            "SELECT ledger_move(%s, %s, %s, 1000, 0)",
            (ids["top_pending"], settlement[0], ids["a"]),
        )
        found = set(conn.execute("SELECT * FROM ledger_audit()").fetchall())
        assert found == {
            ("status_change_without_postings", ids["top_pending"], "none", "2 postings")
        }
        conn.rollback()
    assert ledger.audit() == []
