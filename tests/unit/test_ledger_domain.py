"""The transaction service's use cases with a scripted ledger: validation,
authorization, outcome → error mapping and cache invalidation. (The money
itself moves in SQL; tests/integration covers that on real PostgreSQL.)"""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.runtime.auth import Caller
from services.runtime.errors import (
    Aborted,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from services.transaction.domain.commands import AdjustmentRequest, AmountInput, TransferRequest
from services.transaction.domain.ledger import Ledger, request_hash
from services.transaction.domain.model import (
    HistoryCursor,
    HistoryFilter,
    IdempotencyKey,
    LedgerOutcome,
    LedgerResult,
    Transaction,
)
from tests.fakes.ledger import (
    ADA,
    ADA_EUR,
    BOB,
    BOB_EUR,
    NOW,
    Clock,
    Directory,
    RecordingCache,
    ScriptedStore,
    transaction,
)


@pytest.fixture
def store() -> ScriptedStore:
    return ScriptedStore()


@pytest.fixture
def cache() -> RecordingCache:
    return RecordingCache()


@pytest.fixture
def directory() -> Directory:
    return Directory()


@pytest.fixture
def ledger(store: ScriptedStore, cache: RecordingCache, directory: Directory) -> Ledger:
    return Ledger(store, cache, directory, Clock())  # type: ignore[arg-type]


def ada(*roles: str) -> Caller:
    return Caller(ADA, frozenset(roles or ("user",)), "jti", 0, "token")


def key(value: str = "k-1") -> IdempotencyKey:
    return IdempotencyKey(value, request_hash("CreateTransfer", b"x"))


EUR_5 = AmountInput("EUR", 500, "")


async def test_transfer_calls_the_ledger_once_and_invalidates_both_sides(
    ledger: Ledger, store: ScriptedStore, cache: RecordingCache
) -> None:
    done = await ledger.transfer(
        ada(), TransferRequest(key(), ADA_EUR, BOB_EUR, EUR_5, "lunch", {"a": "b"})
    )
    assert done.transaction.amount == 500
    assert not done.replayed
    assert [name for name, _ in store.calls] == ["transfer"]
    assert cache.invalidated == [({ADA_EUR, BOB_EUR}, {ADA, BOB})]


async def test_invalid_transfer_lists_every_field_and_never_reaches_the_ledger(
    ledger: Ledger, store: ScriptedStore
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await ledger.transfer(
            ada(),
            TransferRequest(key(""), "nope", "", AmountInput("EUR", -1, ""), "x" * 281, {"": "v"}),
        )
    fields = {v.field for v in caught.value.violations}
    assert fields == {
        "request_id", "source_wallet_id", "destination", "amount.amount", "memo", "metadata[]",
    }  # fmt: skip
    assert store.calls == []


@pytest.mark.parametrize(
    ("outcome", "error", "reason"),
    [
        ("insufficient_funds", FailedPrecondition, "INSUFFICIENT_FUNDS"),
        ("in_progress", Aborted, "IDEMPOTENCY_KEY_IN_USE"),
        ("key_mismatch", FailedPrecondition, "IDEMPOTENCY_KEY_REUSED"),
        ("wallet_not_found", NotFound, "WALLET_NOT_FOUND"),
        ("source_frozen", FailedPrecondition, "WALLET_FROZEN"),
        ("destination_closed", FailedPrecondition, "DESTINATION_CLOSED"),
    ],
)
async def test_ledger_refusals_become_domain_errors(
    ledger: Ledger,
    store: ScriptedStore,
    cache: RecordingCache,
    outcome: str,
    error: type[DomainError],
    reason: str,
) -> None:
    store.outcome = outcome
    with pytest.raises(error) as caught:
        await ledger.transfer(ada(), TransferRequest(key(), ADA_EUR, BOB_EUR, EUR_5))
    assert caught.value.reason == reason
    assert cache.invalidated == []


async def test_currency_mismatch_and_self_transfer_name_their_fields(
    ledger: Ledger, store: ScriptedStore
) -> None:
    for outcome, field in (
        ("currency_mismatch", "amount.currency"),
        ("self_transfer", "destination"),
    ):
        store.outcome = outcome
        with pytest.raises(InvalidArgument) as caught:
            await ledger.transfer(ada(), TransferRequest(key(), ADA_EUR, BOB_EUR, EUR_5))
        assert caught.value.violations[0].field == field


async def test_transfer_by_email_resolves_the_recipients_wallet(
    ledger: Ledger, store: ScriptedStore, directory: Directory
) -> None:
    await ledger.transfer(
        ada(), TransferRequest(key(), ADA_EUR, "", EUR_5, recipient_email="BOB@example.com")
    )
    _, args = store.calls[0]
    assert (args[0], args[3]) == (ADA, BOB_EUR)  # the owner, explicit; the recipient found
    with pytest.raises(InvalidArgument):
        await ledger.transfer(
            ada(),
            TransferRequest(key("k-2"), ADA_EUR, "", EUR_5, recipient_email="ada@example.com"),
        )
    with pytest.raises(NotFound):
        await ledger.transfer(
            ada(),
            TransferRequest(key("k-3"), ADA_EUR, "", EUR_5, recipient_email="eve@example.com"),
        )


async def test_replayed_transfer_by_email_does_not_look_the_recipient_up_again(
    ledger: Ledger, store: ScriptedStore, directory: Directory
) -> None:
    store.stored = LedgerResult(LedgerOutcome.REPLAYED, transaction=transaction(7))
    done = await ledger.transfer(
        ada(), TransferRequest(key(), ADA_EUR, "", EUR_5, recipient_email="bob@example.com")
    )
    assert done.transaction.receipt_number == "R-00000000007"
    assert done.replayed
    assert directory.lookups == 0
    assert store.calls == []
    store.stored = LedgerResult(LedgerOutcome.KEY_MISMATCH)
    with pytest.raises(FailedPrecondition):
        await ledger.transfer(
            ada(), TransferRequest(key(), ADA_EUR, "", EUR_5, recipient_email="bob@example.com")
        )


async def test_someone_elses_wallet_is_not_found_but_admins_see_it(
    ledger: Ledger, cache: RecordingCache
) -> None:
    with pytest.raises(NotFound):
        await ledger.wallet(ada(), BOB_EUR)
    assert (await ledger.wallet(ada("admin"), BOB_EUR)).owner_id == BOB
    assert BOB_EUR in cache.wallets  # the read filled the cache
    assert (await ledger.wallet(ada(), ADA_EUR)).balance == 1000


async def test_adjust_needs_admin_and_a_reason(ledger: Ledger, store: ScriptedStore) -> None:
    with pytest.raises(PermissionDenied):
        await ledger.adjust(
            ada(), AdjustmentRequest(key(), ADA_EUR, AmountInput("EUR", 100, ""), "bonus")
        )
    with pytest.raises(InvalidArgument) as caught:
        await ledger.adjust(
            ada("admin"), AdjustmentRequest(key(), ADA_EUR, AmountInput("EUR", 100, ""), "  ")
        )
    assert caught.value.violations[0].field == "reason"
    with pytest.raises(InvalidArgument):
        await ledger.adjust(
            ada("admin"), AdjustmentRequest(key(), ADA_EUR, AmountInput("USD", 100, ""), "bonus")
        )
    await ledger.adjust(
        ada("admin"), AdjustmentRequest(key(), ADA_EUR, AmountInput("EUR", -100, ""), "fix")
    )
    assert [name for name, _ in store.calls] == ["adjust"]


async def test_a_balance_at_an_instant_is_the_owners_and_between_opening_and_now(
    ledger: Ledger, store: ScriptedStore
) -> None:
    wallet = store.wallets[ADA_EUR]
    found = await ledger.balance_at(ada(), ADA_EUR, None)
    assert (found.at, found.balance) == (NOW, wallet.balance)  # no instant: now
    assert (await ledger.balance_at(ada(), ADA_EUR, wallet.created_at)).at == NOW  # opening
    with pytest.raises(InvalidArgument) as future:
        await ledger.balance_at(ada(), ADA_EUR, NOW + timedelta(seconds=1))
    assert [v.field for v in future.value.violations] == ["at"]
    with pytest.raises(InvalidArgument) as early:
        await ledger.balance_at(ada(), ADA_EUR, wallet.created_at - timedelta(seconds=1))
    assert "before the wallet was opened" in early.value.violations[0].description
    with pytest.raises(NotFound):  # another's wallet: as if there were none
        await ledger.balance_at(ada(), BOB_EUR, None)
    assert (await ledger.balance_at(ada("admin"), BOB_EUR, None)).wallet.id == BOB_EUR
    with pytest.raises(InvalidArgument):
        await ledger.balance_at(ada(), "not-a-uuid", None)


def _receipts(page: list[Transaction], cursor: HistoryCursor | None) -> bytes:
    """A page rendered as the receipt numbers in it, and whether there is more."""
    return (",".join(t.receipt_number for t in page) + ("+" if cursor else "")).encode()


async def test_a_history_page_is_rendered_once_and_then_answered_from_the_cache(
    ledger: Ledger, store: ScriptedStore, cache: RecordingCache
) -> None:
    store.rows = [transaction(i, NOW - timedelta(minutes=i)) for i in range(3)]
    first = await ledger.history_page(ada(), HistoryFilter(), 2, None, _receipts)
    assert first == b"R-00000000000,R-00000000001+"
    renders: list[int] = []

    def counting(page: list[Transaction], cursor: HistoryCursor | None) -> bytes:
        renders.append(len(page))
        return _receipts(page, cursor)

    again = await ledger.history_page(ada(), HistoryFilter(), 2, None, counting)
    assert again == first
    assert renders == []  # a hit renders nothing
    assert [name for name, _ in store.calls] == ["history"]  # and reads no SQL
    # Another variant (the request's own filters as sent) is another page.
    await ledger.history_page(ada(), HistoryFilter(), 2, None, counting, variant="other")
    assert renders == [2]
    # A write of the owner's drops their pages: the next read sees it.
    store.rows = [transaction(9, NOW), *store.rows]
    await cache.invalidate(set(), {ADA})
    fresh = await ledger.history_page(ada(), HistoryFilter(), 2, None, counting)
    assert fresh == b"R-00000000009,R-00000000000+"
    # The filters are checked before the cache is asked.
    with pytest.raises(InvalidArgument):
        await ledger.history_page(ada(), HistoryFilter(start=NOW, end=NOW), 2, None, counting)


async def test_history_pages_by_cursor_and_checks_filters(
    ledger: Ledger, store: ScriptedStore
) -> None:
    store.rows = [transaction(i, NOW - timedelta(minutes=i)) for i in range(3)]
    page, cursor = await ledger.history(ada(), HistoryFilter(), 2, None)
    assert [t.receipt_number for t in page] == ["R-00000000000", "R-00000000001"]
    assert cursor is not None
    assert cursor.transaction_id == page[-1].id
    last, none = await ledger.history(ada(), HistoryFilter(), 3, None)
    assert len(last) == 3
    assert none is None
    with pytest.raises(InvalidArgument):
        await ledger.history(ada(), HistoryFilter(start=NOW, end=NOW), 2, None)
    with pytest.raises(NotFound):
        await ledger.history(ada(), HistoryFilter(wallet_id=BOB_EUR), 2, None)
