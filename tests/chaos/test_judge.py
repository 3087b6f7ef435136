"""The checker's ledger checks catch what they are for: books built by hand, clean and
then broken one way at a time (no mesh needed; the chaos run reads real books)."""

from __future__ import annotations

import dataclasses

from tests.chaos.checker import Books, judge_books
from tests.chaos.history import Attempt, Clock, History, Intent, ItemResult, Outcome

FUNDING = 2_000  # 1,000 in each of two wallets


def history() -> History:
    """t1: a transfer W1 → W2 of 100, acknowledged as T1; u1: a top-up of 50 into W1,
    acknowledged as U1."""
    book = History(Clock())
    book.add_intent(Intent("t1", 0, "transfer", "owner1", "W1", "W2", 100))
    book.add_intent(Intent("u1", 0, "top_up", "owner1", None, "W1", 50, "pm_card_visa"))
    for key, txn in (("t1", "T1"), ("u1", "U1")):
        answered = Attempt(0, "transfer", "rest", [key], "first", 1.0, 10.0, 1.2, Outcome.OK)
        answered.results[key] = ItemResult(Outcome.OK, "200", txn, "TRANSACTION_STATUS_POSTED")
        book.attempts.append(answered)
    return book


def clean_books() -> Books:
    return Books(
        transactions=[
            ("A1", "adjustment", "posted", 1_000, "S", "W1", None),
            ("A2", "adjustment", "posted", 1_000, "S", "W2", None),
            ("T1", "transfer", "posted", 100, "W1", "W2", "t1"),
            ("U1", "top_up", "posted", 50, "S", "W1", None),
        ],
        wallets={"W1": (950, 0, 0), "W2": (1_100, 0, 0)},
        settlement=-2_050,
        charges={"U1": ("succeeded", 50)},
        stored={("owner1", "t1"): "T1", ("owner1", "u1"): "U1"},
    )


def test_clean_books_pass() -> None:
    verdict = judge_books(history(), FUNDING, clean_books())
    assert (verdict.violations, verdict.lost, verdict.duplicated) == ([], 0, 0)


def test_an_acknowledged_transfer_missing_is_lost() -> None:
    books = clean_books()
    books.transactions.remove(("T1", "transfer", "posted", 100, "W1", "W2", "t1"))
    books.wallets.update({"W1": (1_050, 0, 0), "W2": (1_000, 0, 0)})
    verdict = judge_books(history(), FUNDING, books)
    assert verdict.lost == 1
    assert any("acknowledged" in v and "not booked" in v for v in verdict.violations)


def test_a_transfer_booked_twice_is_duplicated_and_breaks_the_balances() -> None:
    books = clean_books()
    books.transactions.append(("T2", "transfer", "posted", 100, "W1", "W2", "t1"))
    verdict = judge_books(history(), FUNDING, books)
    assert verdict.duplicated == 1
    assert any("W1: balance 950, transactions 850" in v for v in verdict.violations)


def test_money_nobody_asked_for_is_found() -> None:
    books = clean_books()
    books.transactions.append(("X1", "transfer", "posted", 10, "W1", "W2", "stranger"))
    books.transactions.append(("X2", "top_up", "posted", 7, "S", "W2", None))
    books.wallets.update({"W1": (940, 0, 0), "W2": (1_117, 0, 0)})
    books.settlement = -2_057
    verdict = judge_books(history(), FUNDING, books)
    assert any("no client asked for: 'stranger'" in v for v in verdict.violations)
    assert any("top-up X2 booked that no client asked for" in v for v in verdict.violations)
    # The top-up has no charge at the provider behind it.
    assert any("the provider charged 50, the ledger posted 57" in v for v in verdict.violations)


def test_a_top_up_tried_again_under_its_key_leaves_the_unsent_attempt_keyless() -> None:
    books = clean_books()
    books.transactions.append(("U0", "top_up", "failed", 50, "S", "W1", None))
    assert judge_books(history(), FUNDING, books).violations == [
        "top-up U0 booked that no client asked for"
    ]
    books.unsent = frozenset({"U0"})
    assert judge_books(history(), FUNDING, books).violations == []


def test_a_top_up_must_agree_with_the_provider() -> None:
    uncharged = dataclasses.replace(clean_books(), charges={})
    assert any(
        "posted, provider has None" in v
        for v in judge_books(history(), FUNDING, uncharged).violations
    )
    failed = clean_books()
    failed.transactions[3] = ("U1", "top_up", "failed", 50, "S", "W1", None)
    failed.wallets["W1"] = (900, 0, 0)
    failed.settlement = -2_000
    verdict = judge_books(history(), FUNDING, failed)
    assert verdict.lost == 1  # charged at the card, never credited
    assert any("failed, but the provider charged it" in v for v in verdict.violations)


def test_money_must_be_conserved_and_wallets_above_their_limit() -> None:
    books = clean_books()
    books.wallets["W2"] = (1_100, 1_200, 0)  # holds more than it has
    books.settlement = -2_000
    verdict = judge_books(history(), FUNDING + 1, books)
    assert any("below limit" in v for v in verdict.violations)
    assert any(
        "money: wallets hold 2050, funding + posted top-ups" in v for v in verdict.violations
    )
    assert any("money: settlement holds -2000, wallets 2050" in v for v in verdict.violations)
