"""The gateway's payment store (SqlPaymentStore) and the built-in sandbox provider on a
migrated gateway database and the session's Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from services.gateway.adapters.payment_store import SqlPaymentStore
from services.gateway.adapters.sandbox import (
    FAILURE_RATE_KEY,
    OUTAGE_KEY,
    SIGNATURE_HEADER,
    SIGNATURE_TOLERANCE_SECONDS,
    SandboxProvider,
    event_body,
    sign,
)
from services.gateway.domain.model import NewPayment, Payment
from services.gateway.domain.providers import (
    ChargeRequest,
    PaymentKind,
    PaymentStatus,
    PayoutRequest,
    ProviderPayment,
    ProviderRejected,
    ProviderUnavailable,
    RefundRequest,
    WebhookSignatureInvalid,
)
from services.gateway.server import MIGRATIONS
from services.localmesh.postgres import PostgresServer
from services.localmesh.redis import RedisServer
from services.runtime.cache import create_redis
from services.runtime.db import create_driver_pool
from services.runtime.migrations import upgrade_to_head
from tests.eventually import eventually_async

GATEWAY_DB = "gateway_store_it"
SECRET = "whsec_sandbox_store_tests"

Pool = AsyncConnectionPool[AsyncConnection[Any]]


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gateway_database_url(postgres: PostgresServer) -> str:
    postgres.create_database(GATEWAY_DB)
    url = postgres.dsn(GATEWAY_DB)
    upgrade_to_head(MIGRATIONS, url)
    return url


@pytest.fixture
async def pool(postgres: PostgresServer, gateway_database_url: str) -> AsyncIterator[Pool]:
    with psycopg.connect(postgres.conninfo(GATEWAY_DB), autocommit=True) as connection:
        connection.execute("TRUNCATE payments, webhook_events, sandbox_payments")
    driver_pool = create_driver_pool(gateway_database_url, size=4)
    await driver_pool.open()
    yield driver_pool
    await driver_pool.close()


@pytest.fixture
def store(pool: Pool) -> SqlPaymentStore:
    return SqlPaymentStore(pool)


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = create_redis(redis_server.url)
    await client.delete(OUTAGE_KEY, FAILURE_RATE_KEY)
    try:
        yield client
    finally:
        # Never leave the outage or the failures switched on for the tests that follow.
        await client.delete(OUTAGE_KEY, FAILURE_RATE_KEY)
        await client.aclose()


@pytest.fixture
async def sandbox(pool: Pool, redis: Redis) -> AsyncIterator[SandboxProvider]:
    provider = SandboxProvider(
        pool, redis, webhook_url=None, webhook_secret=SECRET, webhook_delay=0.05
    )
    yield provider
    await provider.aclose()


async def rows(pool: Pool, query: str, *args: object) -> list[tuple[Any, ...]]:
    async with pool.connection() as connection:
        cursor = await connection.execute(query, args)
        return await cursor.fetchall()


def new_payment(
    kind: PaymentKind = PaymentKind.CHARGE,
    amount: int = 1_000,
    instrument: str = "pm_card_visa",
    provider: str = "sandbox",
    charge_payment_id: str | None = None,
    payment_id: str | None = None,
) -> NewPayment:
    return NewPayment(
        id=payment_id or str(uuid.uuid4()),
        kind=kind,
        provider=provider,
        amount=amount,
        currency="EUR",
        instrument=instrument,
        description="wallet top-up",
        charge_payment_id=charge_payment_id,
    )


def refund_of(charge: Payment, amount: int) -> NewPayment:
    return new_payment(PaymentKind.REFUND, amount, "", charge.provider, charge.id)


def answer(
    status: PaymentStatus, reference: str = "sbx_ref", code: str = "", message: str = ""
) -> ProviderPayment:
    return ProviderPayment(
        reference=reference, status=status, failure_code=code, failure_message=message
    )


async def succeeded_charge(store: SqlPaymentStore, amount: int = 1_000) -> Payment:
    charge, _ = await store.create(new_payment(amount=amount))
    recorded, changed = await store.record(charge.id, answer(PaymentStatus.SUCCEEDED, "ch_1"))
    assert changed
    return recorded


# --- SqlPaymentStore ----------------------------------------------------------------------


async def test_create_is_idempotent_on_the_payment_id(store: SqlPaymentStore, pool: Pool) -> None:
    request = new_payment(amount=2_500)

    first, created = await store.create(request)
    again, created_again = await store.create(request)

    assert created is True
    assert (first.id, first.kind, first.status, first.amount, first.currency) == (
        request.id,
        PaymentKind.CHARGE,
        PaymentStatus.PENDING,
        2_500,
        "EUR",
    )
    assert (first.reference, first.failure_code, first.attempts) == ("", "", 0)
    assert first.same_request(request)
    assert created_again is False
    assert again == first
    # Even a different request under the same id returns what is stored (the caller
    # compares with same_request).
    other, created_other = await store.create(new_payment(amount=1, payment_id=request.id))
    assert (created_other, other) == (False, first)
    assert not other.same_request(new_payment(amount=1))
    assert await rows(pool, "SELECT count(*) FROM payments") == [(1,)]


async def test_record_changes_a_pending_payment_once(store: SqlPaymentStore) -> None:
    payment, _ = await store.create(new_payment())

    still_pending, changed = await store.record(payment.id, answer(PaymentStatus.PENDING, "r1"))
    assert changed is False
    assert (still_pending.status, still_pending.reference) == (PaymentStatus.PENDING, "r1")

    failed, changed = await store.record(
        payment.id, answer(PaymentStatus.FAILED, "", "card_declined", "Declined.")
    )
    assert changed is True
    assert (failed.status, failed.reference) == (PaymentStatus.FAILED, "r1")  # kept
    assert (failed.failure_code, failed.failure_message) == ("card_declined", "Declined.")
    assert failed.final

    late, changed = await store.record(payment.id, answer(PaymentStatus.SUCCEEDED, "r2"))
    assert changed is False
    assert late == failed
    assert await store.get(payment.id) == failed


async def test_record_of_a_failure_without_a_code_still_has_one(store: SqlPaymentStore) -> None:
    payment, _ = await store.create(new_payment())
    failed, changed = await store.record(payment.id, answer(PaymentStatus.FAILED, "r", ""))
    assert changed
    assert (failed.status, failed.failure_code) == (PaymentStatus.FAILED, "failed")


async def test_apply_event_applies_each_provider_event_once(
    store: SqlPaymentStore, pool: Pool
) -> None:
    first, _ = await store.create(new_payment())
    second, _ = await store.create(new_payment())
    on_stripe, _ = await store.create(new_payment(provider="stripe"))

    applied, changed = await store.apply_event(
        "sandbox", "evt_1", PaymentKind.CHARGE, first.id, answer(PaymentStatus.SUCCEEDED, "a")
    )
    assert changed is True
    assert applied is not None
    assert (applied.id, applied.status, applied.reference) == (
        first.id,
        PaymentStatus.SUCCEEDED,
        "a",
    )

    again, changed = await store.apply_event(
        "sandbox", "evt_1", PaymentKind.CHARGE, first.id, answer(PaymentStatus.SUCCEEDED, "a")
    )
    assert changed is False
    assert again == applied

    # The event id is spent, even for another (still pending) payment.
    replayed, changed = await store.apply_event(
        "sandbox", "evt_1", PaymentKind.CHARGE, second.id, answer(PaymentStatus.SUCCEEDED, "b")
    )
    assert changed is False
    assert replayed == second
    assert (await store.get(second.id)) == second

    # Event ids are per provider.
    on_other, changed = await store.apply_event(
        "stripe", "evt_1", PaymentKind.CHARGE, on_stripe.id, answer(PaymentStatus.SUCCEEDED, "c")
    )
    assert changed is True
    assert on_other is not None
    assert on_other.status is PaymentStatus.SUCCEEDED

    # A later event about a final payment changes nothing.
    late, changed = await store.apply_event(
        "sandbox", "evt_2", PaymentKind.CHARGE, first.id, answer(PaymentStatus.FAILED, "a", "x")
    )
    assert changed is False
    assert late == applied
    assert sorted(await rows(pool, "SELECT provider, event_id FROM webhook_events")) == [
        ("sandbox", "evt_1"),
        ("sandbox", "evt_2"),
        ("stripe", "evt_1"),
    ]


async def test_apply_event_for_an_unknown_payment_changes_nothing(
    store: SqlPaymentStore,
) -> None:
    charge, _ = await store.create(new_payment())
    unknown = str(uuid.uuid4())

    for event_id in ("evt_u1", "evt_u1", "evt_u2"):
        result = await store.apply_event(
            "sandbox", event_id, PaymentKind.CHARGE, unknown, answer(PaymentStatus.SUCCEEDED)
        )
        assert result == (None, False)
    # Another kind or another provider is not this payment either.
    assert await store.apply_event(
        "sandbox", "evt_k", PaymentKind.PAYOUT, charge.id, answer(PaymentStatus.SUCCEEDED)
    ) == (None, False)
    assert await store.apply_event(
        "stripe", "evt_p", PaymentKind.CHARGE, charge.id, answer(PaymentStatus.SUCCEEDED)
    ) == (None, False)
    assert await store.get(charge.id) == charge
    assert await store.get(unknown) is None


async def test_refunds_never_exceed_the_charge(store: SqlPaymentStore) -> None:
    charge = await succeeded_charge(store, 1_000)

    assert await store.create_refund(refund_of(charge, 1_001)) == (
        None,
        "amount_exceeds_refundable",
    )
    first, outcome = await store.create_refund(refund_of(charge, 600))
    assert outcome == "ok"
    assert first is not None
    assert (first.kind, first.status, first.charge_payment_id, first.amount) == (
        PaymentKind.REFUND,
        PaymentStatus.PENDING,
        charge.id,
        600,
    )
    assert await store.create_refund(refund_of(charge, 401)) == (
        None,
        "amount_exceeds_refundable",
    )
    # A failed refund gives its amount back.
    await store.record(first.id, answer(PaymentStatus.FAILED, "", "expired_card"))
    assert (await store.create_refund(refund_of(charge, 1_000)))[1] == "ok"
    assert await store.create_refund(refund_of(charge, 1)) == (None, "amount_exceeds_refundable")


async def test_refund_repeats_and_refusals(store: SqlPaymentStore) -> None:
    charge = await succeeded_charge(store, 1_000)
    request = refund_of(charge, 300)
    created, outcome = await store.create_refund(request)
    assert outcome == "ok"
    assert await store.create_refund(request) == (created, "exists")

    pending, _ = await store.create(new_payment())
    assert await store.create_refund(refund_of(pending, 1)) == (None, "charge_not_refundable")
    failed, _ = await store.create(new_payment())
    await store.record(failed.id, answer(PaymentStatus.FAILED, "", "card_declined"))
    assert await store.create_refund(refund_of(failed, 1)) == (None, "charge_not_refundable")
    missing = new_payment(PaymentKind.REFUND, 1, "", charge_payment_id=str(uuid.uuid4()))
    assert await store.create_refund(missing) == (None, "charge_not_found")
    payout, _ = await store.create(new_payment(PaymentKind.PAYOUT, instrument="ba_1"))
    await store.record(payout.id, answer(PaymentStatus.SUCCEEDED))
    assert await store.create_refund(refund_of(payout, 1)) == (None, "charge_not_found")


async def test_concurrent_refunds_of_one_charge_are_serialised(
    store: SqlPaymentStore, pool: Pool
) -> None:
    for _ in range(5):
        charge = await succeeded_charge(store, 1_000)

        results = await asyncio.gather(
            store.create_refund(refund_of(charge, 600)),
            store.create_refund(refund_of(charge, 600)),
        )

        assert sorted(outcome for _, outcome in results) == ["amount_exceeds_refundable", "ok"]
        assert await rows(
            pool,
            "SELECT count(*), sum(amount) FROM payments WHERE charge_payment_id = %s",
            charge.id,
        ) == [(1, 600)]


async def test_fail_unsent_only_fails_a_payment_never_sent(store: SqlPaymentStore) -> None:
    unsent, _ = await store.create(new_payment())
    failed = await store.fail_unsent(unsent.id, "provider_unavailable", "down")
    assert (failed.status, failed.failure_code) == (PaymentStatus.FAILED, "provider_unavailable")
    sent, _ = await store.create(new_payment())
    await store.start_attempt(sent.id)  # another instance is sending it
    kept = await store.fail_unsent(sent.id, "provider_unavailable", "down")
    assert (kept.status, kept.attempts) == (PaymentStatus.PENDING, 1)


async def test_pending_count_counts_pending_payments(store: SqlPaymentStore) -> None:
    assert await store.pending_count() == 0
    payments = [(await store.create(new_payment()))[0] for _ in range(3)]
    assert await store.pending_count() == 3
    await store.record(payments[0].id, answer(PaymentStatus.SUCCEEDED))
    assert await store.pending_count() == 2


# --- SandboxProvider ----------------------------------------------------------------------


def charge_request(method: str = "pm_card_visa", amount: int = 2_500) -> ChargeRequest:
    return ChargeRequest(str(uuid.uuid4()), amount, "EUR", method, "wallet top-up")


def payout_request(destination: str = "ba_123", amount: int = 1_000) -> PayoutRequest:
    return PayoutRequest(str(uuid.uuid4()), amount, "EUR", destination, "withdrawal")


async def test_a_test_card_succeeds_with_a_reference(sandbox: SandboxProvider, pool: Pool) -> None:
    for method in ("pm_card_visa", "tok_visa", "pm_card_mastercard"):
        request = charge_request(method)
        result = await sandbox.create_charge(request)
        assert result.status is PaymentStatus.SUCCEEDED
        assert result.reference.startswith("sbx_ch_")
        assert (result.failure_code, result.failure_message) == ("", "")
        stored = await rows(
            pool,
            "SELECT reference, kind, amount, status FROM sandbox_payments"
            " WHERE idempotency_key = %s",
            request.payment_id,
        )
        assert stored == [(result.reference, "charge", 2_500, "succeeded")]


@pytest.mark.parametrize(
    ("method", "code"),
    [
        ("pm_card_chargeDeclined", "card_declined"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ],
)
async def test_declined_cards_fail_with_their_code(
    sandbox: SandboxProvider, method: str, code: str
) -> None:
    result = await sandbox.create_charge(charge_request(method))
    assert result.status is PaymentStatus.FAILED
    assert result.failure_code == code
    assert result.failure_message
    assert result.reference.startswith("sbx_ch_")


async def test_the_same_payment_id_charges_once(sandbox: SandboxProvider, pool: Pool) -> None:
    request = charge_request()
    first = await sandbox.create_charge(request)
    again = await sandbox.create_charge(request)
    assert again == first
    assert await rows(
        pool,
        "SELECT count(*), max(calls) FROM sandbox_payments WHERE idempotency_key = %s",
        request.payment_id,
    ) == [(1, 2)]


async def test_the_unstable_card_fails_twice_then_succeeds_charged_once(
    sandbox: SandboxProvider, pool: Pool
) -> None:
    request = charge_request("pm_card_unstable")
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            await sandbox.create_charge(request)
    result = await sandbox.create_charge(request)
    assert result.status is PaymentStatus.SUCCEEDED
    assert await sandbox.create_charge(request) == result
    assert await rows(
        pool,
        "SELECT count(*), max(status) FROM sandbox_payments WHERE idempotency_key = %s",
        request.payment_id,
    ) == [(1, "succeeded")]


async def test_the_delayed_card_is_pending_then_succeeds(sandbox: SandboxProvider) -> None:
    result = await sandbox.create_charge(charge_request("pm_card_delayed"))
    assert result.status is PaymentStatus.PENDING
    assert result.reference

    current = result

    async def settled() -> bool:
        nonlocal current
        current = await sandbox.retrieve(PaymentKind.CHARGE, result.reference)
        return current.status is not PaymentStatus.PENDING

    await eventually_async(settled, "the delayed card to settle", 10, interval=0.02)

    assert current.status is PaymentStatus.SUCCEEDED
    assert current.reference == result.reference
    # Settled for good: the next look says the same.
    assert await sandbox.retrieve(PaymentKind.CHARGE, result.reference) == current


async def test_unknown_payment_methods_and_references_are_rejected(
    sandbox: SandboxProvider, pool: Pool
) -> None:
    with pytest.raises(ProviderRejected):
        await sandbox.create_charge(charge_request("pm_card_nonexistent"))
    with pytest.raises(ProviderRejected):
        await sandbox.retrieve(PaymentKind.CHARGE, "sbx_ch_nope")
    assert await rows(pool, "SELECT count(*) FROM sandbox_payments") == [(0,)]


async def test_an_outage_fails_every_call_until_it_ends(
    sandbox: SandboxProvider, redis: Redis, pool: Pool
) -> None:
    charged = await sandbox.create_charge(charge_request())
    await redis.set(OUTAGE_KEY, "1")
    try:
        request = charge_request()
        with pytest.raises(ProviderUnavailable):
            await sandbox.create_charge(request)
        with pytest.raises(ProviderUnavailable):
            await sandbox.create_charge(charge_request("pm_card_delayed"))
        with pytest.raises(ProviderUnavailable):
            await sandbox.create_payout(payout_request())
        with pytest.raises(ProviderUnavailable):
            await sandbox.refund(RefundRequest(str(uuid.uuid4()), charged.reference, 100, "EUR"))
        with pytest.raises(ProviderUnavailable):
            await sandbox.retrieve(PaymentKind.CHARGE, charged.reference)
        assert await rows(pool, "SELECT count(*) FROM sandbox_payments") == [(1,)]
    finally:
        await redis.delete(OUTAGE_KEY)

    assert (await sandbox.create_charge(request)).status is PaymentStatus.SUCCEEDED
    assert (await sandbox.create_payout(payout_request())).status is PaymentStatus.SUCCEEDED
    assert await sandbox.retrieve(PaymentKind.CHARGE, charged.reference) == charged


async def test_the_failure_rate_switch_overrides_the_configured_rate(
    sandbox: SandboxProvider, redis: Redis, pool: Pool
) -> None:
    await redis.set(FAILURE_RATE_KEY, "1")
    with pytest.raises(ProviderUnavailable):
        await sandbox.create_charge(charge_request())
    with pytest.raises(ProviderUnavailable):
        await sandbox.create_payout(payout_request())
    # Failed before any processing: the provider has nothing.
    assert await rows(pool, "SELECT count(*) FROM sandbox_payments") == [(0,)]

    # A malformed or out-of-range switch falls back to the configured rate (none here).
    for ignored in ("often", "1.5"):
        await redis.set(FAILURE_RATE_KEY, ignored)
        assert (await sandbox.create_charge(charge_request())).status is PaymentStatus.SUCCEEDED
    await redis.delete(FAILURE_RATE_KEY)
    assert (await sandbox.create_charge(charge_request())).status is PaymentStatus.SUCCEEDED
    assert await rows(pool, "SELECT count(*) FROM sandbox_payments") == [(3,)]


async def test_payouts(sandbox: SandboxProvider) -> None:
    paid = await sandbox.create_payout(payout_request("ba_123"))
    assert paid.status is PaymentStatus.SUCCEEDED
    assert paid.reference.startswith("sbx_pa_")

    closed = await sandbox.create_payout(payout_request("ba_sandbox_fails"))
    assert closed.status is PaymentStatus.FAILED
    assert closed.failure_code == "account_closed"

    delayed = await sandbox.create_payout(payout_request("ba_sandbox_delayed"))
    assert delayed.status is PaymentStatus.PENDING
    assert await sandbox.retrieve(PaymentKind.PAYOUT, paid.reference) == paid


async def test_refunds_of_charges(sandbox: SandboxProvider, pool: Pool) -> None:
    charged = await sandbox.create_charge(charge_request(amount=1_000))
    request = RefundRequest(str(uuid.uuid4()), charged.reference, 400, "EUR")

    refunded = await sandbox.refund(request)

    assert refunded.status is PaymentStatus.SUCCEEDED
    assert refunded.reference.startswith("sbx_re_")
    assert refunded.reference != charged.reference
    assert await sandbox.refund(request) == refunded
    assert await rows(
        pool,
        "SELECT kind, amount, instrument FROM sandbox_payments WHERE idempotency_key = %s",
        request.payment_id,
    ) == [("refund", 400, charged.reference)]

    declined = await sandbox.create_charge(charge_request("pm_card_chargeDeclined"))
    with pytest.raises(ProviderRejected):
        await sandbox.refund(RefundRequest(str(uuid.uuid4()), declined.reference, 1, "EUR"))
    with pytest.raises(ProviderRejected):
        await sandbox.refund(RefundRequest(str(uuid.uuid4()), "sbx_ch_nope", 1, "EUR"))
    with pytest.raises(ProviderRejected):  # a refund is not a charge
        await sandbox.refund(RefundRequest(str(uuid.uuid4()), refunded.reference, 1, "EUR"))


# --- webhooks -----------------------------------------------------------------------------


def webhook_body(payment_id: str, status: str = "succeeded") -> bytes:
    return event_body(
        "evt_test_1",
        PaymentKind.CHARGE,
        payment_id,
        {"reference": "sbx_ch_1", "status": status, "failure_code": "", "failure_message": ""},
    )


async def test_parse_webhook_reads_a_signed_event(sandbox: SandboxProvider) -> None:
    payment_id = str(uuid.uuid4())
    body = webhook_body(payment_id)

    event = await sandbox.parse_webhook(body, {SIGNATURE_HEADER: sign(SECRET, body)})

    assert event is not None
    assert (event.event_id, event.kind, event.payment_id) == (
        "evt_test_1",
        PaymentKind.CHARGE,
        payment_id,
    )
    assert event.payment == ProviderPayment("sbx_ch_1", PaymentStatus.SUCCEEDED, "", "")
    # Within the tolerance, an older signature is still good.
    older = sign(SECRET, body, int(time.time()) - SIGNATURE_TOLERANCE_SECONDS + 30)
    assert await sandbox.parse_webhook(body, {SIGNATURE_HEADER: older}) == event


def _genuine(body: bytes) -> tuple[bytes, dict[str, str]]:
    return body, {SIGNATURE_HEADER: sign(SECRET, body)}


def _stamped(offset: int) -> tuple[bytes, dict[str, str]]:
    body = webhook_body(str(uuid.uuid4()))
    return body, {SIGNATURE_HEADER: sign(SECRET, body, int(time.time()) + offset)}


def _with_header(header: str | None) -> tuple[bytes, dict[str, str]]:
    body = webhook_body(str(uuid.uuid4()))
    return body, {} if header is None else {SIGNATURE_HEADER: header}


def _tampered() -> tuple[bytes, dict[str, str]]:
    body, headers = _genuine(webhook_body(str(uuid.uuid4())))
    tampered = body.replace(b"succeeded", b"failed")
    assert tampered != body
    return tampered, headers


def _wrong_secret() -> tuple[bytes, dict[str, str]]:
    body = webhook_body(str(uuid.uuid4()))
    return body, {SIGNATURE_HEADER: sign("whsec_someone_else", body)}


def _split_header(keep: str) -> tuple[bytes, dict[str, str]]:
    body, headers = _genuine(webhook_body(str(uuid.uuid4())))
    stamp, digest = headers[SIGNATURE_HEADER].split(",", 1)
    return body, {SIGNATURE_HEADER: stamp if keep == "t" else digest}


REFUSED: dict[str, Callable[[], tuple[bytes, dict[str, str]]]] = {
    "tampered body": _tampered,
    "wrong secret": _wrong_secret,
    "missing header": lambda: _with_header(None),
    "empty header": lambda: _with_header(""),
    "garbage header": lambda: _with_header("t=yesterday,v1=abc"),
    "no timestamp": lambda: _split_header("v1"),
    "no signature": lambda: _split_header("t"),
    "too old": lambda: _stamped(-SIGNATURE_TOLERANCE_SECONDS - 60),
    "too far ahead": lambda: _stamped(SIGNATURE_TOLERANCE_SECONDS + 60),
    "signed, not an event": lambda: _genuine(b"{}"),
    "signed, not json": lambda: _genuine(b"not json"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_parse_webhook_rejects_what_is_not_genuine(
    sandbox: SandboxProvider, case: str
) -> None:
    body, headers = REFUSED[case]()
    with pytest.raises(WebhookSignatureInvalid):
        await sandbox.parse_webhook(body, headers)
