"""Transfers between wallets of two PostgreSQL servers (the saga, sql/0006_shards/saga.sql
and adapters/saga.py): the debit leg on the payer's server with its outbox row, the credit
leg delivered to the payee's, within the call or by the relay. The payee's server is
stopped under load and started again, the relay is "killed" between debit and credit and
two instances finish its work, one request is retried concurrently: every cent ends in
exactly one place, once."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from services.localmesh.postgres import PostgresServer
from services.localmesh.processes import free_port
from services.runtime.db import is_database_fault
from services.runtime.money import Money
from services.transaction import server
from services.transaction.adapters.ledger_store import SqlLedgerStore
from services.transaction.adapters.saga import LegSettings, RelayPass
from services.transaction.adapters.shards import ShardConfig
from services.transaction.domain.model import (
    HistoryFilter,
    LedgerOutcome,
    TransactionStatus,
)
from services.transaction.domain.ports import TransferItem
from tests.integration.ledger_stores import Instance, debit_legs_only, funded, key, on_shard

DATABASE = "ledger_saga"
# Long enough that the relay never runs by itself in a test: each test calls it.
LATER = timedelta(hours=2)


@dataclass(frozen=True)
class Servers:
    payers: PostgresServer  # shards 0-127
    payees: PostgresServer  # shards 128-255
    config: ShardConfig


@pytest.fixture(scope="module")
def servers(
    postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Servers]:
    payees = PostgresServer(tmp_path_factory.mktemp("payees"), free_port())
    payees.ensure_initialized()
    payees.start()
    for each in (postgres, payees):
        each.create_database(DATABASE)
    config = ShardConfig.parse(f"{postgres.dsn(DATABASE)} {payees.dsn(DATABASE)}")
    server.migrate(config)
    yield Servers(postgres, payees, config)
    payees.destroy()


def payer() -> str:
    return on_shard(uuid.uuid4().bytes[0] % 128)


def payee() -> str:
    return on_shard(128 + uuid.uuid4().bytes[0] % 128)


@pytest.fixture
async def instances(servers: Servers) -> AsyncIterator[list[Instance]]:
    made: list[Instance] = []
    yield made
    for instance in made:
        await instance.close()


async def started(
    instances: list[Instance], servers: Servers, deliver_within: float = 1.0
) -> SqlLedgerStore:
    legs = LegSettings(deliver_within=deliver_within, relay_after=LATER.total_seconds())
    instance = Instance(servers.config, legs)
    instances.append(instance)
    return await instance.open()


async def balance(store: SqlLedgerStore, wallet_id: str) -> int:
    wallet = await store.wallet(wallet_id)
    assert wallet is not None
    return wallet.balance


def count(server: PostgresServer, query: str, *args: object) -> int:
    with psycopg.connect(server.conninfo(DATABASE)) as connection:
        row = connection.execute(query, args).fetchone()
    assert row is not None
    return int(row[0])


def credit_legs_of(servers: Servers, debit_ids: list[str]) -> int:
    return count(
        servers.payees,
        "SELECT count(*) FROM transactions"
        " WHERE leg = 'credit' AND counterpart_id = ANY(%s::uuid[])",
        debit_ids,
    )


def outbox(servers: Servers) -> int:
    return count(servers.payers, "SELECT count(*) FROM ledger_outbox")


async def test_a_transfer_between_servers_posts_within_the_call(
    servers: Servers, instances: list[Instance]
) -> None:
    store = await started(instances, servers)
    ada, cat = payer(), payee()
    a, c = await funded(store, ada, 1_000), await funded(store, cat, 0)

    paid = await store.transfer(ada, key(), a, c, Money("EUR", 250), "rent", {"flat": "3"})
    assert paid.outcome is LedgerOutcome.OK
    assert paid.transaction is not None
    assert paid.transaction.status is TransactionStatus.POSTED
    # One movement, seen the same from both sides and found by its id.
    assert await store.transaction(paid.transaction.id) == paid.transaction
    [seen_by_cat] = await store.history(cat, HistoryFilter(), None, 10)
    assert seen_by_cat.id == paid.transaction.id
    assert (seen_by_cat.amount, seen_by_cat.memo) == (250, "rent")
    assert (await balance(store, a), await balance(store, c)) == (750, 250)
    assert credit_legs_of(servers, [paid.transaction.id]) == 1
    assert outbox(servers) == 0
    assert await store.audit() == []


async def test_a_payee_closed_since_it_was_seen_refuses_and_the_money_returns(
    servers: Servers, instances: list[Instance]
) -> None:
    store = await started(instances, servers)
    ada, dan = payer(), payee()
    a, d = await funded(store, ada, 1_000), await funded(store, dan, 0)
    assert await store.legs.payee(d) is not None  # seen open, and remembered
    closed = await store.close_wallet(dan, key(), d)
    assert closed.outcome is LedgerOutcome.OK

    request = key()
    failed = await store.transfer(ada, request, a, d, Money("EUR", 300), "", {})
    assert failed.transaction is not None
    assert failed.transaction.status is TransactionStatus.FAILED
    assert failed.transaction.failure_code == "destination_closed"
    assert await balance(store, a) == 1_000
    assert credit_legs_of(servers, [failed.transaction.id]) == 0
    # The request retried gets the same answer, and moves nothing.
    again = await store.transfer(ada, request, a, d, Money("EUR", 300), "", {})
    assert again.outcome is LedgerOutcome.REPLAYED
    assert again.transaction == failed.transaction
    assert await balance(store, a) == 1_000
    assert outbox(servers) == 0
    assert await store.audit() == []


async def test_the_payee_server_stopped_under_load_leaves_transfers_pending_until_it_returns(
    servers: Servers, instances: list[Instance]
) -> None:
    store = await started(instances, servers, deliver_within=0.2)
    cat = payee()
    c = await funded(store, cat, 0)
    payers = [payer() for _ in range(3)]
    wallets = [await funded(store, who, 1_000_000) for who in payers]
    assert await store.legs.payee(c) is not None
    answered: list[tuple[str, str, TransactionStatus]] = []
    progress = asyncio.Condition()
    enough = asyncio.Event()

    async def pay(who: str, wallet: str) -> None:
        while not enough.is_set():
            result = await store.transfer(who, key(), wallet, c, Money("EUR", 1), "", {})
            assert result.transaction is not None, result.outcome
            async with progress:
                answered.append((wallet, result.transaction.id, result.transaction.status))
                progress.notify_all()

    async def reached(n: int) -> int:
        async with progress:
            await progress.wait_for(lambda: len(answered) >= n)
            return len(answered)

    load = asyncio.gather(*(pay(who, wallet) for who, wallet in zip(payers, wallets, strict=True)))
    await reached(6)
    await asyncio.to_thread(servers.payees.stop)
    stopped_at = await reached(0)
    await reached(stopped_at + 12)
    # What was answered while it was down was accepted, not lost: PENDING (the three
    # in flight as it stopped may have been anything).
    during = answered[stopped_at + 3 : stopped_at + 12]
    assert {status for _, _, status in during} == {TransactionStatus.PENDING}
    waiting, _ = await store.legs.backlog(datetime.now(UTC))
    assert waiting >= len(during)
    await asyncio.to_thread(servers.payees.start)
    await reached(await reached(0) + 6)
    enough.set()
    await load
    await store.legs.drain()

    finished = await store.legs.relay(datetime.now(UTC) + LATER)
    assert (finished.refused, finished.failed, finished.unreachable) == (0, 0, 0)
    assert await store.legs.relay(datetime.now(UTC) + 2 * LATER) == RelayPass()
    ids = [id_ for _, id_, _ in answered]
    for id_ in ids:
        transaction = await store.transaction(id_)
        assert transaction is not None
        assert transaction.status is TransactionStatus.POSTED
    # Each delivered exactly once, whichever path delivered it.
    assert credit_legs_of(servers, ids) == len(ids)
    assert await balance(store, c) == len(ids)
    for wallet in wallets:
        paid = sum(1 for w, _, _ in answered if w == wallet)
        assert await balance(store, wallet) == 1_000_000 - paid
    assert outbox(servers) == 0
    assert await store.audit() == []


async def credit_legs_only(servers: Servers, debits: list[str]) -> None:
    """Their credit legs booked on the payee's server, the debit legs left unsettled (an
    instance dying between the two)."""
    with psycopg.connect(servers.payers.conninfo(DATABASE)) as connection:
        legs = connection.execute(
            "SELECT credit_leg FROM ledger_outbox WHERE transaction_id = ANY(%s::uuid[])",
            (debits,),
        ).fetchall()
    with psycopg.connect(servers.payees.conninfo(DATABASE), autocommit=True) as connection:
        for (leg,) in legs:
            connection.execute("SELECT ledger_receive_leg(%s)", (json.dumps(leg),))


async def test_legs_a_crashed_instance_left_are_delivered_once_by_two_relays(
    servers: Servers, instances: list[Instance]
) -> None:
    """The instance that booked the debit legs died before delivering them (some of
    them after the credit was booked, before the debit was settled): two others relay
    at once, and each leg is delivered once."""
    first = await started(instances, servers)
    ada, cat = payer(), payee()
    a, c = await funded(first, ada, 1_000), await funded(first, cat, 0)
    debits = await debit_legs_only(
        first, servers.payers.conninfo(DATABASE), ada, a, c, [25] * 8, datetime.now(UTC) + LATER
    )
    await credit_legs_only(servers, debits[:3])
    assert credit_legs_of(servers, debits) == 3
    assert await balance(first, a) == 800

    second, third = await started(instances, servers), await started(instances, servers)
    later = datetime.now(UTC) + LATER
    passes = await asyncio.gather(second.legs.relay(later), third.legs.relay(later))
    assert sum(p.delivered for p in passes) == 8
    assert sum(p.refused + p.failed for p in passes) == 0
    assert credit_legs_of(servers, debits) == 8
    assert await balance(first, c) == 200
    assert outbox(servers) == 0
    assert await first.audit() == []


async def test_one_request_retried_at_once_books_one_debit_and_one_credit(
    servers: Servers, instances: list[Instance]
) -> None:
    stores = [await started(instances, servers) for _ in range(2)]
    ada, cat = payer(), payee()
    a, c = await funded(stores[0], ada, 1_000), await funded(stores[0], cat, 0)
    request = key()
    results = await asyncio.gather(
        *(
            store.transfer(ada, request, a, c, Money("EUR", 70), "", {})
            for store in stores
            for _ in range(4)
        )
    )
    ids = {r.transaction.id for r in results if r.transaction is not None}
    assert len(ids) == 1, [r.outcome for r in results]
    assert {r.outcome for r in results} <= {
        LedgerOutcome.OK,
        LedgerOutcome.REPLAYED,
        LedgerOutcome.IN_PROGRESS,
    }
    assert [r.outcome for r in results].count(LedgerOutcome.OK) == 1
    assert (
        count(
            servers.payers,
            "SELECT count(*) FROM transactions WHERE id = ANY(%s::uuid[])",
            list(ids),
        )
        == 1
    )
    assert credit_legs_of(servers, list(ids)) == 1
    assert (await balance(stores[0], a), await balance(stores[0], c)) == (930, 70)
    assert await stores[0].audit() == []


async def test_the_audit_across_servers_holds_while_money_moves_both_ways(
    servers: Servers, instances: list[Instance]
) -> None:
    """The audit (each server's, and across them: the books of both, each pair of
    in-transit accounts against what is on its way, each leg against the other) sampled
    again and again during a load of transfers both ways, some delivered within their
    call, some by a relay running alongside."""
    syncing = await started(instances, servers)
    leaving = await started(instances, servers, deliver_within=0.0)
    auditor = await started(instances, servers)
    people = [(payer(), payee()) for _ in range(2)]
    wallets = [
        (await funded(syncing, a, 100_000), await funded(syncing, b, 100_000)) for a, b in people
    ]
    answered = 0
    progress = asyncio.Condition()
    enough = asyncio.Event()

    async def pay(store: SqlLedgerStore, who: str, source: str, target: str) -> None:
        nonlocal answered
        while not enough.is_set():
            result = await store.transfer(who, key(), source, target, Money("EUR", 3), "", {})
            assert result.transaction is not None, result.outcome
            async with progress:
                answered += 1
                progress.notify_all()

    async def relay() -> None:
        while not enough.is_set():
            await leaving.legs.relay(datetime.now(UTC) + LATER)

    async def reached(n: int) -> int:
        async with progress:
            await progress.wait_for(lambda: answered >= n)
            return answered

    load = asyncio.gather(
        relay(),
        *(
            pay(store, owner, source, target)
            for store, (a, b), (wa, wb) in zip((syncing, leaving), people, wallets, strict=True)
            for owner, source, target in ((a, wa, wb), (b, wb, wa))
        ),
    )
    audits = []
    for _ in range(5):
        await reached(await reached(0) + 10)  # money moved since the last audit
        audits.append(await auditor.audit())
    enough.set()
    await load
    await leaving.legs.drain()
    await leaving.legs.relay(datetime.now(UTC) + 2 * LATER)
    assert audits == [[]] * 5
    assert outbox(servers) == 0
    assert await auditor.audit() == []


@pytest.fixture(scope="module")
def tampered(servers: Servers) -> ShardConfig:
    """Databases of their own, for findings that stay."""
    for each in (servers.payers, servers.payees):
        each.create_database(TAMPERED)
    config = ShardConfig.parse(f"{servers.payers.dsn(TAMPERED)} {servers.payees.dsn(TAMPERED)}")
    server.migrate(config)
    return config


TAMPERED = "ledger_saga_tampered"


async def test_the_audit_across_servers_finds_a_leg_without_its_other_side(
    servers: Servers, tampered: ShardConfig
) -> None:
    instance = Instance(
        tampered, LegSettings(deliver_within=0.0, relay_after=LATER.total_seconds())
    )
    store = await instance.open()
    try:
        ada, cat = payer(), payee()
        a, c = await funded(store, ada, 1_000), await funded(store, cat, 0)
        # A credit leg booked on cat's server for a debit leg that never was.
        forged = {
            "id": on_shard(uuid.UUID(c).bytes[15]),
            "debit_id": on_shard(uuid.UUID(a).bytes[15]),
            "type": "transfer",
            "amount": 40,
            "currency": "EUR",
            "payee": c,
            "payer": a,
            "payer_owner": ada,
            "memo": "",
            "metadata": {},
            "initiated_by": ada,
            "hold_id": None,
            "refund_of": None,
            "receipt_number": "R-FORGED",
            "created_at": datetime.now(UTC).isoformat(),
        }
        with psycopg.connect(servers.payees.conninfo(TAMPERED), autocommit=True) as connection:
            connection.execute("SELECT ledger_receive_leg(%s)", (json.dumps(forged),))
        findings = await store.audit()
        assert {(f.check, f.subject) for f in findings} == {
            ("credit_leg_across", f"database 2: {forged['debit_id']}"),
            (
                "in_transit_across",
                f"shards {uuid.UUID(a).bytes[15]} and {uuid.UUID(c).bytes[15]} EUR",
            ),
        }
        [in_transit] = [f for f in findings if f.check == "in_transit_across"]
        assert (in_transit.expected, in_transit.actual) == ("0", "-40")
    finally:
        await instance.close()


async def test_a_hold_for_a_merchant_of_the_other_server_is_captured_across(
    servers: Servers, instances: list[Instance]
) -> None:
    store = await started(instances, servers)
    ada, shop = payer(), payee()
    a, s = await funded(store, ada, 1_000), await funded(store, shop, 0)
    soon = datetime.now(UTC) + timedelta(hours=1)

    held = await store.create_hold(ada, key(), a, s, Money("EUR", 300), soon, "order 7")
    assert held.hold is not None
    wallet = await store.wallet(a)
    assert wallet is not None
    assert (wallet.balance, wallet.held) == (1_000, 300)
    # Only the merchant captures; the payer's try moves nothing.
    refused = await store.capture_hold(ada, key(), held.hold.id, None, datetime.now(UTC))
    assert refused.outcome is LedgerOutcome.NOT_OWNER

    captured = await store.capture_hold(shop, key(), held.hold.id, 200, datetime.now(UTC))
    assert captured.outcome is LedgerOutcome.OK
    assert captured.transaction is not None
    assert captured.transaction.status is TransactionStatus.POSTED
    assert captured.hold is not None
    assert captured.hold.status == "captured"
    wallet = await store.wallet(a)
    assert wallet is not None
    assert (wallet.balance, wallet.held) == (800, 0)
    assert await balance(store, s) == 200
    [seen_by_shop] = await store.history(shop, HistoryFilter(), None, 10)
    assert seen_by_shop.id == captured.transaction.id
    assert seen_by_shop.hold_id == held.hold.id

    # Another, voided by the merchant: the payer's money released.
    second = await store.create_hold(ada, key(), a, s, Money("EUR", 100), soon, "")
    assert second.hold is not None
    voided = await store.void_hold(shop, key(), second.hold.id)
    assert voided.hold is not None
    assert voided.hold.status == "voided"
    wallet = await store.wallet(a)
    assert wallet is not None
    assert wallet.held == 0
    assert outbox(servers) == 0
    assert await store.audit() == []


async def test_a_capture_while_the_merchants_server_is_down_posts_when_it_returns(
    servers: Servers, instances: list[Instance]
) -> None:
    store = await started(instances, servers, deliver_within=0.2)
    ada, shop = payer(), payee()
    a, s = await funded(store, ada, 1_000), await funded(store, shop, 0)
    held = await store.create_hold(
        ada, key(), a, s, Money("EUR", 400), datetime.now(UTC) + timedelta(hours=1), ""
    )
    assert held.hold is not None
    assert await store.legs.payee(s) is not None
    servers.payees.stop()
    try:
        # The merchant's own database is down: their capture reaches the hold's.
        captured = await store.capture_hold(shop, key(), held.hold.id, None, datetime.now(UTC))
    finally:
        servers.payees.start()
    assert captured.transaction is not None
    assert captured.transaction.status is TransactionStatus.PENDING
    await store.legs.drain()
    await store.legs.relay(datetime.now(UTC) + LATER)
    posted = await store.transaction(captured.transaction.id)
    assert posted is not None
    assert posted.status is TransactionStatus.POSTED
    assert (await balance(store, a), await balance(store, s)) == (600, 400)
    assert outbox(servers) == 0
    assert await store.audit() == []


async def test_a_transfer_from_the_other_server_is_refunded_back_across(
    servers: Servers, instances: list[Instance]
) -> None:
    store = await started(instances, servers)
    ada, cat = payer(), payee()
    a, c = await funded(store, ada, 1_000), await funded(store, cat, 0)
    paid = await store.transfer(ada, key(), a, c, Money("EUR", 500), "", {})
    assert paid.transaction is not None
    shown = paid.transaction.id

    # The payee refunds, naming the id both see: the refund goes back across.
    first = await store.refund(cat, key(), shown, 200, "sorry", False)
    assert first.outcome is LedgerOutcome.OK
    assert first.transaction is not None
    assert first.transaction.status is TransactionStatus.POSTED
    assert first.transaction.refund_of == shown
    assert (await balance(store, a), await balance(store, c)) == (700, 300)
    # Both sides see the original refunded alike.
    original = await store.transaction(shown)
    assert original is not None
    assert (original.status, original.refunded_amount) == (
        TransactionStatus.PARTIALLY_REFUNDED,
        200,
    )
    seen_by_cat = [t for t in await store.history(cat, HistoryFilter(), None, 10) if t.id == shown]
    assert [(t.status, t.refunded_amount) for t in seen_by_cat] == [
        (TransactionStatus.PARTIALLY_REFUNDED, 200)
    ]
    [refund_seen_by_ada] = [
        t
        for t in await store.history(ada, HistoryFilter(), None, 10)
        if t.id == first.transaction.id
    ]
    assert refund_seen_by_ada.refund_of == shown

    rest = await store.refund(cat, key(), shown, None, "", False)
    assert rest.transaction is not None
    assert rest.transaction.amount == 300
    more = await store.refund(cat, key(), shown, 1, "", False)
    assert more.outcome is LedgerOutcome.NOT_REFUNDABLE
    original = await store.transaction(shown)
    assert original is not None
    assert (original.status, original.refunded_amount) == (TransactionStatus.REFUNDED, 500)
    assert (await balance(store, a), await balance(store, c)) == (1_000, 0)
    assert outbox(servers) == 0
    assert await store.audit() == []


async def test_a_refund_to_a_wallet_closed_since_is_refused_and_undone(
    servers: Servers, instances: list[Instance]
) -> None:
    store = await started(instances, servers)
    dan, cat = payer(), payee()
    d, c = await funded(store, dan, 100), await funded(store, cat, 0)
    paid = await store.transfer(dan, key(), d, c, Money("EUR", 100), "", {})
    assert paid.transaction is not None
    assert await store.legs.payee(d) is not None  # seen open, and remembered
    closed = await store.close_wallet(dan, key(), d)
    assert closed.outcome is LedgerOutcome.OK

    refund = await store.refund(cat, key(), paid.transaction.id, 60, "", False)
    assert refund.transaction is not None
    assert refund.transaction.status is TransactionStatus.FAILED
    assert refund.transaction.failure_code == "destination_closed"
    assert await balance(store, c) == 100
    # What the refund took off the original is given back: still refundable in full.
    original = await store.transaction(paid.transaction.id)
    assert original is not None
    assert (original.status, original.refunded_amount) == (TransactionStatus.POSTED, 0)
    [seen_by_cat] = [
        t for t in await store.history(cat, HistoryFilter(), None, 10) if t.id == original.id
    ]
    assert (seen_by_cat.status, seen_by_cat.refunded_amount) == (TransactionStatus.POSTED, 0)
    assert outbox(servers) == 0
    assert await store.audit() == []


async def test_refunds_on_their_way_count_against_what_is_left_to_refund(
    servers: Servers, instances: list[Instance]
) -> None:
    """Refunds back across answer at once (PENDING) and count on the original only when
    delivered; meanwhile they are held back from what is left, so five at once of 300
    from 1,000 refund 900, never more."""
    store = await started(instances, servers, deliver_within=0.0)
    ada, cat = payer(), payee()
    a, c = await funded(store, ada, 0), await funded(store, cat, 1_000)
    paid = await store.transfer(cat, key(), c, a, Money("EUR", 1_000), "", {})
    assert paid.transaction is not None
    await store.legs.drain()
    await store.legs.relay(datetime.now(UTC) + LATER)
    results = await asyncio.gather(
        *(store.refund(ada, key(), paid.transaction.id, 300, "", False) for _ in range(5))
    )
    assert sorted(r.outcome for r in results) == sorted(
        [LedgerOutcome.OK] * 3 + [LedgerOutcome.AMOUNT_EXCEEDS_REFUNDABLE] * 2
    )
    await store.legs.drain()
    await store.legs.relay(datetime.now(UTC) + LATER)
    original = await store.transaction(paid.transaction.id)
    assert original is not None
    assert (original.status, original.refunded_amount) == (
        TransactionStatus.PARTIALLY_REFUNDED,
        900,
    )
    assert (await balance(store, a), await balance(store, c)) == (100, 900)
    assert outbox(servers) == 0
    assert await store.audit() == []


async def test_batches_to_the_other_server_in_opposite_orders_all_book(
    servers: Servers, instances: list[Instance]
) -> None:
    """Two payers of one shard send batches to two shards of the other server, in
    opposite orders, at once: each batch locks the in-transit accounts it needs up front
    and in one order, so none waits on another forever; an item to no wallet is refused
    alone."""
    store = await started(instances, servers)
    ada, bea = on_shard(7), on_shard(7)
    a, b = await funded(store, ada, 10_000), await funded(store, bea, 10_000)
    m1, m2 = await funded(store, on_shard(130), 0), await funded(store, on_shard(200), 0)
    nobody = on_shard(150)

    def items(source: str, first: str, second: str) -> list[TransferItem]:
        return [TransferItem(key(), source, w, Money("EUR", 5), "", {}) for w in (first, second)]

    rounds = await asyncio.gather(
        *(
            batch
            for _ in range(10)
            for batch in (
                store.transfer_batch(ada, items(a, m1, m2)),
                store.transfer_batch(bea, items(b, m2, m1)),
            )
        )
    )
    assert {r.outcome for batch in rounds for r in batch} == {LedgerOutcome.OK}
    assert {r.transaction.status for batch in rounds for r in batch if r.transaction} == {
        TransactionStatus.POSTED
    }
    mixed = await store.transfer_batch(ada, items(a, nobody, m1))
    assert [r.outcome for r in mixed] == [LedgerOutcome.DESTINATION_NOT_FOUND, LedgerOutcome.OK]
    assert (await balance(store, m1), await balance(store, m2)) == (105, 100)
    assert (await balance(store, a), await balance(store, b)) == (9_895, 9_900)
    assert outbox(servers) == 0
    assert await store.audit() == []


async def test_a_wallet_with_money_on_its_way_cannot_be_closed(
    servers: Servers, instances: list[Instance]
) -> None:
    """Money on its way to another database may come back (refused there): its wallet
    stays open until it has arrived or come back."""
    store = await started(instances, servers, deliver_within=0.2)
    ada, dan = payer(), payee()
    a, d = await funded(store, ada, 300), await funded(store, dan, 0)
    assert await store.legs.payee(d) is not None
    assert (await store.close_wallet(dan, key(), d)).outcome is LedgerOutcome.OK
    servers.payees.stop()
    try:
        sent = await store.transfer(ada, key(), a, d, Money("EUR", 300), "", {})
        assert sent.transaction is not None
        assert sent.transaction.status is TransactionStatus.PENDING
        assert await balance(store, a) == 0
        refused = await store.close_wallet(ada, key(), a)
        assert refused.outcome is LedgerOutcome.PAYMENT_PENDING
    finally:
        servers.payees.start()
    await store.legs.drain()
    await store.legs.relay(datetime.now(UTC) + LATER)
    back = await store.transaction(sent.transaction.id)
    assert back is not None
    assert (back.status, back.failure_code) == (TransactionStatus.FAILED, "destination_closed")
    assert await balance(store, a) == 300
    assert outbox(servers) == 0
    assert await store.audit() == []


async def test_a_capture_the_merchants_server_refuses_releases_the_hold(
    servers: Servers, instances: list[Instance]
) -> None:
    store = await started(instances, servers)
    ada, shop = payer(), payee()
    a, s = await funded(store, ada, 1_000), await funded(store, shop, 0)
    held = await store.create_hold(
        ada, key(), a, s, Money("EUR", 250), datetime.now(UTC) + timedelta(hours=1), ""
    )
    assert held.hold is not None
    # The merchant closes the wallet the hold pays into (seen open here), then captures.
    assert (await store.close_wallet(shop, key(), s)).outcome is LedgerOutcome.OK
    captured = await store.capture_hold(shop, key(), held.hold.id, None, datetime.now(UTC))
    assert captured.transaction is not None
    assert captured.transaction.status is TransactionStatus.FAILED
    hold = await store.hold(held.hold.id)
    assert hold is not None
    assert (hold.status, hold.captured_amount) == ("voided", 0)
    wallet = await store.wallet(a)
    assert wallet is not None
    assert (wallet.balance, wallet.held) == (1_000, 0)
    assert outbox(servers) == 0
    assert await store.audit() == []


async def test_first_movements_of_new_shard_pairs_in_both_directions_at_once(
    servers: Servers, instances: list[Instance]
) -> None:
    """Within one database: the in-transit accounts of a pair are made on its first use,
    in one order, so two first movements in opposite directions do not deadlock."""
    store = await started(instances, servers)
    for low in range(60, 70, 2):
        ada, bob = on_shard(low), on_shard(low + 1)
        a, b = await funded(store, ada, 100), await funded(store, bob, 100)
        both = await asyncio.gather(
            store.transfer(ada, key(), a, b, Money("EUR", 1), "", {}),
            store.transfer(bob, key(), b, a, Money("EUR", 1), "", {}),
        )
        assert [r.outcome for r in both] == [LedgerOutcome.OK, LedgerOutcome.OK]
    assert await store.audit() == []


async def test_a_retry_is_answered_while_the_payees_server_is_down(
    servers: Servers, instances: list[Instance]
) -> None:
    """A request done before is answered from its key even by an instance that has never
    seen its payee and cannot read it now: a retry needs nothing from the other side. A
    new request to that payee is UNAVAILABLE (the database is away), not refused."""
    first = await started(instances, servers)
    ada, cat = payer(), payee()
    a, c = await funded(first, ada, 1_000), await funded(first, cat, 0)
    request = key()
    paid = await first.transfer(ada, request, a, c, Money("EUR", 10), "", {})
    assert paid.transaction is not None
    fresh = await started(instances, servers)  # its own, empty, memory of payees
    servers.payees.stop()
    try:
        again = await fresh.transfer(ada, request, a, c, Money("EUR", 10), "", {})
        with pytest.raises((psycopg.OperationalError, PoolTimeout)) as away:
            await fresh.transfer(ada, key(), a, c, Money("EUR", 10), "", {})
    finally:
        servers.payees.start()
    assert again.outcome is LedgerOutcome.REPLAYED
    assert again.transaction == paid.transaction
    assert is_database_fault(away.value)


async def test_a_movement_credited_but_not_yet_settled_can_be_refunded(
    servers: Servers, instances: list[Instance]
) -> None:
    """Named by its id (the debit leg's, still pending on the payer's server), a movement
    the payee has received is refunded all the same; one not received yet is not
    refundable yet."""
    store = await started(instances, servers)
    ada, cat = payer(), payee()
    a, c = await funded(store, ada, 1_000), await funded(store, cat, 0)
    received, on_its_way = await debit_legs_only(
        store, servers.payers.conninfo(DATABASE), ada, a, c, [400, 100], datetime.now(UTC) + LATER
    )
    await credit_legs_only(servers, [received])
    refunded = await store.refund(cat, key(), received, 150, "", False)
    assert refunded.outcome is LedgerOutcome.OK
    assert refunded.transaction is not None
    assert refunded.transaction.status is TransactionStatus.POSTED
    early = await store.refund(cat, key(), on_its_way, None, "", False)
    assert early.outcome is LedgerOutcome.NOT_REFUNDABLE
    await store.legs.relay(datetime.now(UTC) + LATER)
    original = await store.transaction(received)
    assert original is not None
    assert (original.status, original.refunded_amount) == (
        TransactionStatus.PARTIALLY_REFUNDED,
        150,
    )
    assert (await balance(store, a), await balance(store, c)) == (650, 350)
    assert outbox(servers) == 0
    assert await store.audit() == []
