"""The transaction service's use cases: wallets, transfers, holds, refunds,
history, receipts and operator functions.

Plain Python: no gRPC, no SQL. The money itself moves inside the database (one
function call per movement, see the adapters); this layer validates input,
decides who may do what, turns ledger outcomes into domain errors, and keeps
the cache honest (invalidate after commit, before answering).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from datetime import datetime, timedelta

from services.runtime.auth import Caller
from services.runtime.errors import (
    Aborted,
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ViolationCollector,
)
from services.runtime.money import Money, check_currency, parse_amount
from services.transaction.domain.commands import (
    AdjustmentRequest,
    AmountInput,
    CaptureRequest,
    HoldRequest,
    RefundRequest,
    StatusChange,
    TransferRequest,
)
from services.transaction.domain.model import (
    ACCEPTED_OUTCOMES,
    BalanceAt,
    HistoryCursor,
    HistoryFilter,
    Hold,
    IdempotencyKey,
    LedgerOutcome,
    LedgerResult,
    Party,
    Posted,
    Receipt,
    Transaction,
    UserProfile,
    Wallet,
)
from services.transaction.domain.ports import (
    Clock,
    Directory,
    LedgerCache,
    LedgerStore,
    PageRenderer,
    TransferItem,
)

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MEMO_MAX = 280
REASON_MAX = 500
METADATA_MAX_PAIRS = 20
METADATA_KEY_MAX = 40
METADATA_VALUE_MAX = 500
HOLD_DEFAULT_SECONDS = 86_400
HOLD_MAX_SECONDS = 7 * 86_400
SUMMARY_RECENT = 5
BATCH_MAX = 100
HOUSE = "Wallet mesh (settlement)"


# Ledger outcomes that are refusals, as the errors a caller sees.
_REFUSALS: dict[LedgerOutcome, DomainError] = {
    LedgerOutcome.IN_PROGRESS: Aborted(
        "a request with this idempotency key is still in progress; retry later",
        reason="IDEMPOTENCY_KEY_IN_USE",
    ),
    LedgerOutcome.KEY_MISMATCH: FailedPrecondition(
        "this idempotency key was already used for a different request",
        reason="IDEMPOTENCY_KEY_REUSED",
    ),
    LedgerOutcome.WALLET_NOT_FOUND: NotFound("no such wallet", reason="WALLET_NOT_FOUND"),
    LedgerOutcome.DESTINATION_NOT_FOUND: NotFound(
        "no such destination wallet", reason="DESTINATION_NOT_FOUND"
    ),
    LedgerOutcome.HOLD_NOT_FOUND: NotFound("no such hold", reason="HOLD_NOT_FOUND"),
    LedgerOutcome.TRANSACTION_NOT_FOUND: NotFound(
        "no such transaction", reason="TRANSACTION_NOT_FOUND"
    ),
    LedgerOutcome.NOT_OWNER: PermissionDenied(
        "only the receiving wallet's owner may do this", reason="NOT_OWNER"
    ),
    LedgerOutcome.WALLET_EXISTS: AlreadyExists(
        "you already have a wallet in this currency", reason="WALLET_EXISTS"
    ),
    LedgerOutcome.CURRENCY_MISMATCH: InvalidArgument.single(
        "amount.currency", "must be the currency of both wallets"
    ),
    LedgerOutcome.SELF_TRANSFER: InvalidArgument.single(
        "destination", "must be another person's wallet, not your own"
    ),
    LedgerOutcome.SOURCE_FROZEN: FailedPrecondition(
        "the paying wallet is frozen: no money may leave it", reason="WALLET_FROZEN"
    ),
    LedgerOutcome.SOURCE_CLOSED: FailedPrecondition(
        "the paying wallet is closed", reason="WALLET_CLOSED"
    ),
    LedgerOutcome.DESTINATION_CLOSED: FailedPrecondition(
        "the receiving wallet is closed", reason="DESTINATION_CLOSED"
    ),
    LedgerOutcome.WALLET_CLOSED: FailedPrecondition("the wallet is closed", reason="WALLET_CLOSED"),
    LedgerOutcome.WALLET_FROZEN: FailedPrecondition("the wallet is frozen", reason="WALLET_FROZEN"),
    LedgerOutcome.PAYMENT_PENDING: FailedPrecondition(
        "a top-up is still on its way to this wallet; close it once it has settled",
        reason="PAYMENT_PENDING",
    ),
    LedgerOutcome.INSUFFICIENT_FUNDS: FailedPrecondition(
        "insufficient funds: the available balance is lower than the amount",
        reason="INSUFFICIENT_FUNDS",
    ),
    LedgerOutcome.HOLD_NOT_ACTIVE: FailedPrecondition(
        "the hold is no longer active", reason="HOLD_NOT_ACTIVE"
    ),
    LedgerOutcome.HOLD_EXPIRED: FailedPrecondition("the hold has expired", reason="HOLD_EXPIRED"),
    LedgerOutcome.AMOUNT_EXCEEDS_HOLD: InvalidArgument.single(
        "amount.amount", "must not exceed the held amount"
    ),
    LedgerOutcome.NOT_REFUNDABLE: FailedPrecondition(
        "only transfers and payments can be refunded", reason="NOT_REFUNDABLE"
    ),
    LedgerOutcome.AMOUNT_EXCEEDS_REFUNDABLE: InvalidArgument.single(
        "amount.amount", "must not exceed what is left to refund"
    ),
    LedgerOutcome.STATUS_UNCHANGED: FailedPrecondition(
        "the wallet already has that status", reason="STATUS_UNCHANGED"
    ),
    LedgerOutcome.BALANCE_NOT_ZERO: FailedPrecondition(
        "a wallet can be closed only with a zero balance and no active holds",
        reason="BALANCE_NOT_ZERO",
    ),
}


def refusal_for(outcome: LedgerOutcome) -> DomainError | None:
    """The error a caller sees for a refused outcome (None: not a mapped refusal)."""
    return _REFUSALS.get(outcome)


def accepted(result: LedgerResult) -> LedgerResult:
    if result.outcome in ACCEPTED_OUTCOMES:
        return result
    refusal = refusal_for(result.outcome)
    if refusal is None:
        raise RuntimeError(f"unexpected ledger outcome {result.outcome!r}")
    # A fresh instance each time: exceptions carry tracebacks.
    raise _copy(refusal)


def _paged(rows: list[Transaction], limit: int) -> tuple[list[Transaction], HistoryCursor | None]:
    """The first `limit` of rows read `limit + 1` at a time, and the cursor after them if
    there is more."""
    page = rows[:limit]
    more = len(rows) > limit
    return page, HistoryCursor(page[-1].created_at, page[-1].id) if more else None


def _posted(result: LedgerResult) -> Posted:
    """The transaction of an accepted movement, and whether it was replayed."""
    assert result.transaction is not None
    return Posted(result.transaction, replayed=result.outcome is LedgerOutcome.REPLAYED)


def _copy(error: DomainError) -> DomainError:
    if isinstance(error, InvalidArgument):
        return InvalidArgument(list(error.violations))
    return type(error)(error.message, reason=error.reason)


async def invalidate_for(cache: LedgerCache, *transactions: Transaction) -> None:
    """Drops from the cache what these committed transactions changed: called after
    commit, before answering, so a user always reads their own writes."""
    await cache.invalidate(
        {w for t in transactions for w in (t.source_wallet_id, t.destination_wallet_id) if w},
        {o for t in transactions for o in (t.source_owner_id, t.destination_owner_id) if o},
    )


def request_hash(operation: str, canonical_request: bytes) -> str:
    return hashlib.sha256(operation.encode() + b"\0" + canonical_request).hexdigest()


def check_key(key: IdempotencyKey, errors: ViolationCollector) -> None:
    if not key.key:
        errors.add("request_id", "is required (or send an Idempotency-Key header)")
    elif len(key.key) > 255:
        errors.add("request_id", "must be at most 255 characters")


def check_amount(
    amount: AmountInput, errors: ViolationCollector, *, signed: bool = False
) -> Money | None:
    return parse_amount(
        amount.currency, amount.amount, amount.decimal, "amount", errors, signed=signed
    )


def _check_text(value: str, field: str, limit: int, errors: ViolationCollector) -> str:
    text = value.strip()
    if len(text) > limit:
        errors.add(field, f"must be at most {limit} characters")
    return text


def _check_metadata(metadata: dict[str, str], errors: ViolationCollector) -> None:
    if len(metadata) > METADATA_MAX_PAIRS:
        errors.add("metadata", f"must have at most {METADATA_MAX_PAIRS} pairs")
    for name, value in metadata.items():
        if not name or len(name) > METADATA_KEY_MAX:
            errors.add(f"metadata[{name}]", f"keys must be 1 to {METADATA_KEY_MAX} characters")
        if len(value) > METADATA_VALUE_MAX:
            errors.add(
                f"metadata[{name}]", f"values must be at most {METADATA_VALUE_MAX} characters"
            )


class Ledger:
    def __init__(
        self, store: LedgerStore, cache: LedgerCache, directory: Directory, clock: Clock
    ) -> None:
        self._store = store
        self._cache = cache
        self._directory = directory
        self._clock = clock

    # --- wallets ---------------------------------------------------------------------

    async def create_wallet(self, caller: Caller, key: IdempotencyKey, currency: str) -> Wallet:
        errors = ViolationCollector()
        check_key(key, errors)
        code = check_currency(currency.strip().upper(), "currency", errors)
        errors.raise_if_any()
        assert code is not None
        result = accepted(await self._store.create_wallet(caller.user_id, key, code))
        assert result.wallet is not None
        await self._cache.invalidate({result.wallet.id}, {caller.user_id})
        return result.wallet

    async def balance_at(self, caller: Caller, wallet_id: str, at: datetime | None) -> BalanceAt:
        """One of the caller's wallets' balance as it was at `at` (now if None)."""
        errors = ViolationCollector()
        wallet_id = errors.uuid(wallet_id, "wallet_id")
        now = self._clock.now()
        if at is not None and at > now:
            errors.add("at", "is in the future: a balance is known up to now")
        errors.raise_if_any()
        instant = at or now
        found = await self._store.balance_at(wallet_id, instant)
        # Someone else's wallet does not exist, as far as the caller can tell.
        if found is None or (found.wallet.owner_id != caller.user_id and not caller.is_admin):
            raise NotFound("no such wallet", reason="WALLET_NOT_FOUND")
        if instant < found.wallet.created_at:
            raise InvalidArgument.single(
                "at", f"is before the wallet was opened ({found.wallet.created_at.isoformat()})"
            )
        return found

    async def wallets(self, caller: Caller) -> list[Wallet]:
        return await self._store.wallets_of(caller.user_id)

    async def wallet(self, caller: Caller, wallet_id: str) -> Wallet:
        errors = ViolationCollector()
        wallet_id = errors.uuid(wallet_id, "wallet_id")
        errors.raise_if_any()
        wallet = await self._cache.wallet(wallet_id, lambda: self._store.wallet(wallet_id))
        # Someone else's wallet does not exist, as far as the caller can tell.
        if wallet is None or (wallet.owner_id != caller.user_id and not caller.is_admin):
            raise NotFound("no such wallet", reason="WALLET_NOT_FOUND")
        return wallet

    async def close_wallet(self, caller: Caller, key: IdempotencyKey, wallet_id: str) -> Wallet:
        errors = ViolationCollector()
        check_key(key, errors)
        wallet_id = errors.uuid(wallet_id, "wallet_id")
        errors.raise_if_any()
        result = accepted(await self._store.close_wallet(caller.user_id, key, wallet_id))
        assert result.wallet is not None
        await self._cache.invalidate({wallet_id}, {caller.user_id})
        return result.wallet

    # --- moving money ----------------------------------------------------------------

    async def transfer(self, caller: Caller, request: TransferRequest) -> Posted:
        key = request.key
        errors = ViolationCollector()
        check_key(key, errors)
        source_wallet_id = errors.uuid(request.source_wallet_id, "source_wallet_id")
        destination_wallet_id = request.destination_wallet_id
        recipient_email = request.recipient_email.strip()
        if destination_wallet_id:
            destination_wallet_id = errors.uuid(destination_wallet_id, "destination_wallet_id")
        elif not recipient_email:
            errors.add("destination", "give destination_wallet_id or recipient_email")
        money = check_amount(request.amount, errors)
        memo = _check_text(request.memo, "memo", MEMO_MAX, errors)
        _check_metadata(request.metadata, errors)
        errors.raise_if_any()
        assert money is not None
        if not destination_wallet_id:
            replay = await self._replay(caller.user_id, key)
            if replay is not None:
                return _posted(accepted(replay))
            destination_wallet_id = await self._wallet_for_email(
                caller, recipient_email, money.currency
            )
        result = accepted(
            await self._store.transfer(
                caller.user_id,
                key,
                source_wallet_id,
                destination_wallet_id,
                money,
                memo,
                request.metadata,
            )
        )
        posted = _posted(result)
        await invalidate_for(self._cache, posted.transaction)
        return posted

    async def transfer_batch(
        self, caller: Caller, requests: list[TransferRequest]
    ) -> list[Posted | DomainError]:
        """Several transfers of the caller's in one round trip and one commit, each with
        its own key and outcome (a refusal is that item's answer). A malformed item
        refuses the whole batch, before anything is booked."""
        errors = ViolationCollector()
        if not 1 <= len(requests) <= BATCH_MAX:
            errors.add("requests", f"must hold 1 to {BATCH_MAX} transfers")
        items: list[TransferItem] = []
        for index, request in enumerate(requests):
            item_errors = ViolationCollector()
            check_key(request.key, item_errors)
            source = item_errors.uuid(request.source_wallet_id, "source_wallet_id")
            destination = item_errors.uuid(request.destination_wallet_id, "destination_wallet_id")
            money = check_amount(request.amount, item_errors)
            memo = _check_text(request.memo, "memo", MEMO_MAX, item_errors)
            _check_metadata(request.metadata, item_errors)
            for violation in item_errors.violations:
                errors.add(f"requests[{index}].{violation.field}", violation.description)
            if money is not None and not item_errors.violations:
                items.append(
                    TransferItem(request.key, source, destination, money, memo, request.metadata)
                )
        errors.raise_if_any()
        results = await self._store.transfer_batch(caller.user_id, items)
        answers: list[Posted | DomainError] = []
        for result in results:
            try:
                answers.append(_posted(accepted(result)))
            except DomainError as refusal:
                answers.append(refusal)
        await invalidate_for(
            self._cache, *(a.transaction for a in answers if isinstance(a, Posted))
        )
        return answers

    async def _wallet_for_email(self, caller: Caller, email: str, currency: str) -> str:
        user_id = await self._directory.user_id_for_email(caller.access_token, email)
        if user_id is None:
            raise NotFound("no user with this email", reason="RECIPIENT_NOT_FOUND")
        if user_id == caller.user_id:
            raise InvalidArgument.single(
                "recipient_email", "must be another person's email, not your own"
            )
        wallet = await self._store.wallet_of(user_id, currency)
        if wallet is None:
            raise NotFound(
                f"the recipient has no {currency} wallet", reason="DESTINATION_NOT_FOUND"
            )
        return wallet.id

    async def _replay(self, owner_id: str, key: IdempotencyKey) -> LedgerResult | None:
        """A key's stored result, checked before work that must not run twice
        (looking a recipient up could give another answer the second time)."""
        if not key.key:
            return None
        return await self._store.replay(owner_id, key)

    async def create_hold(self, caller: Caller, request: HoldRequest) -> Hold:
        errors = ViolationCollector()
        check_key(request.key, errors)
        wallet_id = errors.uuid(request.wallet_id, "wallet_id")
        merchant_wallet_id = errors.uuid(request.merchant_wallet_id, "merchant_wallet_id")
        money = check_amount(request.amount, errors)
        if not 0 <= request.expires_in_seconds <= HOLD_MAX_SECONDS:
            errors.add(
                "expires_in_seconds",
                f"must be between 1 and {HOLD_MAX_SECONDS} (0: {HOLD_DEFAULT_SECONDS})",
            )
        memo = _check_text(request.memo, "memo", MEMO_MAX, errors)
        errors.raise_if_any()
        assert money is not None
        expires_at = self._clock.now() + timedelta(
            seconds=request.expires_in_seconds or HOLD_DEFAULT_SECONDS
        )
        result = accepted(
            await self._store.create_hold(
                caller.user_id, request.key, wallet_id, merchant_wallet_id, money, expires_at, memo
            )
        )
        assert result.hold is not None
        await self._cache.invalidate({wallet_id}, {caller.user_id})
        return result.hold

    async def hold(self, caller: Caller, hold_id: str) -> Hold:
        errors = ViolationCollector()
        hold_id = errors.uuid(hold_id, "hold_id")
        errors.raise_if_any()
        hold = await self._store.hold(hold_id)
        if hold is None or not await self._may_see_hold(caller, hold):
            raise NotFound("no such hold", reason="HOLD_NOT_FOUND")
        return hold

    async def _may_see_hold(self, caller: Caller, hold: Hold) -> bool:
        if caller.is_admin:
            return True
        for wallet_id in (hold.wallet_id, hold.merchant_wallet_id):
            wallet = await self._store.wallet(wallet_id)
            if wallet is not None and wallet.owner_id == caller.user_id:
                return True
        return False

    async def capture_hold(self, caller: Caller, request: CaptureRequest) -> tuple[Hold, Posted]:
        errors = ViolationCollector()
        check_key(request.key, errors)
        hold_id = errors.uuid(request.hold_id, "hold_id")
        money = check_amount(request.amount, errors) if request.amount.given else None
        errors.raise_if_any()
        if money is not None:
            hold = await self._store.hold(hold_id)
            if hold is not None and hold.currency != money.currency:
                raise InvalidArgument.single("amount.currency", "must be the hold's currency")
        result = accepted(
            await self._store.capture_hold(
                caller.user_id,
                request.key,
                hold_id,
                money.amount if money else None,
                self._clock.now(),
            )
        )
        assert result.hold is not None
        posted = _posted(result)
        await invalidate_for(self._cache, posted.transaction)
        return result.hold, posted

    async def void_hold(self, caller: Caller, key: IdempotencyKey, hold_id: str) -> Hold:
        errors = ViolationCollector()
        check_key(key, errors)
        hold_id = errors.uuid(hold_id, "hold_id")
        errors.raise_if_any()
        result = accepted(await self._store.void_hold(caller.user_id, key, hold_id))
        assert result.hold is not None
        payer = await self._store.wallet(result.hold.wallet_id)
        await self._cache.invalidate({result.hold.wallet_id}, {payer.owner_id} if payer else set())
        return result.hold

    async def expire_holds(self, limit: int = 100) -> int:
        released = await self._store.expire_holds(self._clock.now(), limit)
        if released:
            await self._cache.invalidate(
                {wallet_id for wallet_id, _ in released}, {owner for _, owner in released}
            )
        return len(released)

    async def refund(self, caller: Caller, request: RefundRequest) -> Posted:
        errors = ViolationCollector()
        check_key(request.key, errors)
        transaction_id = errors.uuid(request.transaction_id, "transaction_id")
        money = check_amount(request.amount, errors) if request.amount.given else None
        reason = _check_text(request.reason, "reason", REASON_MAX, errors)
        errors.raise_if_any()
        if money is not None:
            original = await self._store.transaction(transaction_id)
            if original is not None and original.currency != money.currency:
                raise InvalidArgument.single(
                    "amount.currency", "must be the transaction's currency"
                )
        result = accepted(
            await self._store.refund(
                caller.user_id,
                request.key,
                transaction_id,
                money.amount if money else None,
                reason,
                caller.is_admin,
            )
        )
        posted = _posted(result)
        await invalidate_for(self._cache, posted.transaction)
        return posted

    # --- operators -------------------------------------------------------------------

    async def adjust(self, caller: Caller, request: AdjustmentRequest) -> tuple[Posted, Wallet]:
        caller.require_admin()
        errors = ViolationCollector()
        check_key(request.key, errors)
        wallet_id = errors.uuid(request.wallet_id, "wallet_id")
        money = check_amount(request.amount, errors, signed=True)
        reason = self._required_reason(request.reason, errors)
        errors.raise_if_any()
        assert money is not None
        wallet = await self._store.wallet(wallet_id)
        if wallet is not None and wallet.currency != money.currency:
            raise InvalidArgument.single("amount.currency", "must be the wallet's currency")
        result = accepted(
            await self._store.adjust(caller.user_id, request.key, wallet_id, money, reason)
        )
        assert result.wallet is not None
        posted = _posted(result)
        await invalidate_for(self._cache, posted.transaction)
        return posted, result.wallet

    async def set_status(self, caller: Caller, change: StatusChange) -> tuple[Posted, Wallet]:
        caller.require_admin()
        errors = ViolationCollector()
        check_key(change.key, errors)
        wallet_id = errors.uuid(change.wallet_id, "wallet_id")
        reason = self._required_reason(change.reason, errors)
        errors.raise_if_any()
        result = accepted(
            await self._store.set_wallet_status(
                caller.user_id, change.key, wallet_id, change.status, reason
            )
        )
        assert result.wallet is not None
        await self._cache.invalidate({wallet_id}, {result.wallet.owner_id})
        return _posted(result), result.wallet

    @staticmethod
    def _required_reason(reason: str, errors: ViolationCollector) -> str:
        text = _check_text(reason, "reason", REASON_MAX, errors)
        if not text:
            errors.add("reason", "is required: operator actions are recorded with a reason")
        return text

    # --- reading history -------------------------------------------------------------

    async def history(
        self,
        caller: Caller,
        filters: HistoryFilter,
        page_size: int,
        after: HistoryCursor | None,
    ) -> tuple[list[Transaction], HistoryCursor | None]:
        """One page of the caller's history, newest first, and the cursor of the next."""
        limit = await self._history_limit(caller, filters, page_size)
        return _paged(await self._store.history(caller.user_id, filters, after, limit + 1), limit)

    async def history_page(
        self,
        caller: Caller,
        filters: HistoryFilter,
        page_size: int,
        after: HistoryCursor | None,
        render: PageRenderer,
        variant: str = "",
    ) -> bytes:
        """`history`'s page as `render` makes it, from the cache when it holds it: a hit
        reads no SQL and renders nothing. `variant` names whatever else `render` puts in
        the page (a cached rendering is only answered to a request of the same one)."""
        limit = await self._history_limit(caller, filters, page_size)
        query = json.dumps(
            [asdict(filters), limit, asdict(after) if after else None, variant], default=str
        )

        async def load() -> bytes:
            rows = await self._store.history(caller.user_id, filters, after, limit + 1)
            return render(*_paged(rows, limit))

        return await self._cache.history_page(caller.user_id, query, load)

    async def _history_limit(self, caller: Caller, filters: HistoryFilter, page_size: int) -> int:
        """The page's length, once the filters are checked and a wallet filter is the
        caller's."""
        errors = ViolationCollector()
        if not 0 <= page_size <= MAX_PAGE_SIZE:
            errors.add("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
        if filters.wallet_id:
            errors.uuid(filters.wallet_id, "wallet_id")
        if filters.start and filters.end and filters.start >= filters.end:
            errors.add("end_time", "must be after start_time")
        errors.raise_if_any()
        if filters.wallet_id:
            await self.wallet(caller, filters.wallet_id)  # NotFound unless the caller's
        return page_size or DEFAULT_PAGE_SIZE

    async def transaction(self, caller: Caller, transaction_id: str) -> Transaction:
        errors = ViolationCollector()
        transaction_id = errors.uuid(transaction_id, "transaction_id")
        errors.raise_if_any()
        found = await self._store.transaction(transaction_id)
        parties = {found.source_owner_id, found.destination_owner_id} if found else set()
        if found is None or (caller.user_id not in parties and not caller.is_admin):
            raise NotFound("no such transaction", reason="TRANSACTION_NOT_FOUND")
        return found

    async def receipt(self, caller: Caller, transaction_id: str) -> Receipt:
        found = await self.transaction(caller, transaction_id)
        payer = await self._party(caller, found.source_owner_id, found.source_wallet_id)
        payee = await self._party(caller, found.destination_owner_id, found.destination_wallet_id)
        return Receipt(found, payer, payee, self._clock.now())

    async def _party(self, caller: Caller, user_id: str | None, wallet_id: str | None) -> Party:
        if user_id is None:
            return Party(None, HOUSE, wallet_id)
        name = await self._directory.display_name(caller.access_token, user_id)
        return Party(user_id, name or "(unknown)", wallet_id)

    async def summary(self, caller: Caller) -> tuple[UserProfile, list[Wallet], list[Transaction]]:
        """The caller's profile, wallets and most recent transactions."""
        profile = await self._directory.me(caller.access_token)
        recent, _ = await self.history(caller, HistoryFilter(), SUMMARY_RECENT, None)
        return profile, await self.wallets(caller), recent
