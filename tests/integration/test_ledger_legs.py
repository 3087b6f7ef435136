"""Movements between wallets of two logical shards (one database): two legs, each a
balanced transaction on its own shard, through the in-transit accounts of the pair
(`sql/0006_shards/legs.sql`). Each side sees one transfer from the payer to the payee; each
shard's books balance by themselves; the audit says so."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg

from tests.integration.ledger_client import (
    LedgerClient,
    batch_item,
    funded_wallet,
    run_threads,
    transfer_batch,
    user,
)

PAYER_SHARD, PAYEE_SHARD = 3, 250


def shard_of(id_: str) -> int:
    return uuid.UUID(id_).bytes[15]


def leg(ledger: LedgerClient, transaction_id: str) -> dict[str, Any]:
    return ledger.transaction(transaction_id)


def transit(ledger: LedgerClient, shard: int, peer: int, currency: str = "EUR") -> int:
    """The balance of shard's in-transit account with peer (0 if it has none)."""
    found = ledger.conn.execute(
        "SELECT balance FROM accounts WHERE kind = 'in_transit' AND currency = %s"
        " AND ledger_shard_of(id) = %s AND peer_shard = %s",
        (currency, shard, peer),
    ).fetchone()
    return int(found[0]) if found else 0


def test_a_transfer_between_shards_is_two_legs_each_balanced_on_its_shard(
    ledger: LedgerClient,
) -> None:
    ada, bob = user(PAYER_SHARD), user(PAYEE_SHARD)
    a, b = funded_wallet(ledger, ada, 1_000), funded_wallet(ledger, bob, 100)

    done = ledger.transfer(ada, a, b, 300, memo="rent", key="k-1")
    assert done["outcome"] == "ok"
    answer = done["transaction"]
    # The payer's answer is their leg, shown as the transfer it is.
    assert shard_of(answer["id"]) == PAYER_SHARD
    assert (answer["source_account_id"], answer["destination_account_id"]) == (a, b)
    assert (answer["source_owner_id"], answer["destination_owner_id"]) == (str(ada), str(bob))
    assert (ledger.balance(a), ledger.balance(b)) == (700, 400)

    debit = leg(ledger, answer["id"])
    credit = leg(ledger, debit["counterpart_id"])
    assert (debit["leg"], credit["leg"]) == ("debit", "credit")
    assert credit["counterpart_id"] == debit["id"]
    assert shard_of(credit["id"]) == PAYEE_SHARD
    assert (debit["counterparty_account_id"], credit["counterparty_account_id"]) == (b, a)
    # Both legs are one movement to the people in it: one receipt number, one time.
    assert (credit["memo"], credit["receipt_number"]) == ("rent", debit["receipt_number"])
    assert credit["created_at"] == debit["created_at"]
    # Each leg moves money within its shard: wallet and the shard's in-transit account.
    assert {shard_of(account) for account, _ in ledger.postings(debit["id"])} == {PAYER_SHARD}
    assert {shard_of(account) for account, _ in ledger.postings(credit["id"])} == {PAYEE_SHARD}
    assert transit(ledger, PAYER_SHARD, PAYEE_SHARD) == 300
    assert transit(ledger, PAYEE_SHARD, PAYER_SHARD) == -300
    # The other way round uses the same two in-transit accounts.
    assert ledger.transfer(bob, b, a, 50)["outcome"] == "ok"
    assert transit(ledger, PAYER_SHARD, PAYEE_SHARD) == 250
    assert ledger.audit() == []

    # A retry replays the payer's leg; no third leg.
    again = ledger.transfer(ada, a, b, 300, memo="rent", key="k-1")
    assert again["outcome"] == "replayed"
    assert again["transaction"] == answer
    legs = ledger.scalar("SELECT count(*) FROM transactions WHERE leg IS NOT NULL")
    assert legs == 4


def test_a_refused_transfer_between_shards_writes_nothing(ledger: LedgerClient) -> None:
    ada, bob = user(PAYER_SHARD), user(PAYEE_SHARD)
    a, b = funded_wallet(ledger, ada, 100), funded_wallet(ledger, bob, 0)
    before = ledger.snapshot()
    assert ledger.transfer(ada, a, b, 101) == {"outcome": "insufficient_funds"}
    assert ledger.snapshot() == before  # no in-transit account either


def test_a_hold_is_captured_across_shards_and_refunded_back(ledger: LedgerClient) -> None:
    payer, shop = user(PAYER_SHARD), user(PAYEE_SHARD)
    p, s = funded_wallet(ledger, payer, 1_000), funded_wallet(ledger, shop, 0)
    hold = ledger.create_hold(payer, p, s, 400)["hold"]
    assert shard_of(hold["id"]) == PAYER_SHARD
    captured = ledger.capture_hold(shop, hold["id"], 250)
    assert captured["outcome"] == "ok"
    # Shown as one payment, with the debit leg's id: the one the hold names.
    payment = captured["transaction"]
    assert payment["id"] == captured["hold"]["capture_transaction_id"]
    assert shard_of(payment["id"]) == PAYER_SHARD
    assert (payment["source_account_id"], payment["destination_account_id"]) == (p, s)
    assert payment["hold_id"] == hold["id"]
    shops_leg = leg(ledger, payment["id"])["counterpart_id"]
    assert (leg(ledger, shops_leg)["hold_id"], shard_of(shops_leg)) == (hold["id"], PAYEE_SHARD)
    assert ledger.money(p) == (750, 0)  # the rest of the hold released
    assert ledger.balance(s) == 250

    # The shop refunds part by the id it was shown, then the rest by its own leg's.
    part = ledger.refund(shop, payment["id"], 100)
    assert part["outcome"] == "ok"
    refund = part["transaction"]
    assert shard_of(refund["id"]) == PAYEE_SHARD
    assert (refund["source_account_id"], refund["destination_account_id"]) == (s, p)
    assert refund["refund_of"] == payment["id"]
    rest = ledger.refund(shop, shops_leg, None)
    assert rest["outcome"] == "ok"
    assert rest["transaction"]["amount"] == 150
    for side in (payment["id"], shops_leg):
        assert (leg(ledger, side)["refunded_amount"], leg(ledger, side)["status"]) == (
            250,
            "refunded",
        )
    assert ledger.refund(shop, payment["id"], None) == {"outcome": "not_refundable"}
    # The payer did not receive it, so may not refund it.
    assert ledger.refund(payer, payment["id"], None) == {"outcome": "not_owner"}
    assert (ledger.balance(p), ledger.balance(s)) == (1_000, 0)
    assert ledger.audit() == []


def test_a_batch_spanning_shards_books_legs_where_the_shards_differ(
    ledger: LedgerClient,
) -> None:
    ada, near, far = user(PAYER_SHARD), user(PAYER_SHARD), user(PAYEE_SHARD)
    a = funded_wallet(ledger, ada, 1_000)
    n, f = funded_wallet(ledger, near, 0), funded_wallet(ledger, far, 0)
    results = transfer_batch(
        ledger, ada, [batch_item(a, n, 100), batch_item(a, f, 200), batch_item(a, f, 5_000)]
    )
    assert [r["outcome"] for r in results] == ["ok", "ok", "insufficient_funds"]
    assert leg(ledger, results[0]["transaction"]["id"])["leg"] is None  # one shard: one row
    assert leg(ledger, results[1]["transaction"]["id"])["leg"] == "debit"
    assert (ledger.balance(a), ledger.balance(n), ledger.balance(f)) == (700, 100, 200)
    assert ledger.audit() == []


def test_opposite_movements_between_two_shards_neither_deadlock_nor_lose_money(
    ledger: LedgerClient, ledger_conninfo: str
) -> None:
    """Transfers both ways between two shards, batches among them, and refunds naming
    either leg of one transfer, all at once: they share the two in-transit accounts."""
    left = [user(PAYER_SHARD) for _ in range(3)]
    right = [user(PAYEE_SHARD) for _ in range(3)]
    wallets = {who: funded_wallet(ledger, who, 10_000) for who in left + right}
    shared = ledger.transfer(left[0], wallets[left[0]], wallets[right[0]], 1_000)["transaction"]
    legs = (shared["id"], leg(ledger, shared["id"])["counterpart_id"])
    refunded: list[str] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        with psycopg.connect(ledger_conninfo, autocommit=True) as conn:
            client = LedgerClient(conn)
            me = (left + right)[index % 6]
            others = right if me in left else left
            for round_ in range(15):
                other = others[round_ % 3]
                assert client.transfer(me, wallets[me], wallets[other], 7)["outcome"] == "ok"
                if round_ % 5 == 0:
                    items = [batch_item(wallets[me], wallets[o], 3) for o in others]
                    assert all(r["outcome"] == "ok" for r in transfer_batch(client, me, items))
            outcome = client.refund(right[0], legs[index % 2], 300)["outcome"]
            with lock:
                refunded.append(outcome)

    assert run_threads(6, worker) == []
    assert refunded.count("ok") == 3  # 3 x 300 of 1,000; the rest were refused
    assert set(refunded) == {"ok", "amount_exceeds_refundable"}
    total = sum(ledger.balance(w) for w in wallets.values())
    assert total == 6 * 10_000
    assert transit(ledger, PAYER_SHARD, PAYEE_SHARD) == -transit(ledger, PAYEE_SHARD, PAYER_SHARD)
    assert ledger.audit() == []
