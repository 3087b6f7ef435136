"""After the load, with every fault healed: resolve what the clients could not know,
then prove the bank's invariants from the edge and from the databases.

1. Resolution. An intent with no answer that says what happened (only timeouts,
   5xx-class answers, 409 "in progress") is sent again, exactly as before, with its
   key: the ledger answers the original result, or books it now, or refuses it. If
   even that gives no definite answer, the key is looked up in the ledger's
   idempotency table (booked, or never booked).
2. Top-ups still pending are given time to settle (webhooks, the reconciler).
3. The checks, each failure a violation:
   - every acknowledged or resolved transfer exists exactly once (found by its key,
     carried in its metadata), with its amount and parties; nothing booked that no
     client asked for; every answer for one key names the same transaction;
   - every top-up maps to one ledger transaction through its key, agrees with the
     sandbox provider's record (posted ⇔ charged, same amount), and no charge exists
     without its top-up;
   - money: Σ wallet balances = funding + posted top-ups (- posted withdrawals), read
     from the edge and from the database; Σ provider charges = posted top-ups +
     pending top-ups already charged; the settlement account holds the opposite;
   - no wallet below its limit (database and edge);
   - each wallet's balance equals its history (the edge's ListTransactions, and the
     ledger's transactions);
   - `make audit` (the transaction service's audit command) is clean;
   - no server error (5xx, UNAVAILABLE, INTERNAL, UNKNOWN, DEADLINE_EXCEEDED, no
     answer) outside a fault window plus its grace.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import psycopg

from services.catalogue import TRANSACTION
from services.localmesh.mesh import Mesh
from tests.chaos.faults import Fault
from tests.chaos.history import Attempt, History, Outcome
from tests.chaos.workload import PATIENT_TIMEOUT, Bank, Call, Person

TRANSFER_OPS = frozenset({"transfer", "transfer_by_email", "batch_item"})
MOVED = ("posted", "partially_refunded", "refunded")  # statuses whose postings exist
RESOLUTION_TRIES = 5
RESOLUTION_CONCURRENCY = 16
SETTLE_TIMEOUT = 60.0
MAX_EXAMPLES = 10


@dataclass
class FaultErrors:
    kind: str
    target: str
    start: float | None
    end: float | None
    server_errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


@dataclass
class Report:
    seed: int
    attempts: int
    intents: int
    acked: int
    answer_lost: int  # intents with no definite answer during the load
    resolved_booked: int
    resolved_not_booked: int
    lost: int
    duplicated: int
    violations: list[str]
    server_errors_in_windows: int
    server_errors_outside: int
    outside_examples: list[dict[str, Any]]
    per_fault: list[FaultErrors]
    p99_ms: float
    pending_top_ups: int
    audit_output: str

    def summary(self) -> str:
        return (
            f"chaos seed={self.seed}: attempts={self.attempts} intents={self.intents} "
            f"acked={self.acked} lost={self.lost} duplicated={self.duplicated} "
            f"answer_lost={self.answer_lost} (resolved: {self.resolved_booked} booked, "
            f"{self.resolved_not_booked} not) violations={len(self.violations)} "
            f"5xx_in_windows={self.server_errors_in_windows} "
            f"5xx_outside={self.server_errors_outside} p99={self.p99_ms:.0f}ms"
        )

    @property
    def passed(self) -> bool:
        return (
            self.lost == 0
            and self.duplicated == 0
            and not self.violations
            and self.server_errors_outside == 0
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary(), "passed": self.passed}


class Checker:
    def __init__(
        self,
        mesh: Mesh,
        bank: Bank,
        history: History,
        people: list[Person],
        funding: int,
        faults: list[Fault],
        grace: float,
    ) -> None:
        self.mesh = mesh
        self.bank = bank
        self.history = history
        self.people = people
        self.funding = funding
        self.faults = faults
        self.grace = grace
        self.violations: list[str] = []
        self.lost = 0
        self.duplicated = 0
        self._db_balances: dict[str, int] = {}  # wallet -> balance, from check_ledger

    def violation(self, message: str) -> None:
        self.violations.append(message)

    # --- 1. resolution -----------------------------------------------------------

    async def resolve(self) -> tuple[int, int, int]:
        """Returns (answer lost during the load, resolved booked, resolved not booked)."""
        load_attempts = list(self.history.attempts)
        told: dict[str, list[Outcome]] = defaultdict(list)
        for attempt in load_attempts:
            for key, result in attempt.results.items():
                told[key].append(result.outcome)
        undecided = {
            key
            for key in self.history.intents
            if Outcome.OK not in told[key]
            and any(o in (Outcome.FAILED, Outcome.UNKNOWN) for o in told[key])
        }
        gate = asyncio.Semaphore(RESOLUTION_CONCURRENCY)

        async def send_again(client: int, op: str, keys: list[str], api: str, call: Call) -> None:
            async with gate:
                for _ in range(RESOLUTION_TRIES):
                    attempt = await self.bank.attempt(
                        client, op, keys, "resolution", api, PATIENT_TIMEOUT, call
                    )
                    if all(
                        attempt.results[k].outcome in (Outcome.OK, Outcome.REFUSED) for k in keys
                    ):
                        return
                    await asyncio.sleep(0.5)  # 409 "in progress" or a straggling fault

        await asyncio.gather(
            *(
                send_again(*call)
                for call in self.bank.calls.values()
                if undecided.intersection(call[2])
            )
        )
        # What the last word on each undecided key was; the database where none came.
        booked = not_booked = 0
        stored = read_books(self.mesh).stored
        for key in undecided:
            intent = self.history.intents[key]
            outcomes = [
                a.results[key]
                for a in self.history.attempts
                if a.send == "resolution" and key in a.results
            ]
            definite = [r for r in outcomes if r.outcome in (Outcome.OK, Outcome.REFUSED)]
            in_table = stored.get((intent.owner_user_id, key))
            if definite and definite[-1].outcome is Outcome.OK:
                booked += 1
            elif definite:
                not_booked += 1
            elif in_table is not None:
                booked += 1
            else:
                not_booked += 1
        return len(undecided), booked, not_booked

    # --- 2. pending top-ups --------------------------------------------------------

    def wait_for_top_ups(self) -> int:
        """Wait (bounded) until no top-up is pending; returns how many still are."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            with psycopg.connect(self.mesh.postgres.conninfo("ledger")) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM transactions WHERE type = 'top_up' AND status = 'pending'"
                ).fetchone()
            pending = int(row[0]) if row else 0
            if pending == 0 or time.monotonic() > deadline:
                return pending
            time.sleep(0.5)  # the reconciler's pace; bounded by the deadline

    # --- 3. the checks ---------------------------------------------------------------

    def check_ledger(self) -> None:
        verdict = judge_books(self.history, self.funding, read_books(self.mesh))
        self.violations += verdict.violations
        self.lost += verdict.lost
        self.duplicated += verdict.duplicated
        self._db_balances = verdict.balances

    def check_edge(self) -> None:
        """Each person's wallet and history as the edge shows them."""
        total = 0
        with httpx.Client(base_url=self.mesh.edge_url, timeout=30) as rest:
            for person in self.people:
                got = rest.get(f"/v1/wallets/{person.wallet_id}", headers=person.rest_auth)
                if got.status_code != 200:
                    self.violation(f"edge: GetWallet {person.wallet_id} → {got.status_code}")
                    continue
                wallet = got.json()["wallet"]
                balance = int(wallet["balance"]["amount"])
                available = int(wallet["available_balance"]["amount"])
                total += balance
                if available < 0:
                    self.violation(f"edge: wallet {person.wallet_id} available {available}")
                if balance != self._db_balances.get(person.wallet_id):
                    self.violation(
                        f"edge: wallet {person.wallet_id} shows {balance}, "
                        f"the ledger {self._db_balances.get(person.wallet_id)}"
                    )
                history_sum = self._history_sum(rest, person)
                if history_sum is not None and history_sum != balance:
                    self.violation(
                        f"edge: wallet {person.wallet_id} balance {balance}, history {history_sum}"
                    )
        if total != sum(self._db_balances.values()):
            self.violation(f"edge: wallets total {total}, ledger {sum(self._db_balances.values())}")

    def _history_sum(self, rest: httpx.Client, person: Person) -> int | None:
        moved, token = 0, ""
        while True:
            params = {"wallet_id": person.wallet_id, "page_size": "100"}
            if token:
                params["page_token"] = token
            page = rest.get("/v1/transactions", params=params, headers=person.rest_auth)
            if page.status_code != 200:
                self.violation(f"edge: ListTransactions {person.wallet_id} → {page.status_code}")
                return None
            body = page.json()
            for txn in body.get("transactions", []):
                if txn["status"].removeprefix("TRANSACTION_STATUS_").lower() not in MOVED:
                    continue
                amount = int(txn["amount"]["amount"])
                if txn.get("destination_wallet_id") == person.wallet_id:
                    moved += amount
                if txn.get("source_wallet_id") == person.wallet_id:
                    moved -= amount
            token = body.get("next_page_token", "")
            if not token:
                return moved

    def audit(self) -> str:
        result = self.mesh.run_command(TRANSACTION, "audit", timeout=300)
        if result.returncode != 0:
            self.violation(f"audit: exit {result.returncode}: {result.stdout[-2000:]}")
        return result.stdout.strip()

    def server_errors(self) -> tuple[int, int, list[dict[str, Any]], list[FaultErrors]]:
        return classify_server_errors(self.history.attempts, self.faults, self.grace)


def classify_server_errors(
    attempts: list[Attempt], faults: list[Fault], grace: float
) -> tuple[int, int, list[dict[str, Any]], list[FaultErrors]]:
    """Server errors inside some fault's window (an attempt overlapping [start, end +
    grace]; counted for the latest such fault to start, the likeliest cause) and outside
    every window, with examples of the latter."""
    per_fault = [FaultErrors(f.kind, f.target, f.start, f.end) for f in faults]
    windows = [f.window(grace) for f in faults]
    inside = outside = 0
    examples: list[dict[str, Any]] = []
    for attempt in attempts:
        if not attempt.server_error:
            continue
        hits = [
            n
            for n, w in enumerate(windows)
            if w is not None and attempt.start <= w[1] and attempt.end >= w[0]
        ]
        hit = max(hits, key=lambda n: windows[n] or (0.0, 0.0)) if hits else None
        if hit is None:
            outside += 1
            if len(examples) < MAX_EXAMPLES:
                examples.append(_example(attempt))
            continue
        inside += 1
        per_fault[hit].server_errors += 1
        statuses = per_fault[hit].statuses
        statuses[attempt.status] = statuses.get(attempt.status, 0) + 1
    return inside, outside, examples, per_fault


def p99_ms(attempts: list[Attempt]) -> float:
    latencies = sorted(
        a.end - a.start for a in attempts if not a.deliberate_timeout and a.send != "resolution"
    )
    if not latencies:
        return 0.0
    return 1000 * latencies[min(len(latencies) - 1, math.ceil(0.99 * len(latencies)) - 1)]


def _example(attempt: Attempt) -> dict[str, Any]:
    return {
        "op": attempt.op,
        "api": attempt.api,
        "send": attempt.send,
        "start": attempt.start,
        "end": attempt.end,
        "status": attempt.status,
        "detail": attempt.detail[:200],
        "keys": attempt.keys,
    }


@dataclass
class Books:
    """What the databases hold, as the checks need it."""

    # (id, type, status, amount, source account, destination account, metadata chaos_key)
    transactions: list[tuple[Any, ...]]
    wallets: dict[str, tuple[int, int, int]]  # id -> (balance, held, overdraft limit)
    settlement: int | None  # the settlement accounts' balance
    charges: dict[str, tuple[str, int]]  # the sandbox's charges: key -> (status, amount)
    stored: dict[tuple[str, str], str]  # (owner, idempotency key) -> transaction id
    # Top-ups that failed with nothing sent (provider unavailable): their key was freed
    # for the retry, so no key maps to them.
    unsent: frozenset[str] = frozenset()


def read_books(mesh: Mesh) -> Books:
    with psycopg.connect(mesh.postgres.conninfo("ledger")) as conn:
        # One row per movement: a movement between two shards is two legs, the debit
        # leg (its id is the one shown) and the credit leg, left out here; the debit
        # leg's destination is the in-transit account, so its counterparty is read.
        transactions = conn.execute(
            "SELECT id::text, type, status, amount, source_account_id::text,"
            "       (CASE WHEN leg = 'debit' THEN counterparty_account_id"
            "             ELSE destination_account_id END)::text,"
            "       metadata ->> 'chaos_key'"
            "  FROM transactions WHERE leg IS DISTINCT FROM 'credit'"
        ).fetchall()
        wallets = {
            wallet: (balance, held, limit)
            for wallet, balance, held, limit in conn.execute(
                "SELECT id::text, balance, held, overdraft_limit FROM accounts"
                " WHERE kind = 'user_wallet'"
            ).fetchall()
        }
        settlement_row = conn.execute(
            "SELECT coalesce(sum(balance), 0) FROM accounts WHERE kind = 'settlement'"
        ).fetchone()
        stored = {
            (owner, key): str(txn)
            for owner, key, txn in conn.execute(
                "SELECT owner_id::text, idempotency_key, result -> 'transaction' ->> 'id'"
                "  FROM idempotency_keys WHERE operation IN ('transfer', 'top_up')"
            ).fetchall()
            if txn is not None
        }
        unsent = frozenset(
            str(txn)
            for (txn,) in conn.execute(
                "SELECT id FROM transactions WHERE type = 'top_up' AND status = 'failed'"
                " AND failure_code = 'provider_unavailable'"
            ).fetchall()
        )
    with psycopg.connect(mesh.postgres.conninfo("payments")) as conn:
        charges = {
            key: (status, amount)
            for key, status, amount in conn.execute(
                "SELECT idempotency_key, status, amount FROM sandbox_payments WHERE kind = 'charge'"
            ).fetchall()
        }
    settlement = int(settlement_row[0]) if settlement_row else None
    return Books(transactions, wallets, settlement, charges, stored, unsent)


@dataclass
class Verdict:
    violations: list[str] = field(default_factory=list)
    lost: int = 0
    duplicated: int = 0
    balances: dict[str, int] = field(default_factory=dict)  # wallet -> balance (database)

    def violation(self, message: str) -> None:
        self.violations.append(message)


def judge_books(history: History, funding: int, books: Books) -> Verdict:
    """The ledger checks of the module docstring, against what the databases hold."""
    verdict = Verdict()
    intents = history.intents
    transactions, wallets, settlement = books.transactions, books.wallets, books.settlement
    charges, stored = books.charges, books.stored
    by_id = {t[0]: t for t in transactions}

    # Every answer for one key names one transaction.
    answered: dict[str, set[str]] = defaultdict(set)
    for attempt in history.attempts:
        for key, result in attempt.results.items():
            if result.transaction_id:
                answered[key].add(result.transaction_id)
    for key, ids in answered.items():
        if len(ids) > 1:
            verdict.duplicated += 1
            verdict.violation(f"{key}: answers name {len(ids)} transactions {sorted(ids)}")

    # Transfers, found by their key in the metadata.
    booked_by_key: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in transactions:
        if row[1] == "transfer":
            booked_by_key[row[6] or ""].append(row)
    for key, rows in booked_by_key.items():
        if key not in intents:
            verdict.violation(f"{len(rows)} transfer(s) booked that no client asked for: {key!r}")
    for key, intent in intents.items():
        if intent.op not in TRANSFER_OPS:
            continue
        rows = booked_by_key.get(key, [])
        acked = key in answered
        if len(rows) > 1:
            verdict.duplicated += 1
            verdict.violation(f"{key}: booked {len(rows)} times")
        if not rows:
            intent.resolution = "not_booked"
            if acked:
                verdict.lost += 1
                verdict.violation(f"{key}: acknowledged ({sorted(answered[key])}) but not booked")
            continue
        txn_id, _, status, amount, source, destination, _ = rows[0]
        intent.resolution, intent.transaction_id = "booked", txn_id
        if acked and txn_id not in answered[key]:
            verdict.lost += 1
            verdict.violation(f"{key}: acknowledged as {answered[key]} but booked as {txn_id}")
        expected = (intent.amount, intent.source_wallet_id, intent.destination_wallet_id)
        if (amount, source, destination) != expected or status not in MOVED:
            verdict.violation(
                f"{key}: booked {status} {amount} {source}→{destination}, asked {expected}"
            )

    # Top-ups, through their key's stored result, against the provider.
    top_up_of: dict[str, str] = {}
    for key, intent in intents.items():
        if intent.op != "top_up":
            continue
        txn_id = stored.get((intent.owner_user_id, key))
        if txn_id is None:
            intent.resolution = "not_booked"
            if key in answered:
                verdict.lost += 1
                verdict.violation(f"{key}: top-up acknowledged but the ledger has no such key")
            continue
        top_up_of[txn_id] = key
        intent.transaction_id = txn_id
        if key in answered and txn_id not in answered[key]:
            verdict.duplicated += 1
            verdict.violation(f"{key}: top-up answered {answered[key]}, stored {txn_id}")
        booked = by_id.get(txn_id)
        if booked is None:
            verdict.lost += 1
            verdict.violation(f"{key}: top-up {txn_id} stored for the key but missing")
            continue
        status, amount, destination = booked[2], booked[3], booked[5]
        intent.resolution = status
        if (amount, destination) != (intent.amount, intent.destination_wallet_id):
            verdict.violation(f"{key}: top-up booked {amount} to {destination}")
        charge = charges.get(txn_id)
        charged = charge is not None and charge[0] == "succeeded"
        if status == "posted" and not charged:
            verdict.violation(f"{key}: top-up {txn_id} posted, provider has {charge}")
        if status == "failed" and charged:
            verdict.lost += 1
            verdict.violation(f"{key}: top-up {txn_id} failed, but the provider charged it")
        if charge is not None and charge[1] != amount:
            verdict.violation(f"{key}: provider charged {charge[1]}, ledger says {amount}")
    posted_top_ups = pending_charged = 0
    for row in transactions:
        if row[1] != "top_up":
            continue
        if row[0] not in top_up_of and not (row[2] == "failed" and row[0] in books.unsent):
            verdict.violation(f"top-up {row[0]} booked that no client asked for")
        charged = charges.get(row[0], ("", 0))[0] == "succeeded"
        if row[2] == "posted":
            posted_top_ups += row[3]
        elif row[2] == "pending" and charged:
            pending_charged += row[3]
    charged_total = 0
    for key, (status, amount) in charges.items():
        if status != "succeeded":
            continue
        charged_total += amount
        if key not in by_id:
            verdict.violation(f"the provider charged {amount} for {key}, unknown to the ledger")
    withdrawn = sum(row[3] for row in transactions if row[1] == "withdrawal" and row[2] == "posted")

    # Money.
    total = sum(balance for balance, _, _ in wallets.values())
    expected_total = funding + posted_top_ups - withdrawn
    if total != expected_total:
        verdict.violation(
            f"money: wallets hold {total}, funding + posted top-ups - withdrawals is "
            f"{expected_total}"
        )
    if charged_total != posted_top_ups + pending_charged:
        verdict.violation(
            f"money: the provider charged {charged_total}, the ledger posted "
            f"{posted_top_ups} and has {pending_charged} pending but charged"
        )
    if settlement != -total:
        verdict.violation(f"money: settlement holds {settlement}, wallets {total}")

    # Limits, and each balance against the ledger's transactions.
    moved: Counter[str] = Counter()
    for _, _, status, amount, source, destination, _ in transactions:
        if status in MOVED:
            moved[destination] += amount
            moved[source] -= amount
    for wallet, (balance, held, limit) in wallets.items():
        if balance - held + limit < 0:
            verdict.violation(f"wallet {wallet}: {balance} - held {held} below limit {limit}")
        if moved[wallet] != balance:
            verdict.violation(f"wallet {wallet}: balance {balance}, transactions {moved[wallet]}")
    verdict.balances = {w: b for w, (b, _, _) in wallets.items()}
    return verdict
