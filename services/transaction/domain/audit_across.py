"""The audit across the ledger's databases: what no one database can check alone about
movements between two of them (the saga, sql/0006_shards/saga.sql), from a sample of
each database at a consistent point (one snapshot each) while money keeps moving.

Each database is sampled twice, in order: 1..N, then 1..N again. What one sample shows
has consequences the other database's *next* sample must show, because each step of a
leg happens after the one before it: a debit leg commits before its credit leg can be
booked, and a credit leg (or its refusal) before the debit leg is settled. So, with
"next" the first sample of the other database taken after it:

- a settled debit leg has its credit leg in the next sample of the payee's database,
  of the same amount and currency; a failed one has a refusal there and no credit leg;
- a credit leg has its debit leg in the next sample of the payer's database, not failed;
  a refusal has its debit leg there, not posted;
- per currency, all accounts of all databases (in-transit ones included) sum to zero;
- for a pair of logical shards L and M of two databases x < y, the in-transit accounts
  transit(L, M) in x's first sample and transit(M, L) in y's first sample add up to what
  those two samples see debited and not credited: the debit legs (not failed) of each
  whose credit leg the other sample does not have, less the credit legs y's sample has
  whose debit leg x's (taken before) had not yet seen. With the ledger at rest that is
  the outbox: each leg on its way is an outbox row until its debit leg is settled.
  (Derivation: transit(L, M) is L's debit legs to M not failed, less L's credit legs
  from M; every debit leg not failed is credited, or on its way.)"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from services.transaction.domain.ports import AuditFinding

# Debit legs in these states have not been settled yet, or were refused.
_PENDING = "pending"
_FAILED = "failed"


@dataclass(frozen=True)
class DebitLeg:
    """A debit leg to another database: its shard, the payee's shard, its credit leg's
    id."""

    shard: int
    peer: int
    credit_id: str
    amount: int
    currency: str
    status: str


@dataclass(frozen=True)
class CreditLeg:
    """A credit leg from another database: its shard and the payer's."""

    shard: int
    peer: int
    amount: int
    currency: str


@dataclass(frozen=True)
class LegSample:
    """One database's side of the movements between databases, from one snapshot."""

    # Per currency, the sum of all its accounts' balances.
    totals: Mapping[str, int]
    # (shard, peer shard of another database, currency) -> the in-transit balance.
    transit: Mapping[tuple[int, int, str], int]
    # By the debit leg's id: its debit legs to other databases, their credit legs
    # from other databases, the refusals of legs from them (the payer's shard), and
    # its outbox rows (the amount).
    debits: Mapping[str, DebitLeg]
    credits: Mapping[str, CreditLeg]
    refused: Mapping[str, int]
    outbox: Mapping[str, int]


def across_databases(
    held: Sequence[frozenset[int]],
    first: Sequence[LegSample],
    second: Sequence[LegSample],
) -> list[AuditFinding]:
    """The findings across databases from two rounds of samples (`held[i]`: the
    logical shards of database i, in the order sampled)."""
    holder = {shard: number for number, shards in enumerate(held) for shard in shards}

    def after(x: int, y: int) -> LegSample:
        # The first sample of y taken after x's first.
        return first[y] if y > x else second[y]

    findings = _books_balance(first)
    for x, sample in enumerate(first):
        findings += _legs_of(x, sample, holder, after)
        for y in range(x + 1, len(first)):
            findings += _in_transit(held[x], held[y], sample, first[y], second[x])
    return findings


def _books_balance(samples: Sequence[LegSample]) -> list[AuditFinding]:
    totals: dict[str, int] = defaultdict(int)
    for sample in samples:
        for currency, total in sample.totals.items():
            totals[currency] += total
    return [
        AuditFinding("books_balance_across", f"all databases {currency}", "0", str(total))
        for currency, total in sorted(totals.items())
        if total != 0
    ]


def _legs_of(
    x: int,
    sample: LegSample,
    holder: Mapping[int, int],
    after: Callable[[int, int], LegSample],
) -> list[AuditFinding]:
    findings: list[AuditFinding] = []
    where = f"database {x + 1}: "
    for debit_id, debit in sample.debits.items():
        other = after(x, holder[debit.peer])
        credit = other.credits.get(debit_id)
        subject = where + debit_id
        if debit.status == _FAILED:
            if credit is not None:
                findings.append(
                    AuditFinding(
                        "refused_leg_across",
                        subject,
                        "no credit leg",
                        f"credit leg of {credit.amount}",
                    )
                )
            if debit_id not in other.refused:
                findings.append(
                    AuditFinding(
                        "refused_leg_across", subject, "a refusal on the payee's database", "none"
                    )
                )
        elif debit.status != _PENDING and credit is None:
            findings.append(
                AuditFinding(
                    "leg_delivered_across",
                    subject,
                    f"credit leg of {debit.amount} {debit.currency}",
                    "none",
                )
            )
        if credit is not None and (credit.amount, credit.currency) != (
            debit.amount,
            debit.currency,
        ):
            findings.append(
                AuditFinding(
                    "legs_match_across",
                    subject,
                    f"{debit.amount} {debit.currency}",
                    f"{credit.amount} {credit.currency}",
                )
            )
    for debit_id, credit in sample.credits.items():
        payer = after(x, holder[credit.peer])
        found = payer.debits.get(debit_id)
        if found is None or found.status == _FAILED:
            findings.append(
                AuditFinding(
                    "credit_leg_across",
                    where + debit_id,
                    f"debit leg of {credit.amount} {credit.currency}",
                    "failed" if found else "none",
                )
            )
        elif (found.amount, found.currency) != (credit.amount, credit.currency):
            # (A debit leg of x's first sample is compared above; one booked after it is
            # only seen here.)
            findings.append(
                AuditFinding(
                    "legs_match_across",
                    where + debit_id,
                    f"{found.amount} {found.currency}",
                    f"{credit.amount} {credit.currency}",
                )
            )
    for debit_id, shard in sample.refused.items():
        payer = after(x, holder[shard])
        found = payer.debits.get(debit_id)
        if found is None or found.status not in (_PENDING, _FAILED):
            findings.append(
                AuditFinding(
                    "refusal_across",
                    where + debit_id,
                    "a debit leg pending or failed",
                    found.status if found else "none",
                )
            )
    return findings


def _in_transit(
    shards_x: frozenset[int],
    shards_y: frozenset[int],
    x: LegSample,
    y: LegSample,
    x_again: LegSample,
) -> list[AuditFinding]:
    """transit(L, M) + transit(M, L) against what is on its way, for each pair of
    shards L of x and M of y, per currency (x sampled before y, x_again after)."""
    actual: dict[tuple[int, int, str], int] = defaultdict(int)
    expected: dict[tuple[int, int, str], int] = defaultdict(int)
    for (shard, peer, currency), balance in x.transit.items():
        if peer in shards_y:
            actual[shard, peer, currency] += balance
    for (shard, peer, currency), balance in y.transit.items():
        if peer in shards_x:
            actual[peer, shard, currency] += balance
    # Debited, and not credited as the other sample sees it (on its way, or credited
    # between the two samples), in each direction.
    for debit_id, debit in x.debits.items():
        if debit.peer in shards_y and debit.status != _FAILED and debit_id not in y.credits:
            expected[debit.shard, debit.peer, debit.currency] += debit.amount
    for debit_id, debit in y.debits.items():
        if debit.peer in shards_x and debit.status != _FAILED and debit_id not in x.credits:
            expected[debit.peer, debit.shard, debit.currency] += debit.amount
    # Credited on y for a debit booked on x after x's sample (which x's next one has; a
    # credit leg with no debit leg at all is not money on its way, and shows here).
    for debit_id, credit in y.credits.items():
        if credit.peer in shards_x and debit_id not in x.debits and debit_id in x_again.debits:
            expected[credit.peer, credit.shard, credit.currency] -= credit.amount
    return [
        AuditFinding(
            "in_transit_across",
            f"shards {shard} and {peer} {currency}",
            str(expected[shard, peer, currency]),
            str(actual[shard, peer, currency]),
        )
        for shard, peer, currency in sorted(set(actual) | set(expected))
        if actual[shard, peer, currency] != expected[shard, peer, currency]
    ]
