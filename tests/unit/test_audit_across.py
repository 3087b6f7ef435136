"""The audit across databases (domain/audit_across.py) on samples taken while a leg
moves: each moment a leg can be caught at between the samples is clean, and each leg
missing its other side is found. Database 1 holds shard 1, database 2 shard 2; a leg
of 5 EUR goes from shard 1 to shard 2 (transit(1, 2) then transit(2, 1))."""

from __future__ import annotations

from dataclasses import replace

from services.transaction.domain.audit_across import (
    CreditLeg,
    DebitLeg,
    LegSample,
    across_databases,
)

HELD = [frozenset({1}), frozenset({2})]
EMPTY = LegSample(totals={}, transit={}, debits={}, credits={}, refused={}, outbox={})


def debited(status: str = "pending") -> LegSample:
    """Database 1 once the debit leg is booked (pending: its outbox row is there)."""
    reversed_ = status == "failed"
    return LegSample(
        totals={"EUR": 0},
        transit={(1, 2, "EUR"): 0 if reversed_ else 5},
        debits={"d": DebitLeg(1, 2, "c", 5, "EUR", status)},
        credits={},
        refused={},
        outbox={"d": 5} if status == "pending" else {},
    )


CREDITED = LegSample(
    totals={"EUR": 0},
    transit={(2, 1, "EUR"): -5},
    debits={},
    credits={"d": CreditLeg(2, 1, 5, "EUR")},
    refused={},
    outbox={},
)
REFUSED = replace(EMPTY, refused={"d": 1})


def checks(first: list[LegSample], second: list[LegSample]) -> set[str]:
    return {finding.check for finding in across_databases(HELD, first, second)}


def test_each_moment_of_a_leg_between_the_samples_is_clean() -> None:
    moments = [
        # Nothing yet; debited; debited and credited; settled.
        ([EMPTY, EMPTY], [EMPTY, EMPTY]),
        ([debited(), EMPTY], [debited(), EMPTY]),
        ([debited(), CREDITED], [debited(), CREDITED]),
        ([debited("posted"), CREDITED], [debited("posted"), CREDITED]),
        # Debited and credited after database 1's first sample, before database 2's.
        ([EMPTY, CREDITED], [debited(), CREDITED]),
        ([EMPTY, CREDITED], [debited("posted"), CREDITED]),
        # Credited after database 2's sample; refused, then reversed.
        ([debited(), EMPTY], [debited("posted"), CREDITED]),
        ([debited(), REFUSED], [debited(), REFUSED]),
        ([debited("failed"), REFUSED], [debited("failed"), REFUSED]),
    ]
    for first, second in moments:
        assert checks(first, second) == set(), (first, second)


def test_a_leg_missing_its_other_side_is_found() -> None:
    # A credit leg whose debit leg never was, even in the later sample.
    assert checks([EMPTY, CREDITED], [EMPTY, CREDITED]) == {
        "credit_leg_across",
        "in_transit_across",
    }
    # Settled as delivered, and no credit leg (its money still in transit, as the
    # in-transit accounts say: the leg is what is wrong).
    assert checks([debited("posted"), EMPTY], [debited("posted"), EMPTY]) == {
        "leg_delivered_across"
    }
    # Reversed as refused, and credited all the same.
    assert checks([debited("failed"), CREDITED], [debited("failed"), CREDITED]) >= {
        "refused_leg_across",
        "credit_leg_across",
    }
    # A refusal of a leg its payer's database settled as delivered.
    assert "refusal_across" in checks(
        [debited("posted"), replace(CREDITED, refused={"d": 1})],
        [debited("posted"), CREDITED],
    )
    # Credited another amount.
    other = replace(CREDITED, credits={"d": CreditLeg(2, 1, 4, "EUR")}, transit={(2, 1, "EUR"): -4})
    assert "legs_match_across" in checks([debited(), other], [debited(), other])


def test_the_books_of_all_databases_balance() -> None:
    lopsided = replace(CREDITED, totals={"EUR": 7})
    findings = across_databases(HELD, [debited(), lopsided], [debited(), lopsided])
    assert [(f.check, f.subject, f.actual) for f in findings] == [
        ("books_balance_across", "all databases EUR", "7")
    ]


def test_a_credit_of_another_amount_than_a_debit_booked_after_the_sample_is_found() -> None:
    other = replace(CREDITED, credits={"d": CreditLeg(2, 1, 4, "EUR")}, transit={(2, 1, "EUR"): -4})
    assert "legs_match_across" in checks([EMPTY, other], [debited(), other])
