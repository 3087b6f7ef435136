"""What the ledger's use cases need from outside: the SQL ledger, the cache,
the user service, and a clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from services.runtime.money import Money
from services.transaction.domain.model import (
    BalanceAt,
    HistoryCursor,
    HistoryFilter,
    Hold,
    IdempotencyKey,
    LedgerResult,
    Transaction,
    TransactionType,
    UserProfile,
    Wallet,
    WalletStatus,
)


@dataclass(frozen=True)
class AuditFinding:
    check: str
    subject: str
    expected: str
    actual: str


@dataclass(frozen=True)
class TransferItem:
    """One transfer of a batch, checked: its key, wallets, money and notes."""

    key: IdempotencyKey
    source_wallet_id: str
    destination_wallet_id: str
    money: Money
    memo: str
    metadata: dict[str, str]


@dataclass(frozen=True)
class DueExternal:
    """A pending top-up or withdrawal the reconciler should look at now."""

    transaction_id: str
    kind: TransactionType
    provider: str
    instrument: str  # payment-method or destination token
    amount: int
    currency: str
    checks: int  # looks so far, this one included
    created_at: datetime


class PaymentOutcome(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class GatewayPayment:
    """What the payment gateway says about one payment."""

    payment_id: str
    status: PaymentOutcome
    failure_code: str = ""
    failure_message: str = ""


class GatewayUnavailable(Exception):
    """The gateway could not say anything about the payment now (down, deadline
    exceeded): it may exist, so it stays pending."""


class GatewayRejected(Exception):
    """The gateway refused the request as malformed before writing anything (an
    unknown provider, a bad token): `violations` are (field, why) pairs."""

    def __init__(self, message: str, violations: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.violations = violations


class PaymentGateway(Protocol):
    """The payment-gateway service. Every call is idempotent on the payment id (the
    ledger transaction's id): calling again drives the same payment, never a second."""

    async def charge(
        self, payment_id: str, provider: str, money: Money, payment_method: str
    ) -> GatewayPayment: ...

    async def payout(
        self, payment_id: str, provider: str, money: Money, destination: str
    ) -> GatewayPayment: ...

    async def payment(self, payment_id: str) -> GatewayPayment | None:
        """None: the gateway never heard of it."""
        ...


class LedgerStore(Protocol):
    """The ledger in PostgreSQL. Every mutating call is one database function:
    one round trip, one transaction, idempotent by its key."""

    async def create_wallet(
        self, owner_id: str, key: IdempotencyKey, currency: str
    ) -> LedgerResult: ...

    async def transfer(
        self,
        owner_id: str,
        key: IdempotencyKey,
        source_wallet_id: str,
        destination_wallet_id: str,
        money: Money,
        memo: str,
        metadata: dict[str, str],
    ) -> LedgerResult: ...

    async def transfer_batch(self, owner_id: str, items: list[TransferItem]) -> list[LedgerResult]:
        """Books the transfers in order in one database transaction; one outcome each
        (a refusal is an outcome, and the others go on)."""
        ...

    async def create_hold(
        self,
        owner_id: str,
        key: IdempotencyKey,
        wallet_id: str,
        merchant_wallet_id: str,
        money: Money,
        expires_at: datetime,
        memo: str,
    ) -> LedgerResult: ...

    async def capture_hold(
        self, owner_id: str, key: IdempotencyKey, hold_id: str, amount: int | None, now: datetime
    ) -> LedgerResult: ...

    async def void_hold(self, owner_id: str, key: IdempotencyKey, hold_id: str) -> LedgerResult: ...

    async def refund(
        self,
        owner_id: str,
        key: IdempotencyKey,
        transaction_id: str,
        amount: int | None,
        reason: str,
        is_admin: bool,
    ) -> LedgerResult: ...

    async def adjust(
        self, owner_id: str, key: IdempotencyKey, wallet_id: str, money: Money, reason: str
    ) -> LedgerResult: ...

    async def set_wallet_status(
        self, owner_id: str, key: IdempotencyKey, wallet_id: str, status: WalletStatus, reason: str
    ) -> LedgerResult: ...

    async def close_wallet(
        self, owner_id: str, key: IdempotencyKey, wallet_id: str
    ) -> LedgerResult: ...

    async def begin_external(
        self,
        owner_id: str,
        key: IdempotencyKey,
        kind: TransactionType,
        wallet_id: str,
        money: Money,
        provider: str,
        instrument: str,
        first_check_at: datetime,
    ) -> LedgerResult:
        """Reserves a pending top-up or withdrawal (a withdrawal holds its amount)."""
        ...

    async def release_unsent_external(
        self, owner_id: str, key: IdempotencyKey, kind: TransactionType, wallet_id: str
    ) -> bool:
        """Frees the key of a top-up or withdrawal that failed with nothing sent (its
        provider unavailable), so the same request can be tried again; False (nothing
        changed) for any other outcome."""
        ...

    async def settle_external(
        self, transaction_id: str, succeeded: bool, failure_code: str, failure_message: str
    ) -> LedgerResult:
        """Settles a pending one exactly once: outcome "settled", or "already_settled"
        (then the transaction as it stands), or "transaction_not_found"."""
        ...

    async def claim_due_external(
        self, now: datetime, limit: int, base_seconds: float, max_seconds: float
    ) -> list[DueExternal]:
        """Pending ones due for a look, each pushed back (exponentially) as it is
        claimed, so that instances share the work."""
        ...

    async def external_backlog(self, now: datetime) -> tuple[int, float]:
        """How many are pending, and the age in seconds of the oldest."""
        ...

    async def replay(self, owner_id: str, key: IdempotencyKey) -> LedgerResult | None:
        """The stored result of a key already used: outcome "replayed", or
        "key_mismatch" if it was used for another request; None if unused."""
        ...

    async def wallet(self, wallet_id: str) -> Wallet | None: ...

    async def balance_at(self, wallet_id: str, at: datetime) -> BalanceAt | None:
        """The wallet's balance and held amount at `at`; None if there is no such wallet."""
        ...

    async def wallets_of(self, owner_id: str) -> list[Wallet]: ...

    async def wallet_of(self, owner_id: str, currency: str) -> Wallet | None: ...

    async def transaction(self, transaction_id: str) -> Transaction | None: ...

    async def hold(self, hold_id: str) -> Hold | None: ...

    async def history(
        self, owner_id: str, filters: HistoryFilter, after: HistoryCursor | None, limit: int
    ) -> list[Transaction]: ...

    async def expire_holds(self, now: datetime, limit: int) -> list[tuple[str, str]]:
        """Releases due holds; returns (wallet id, owner id) of each one released."""
        ...

    async def audit(self) -> list[AuditFinding]: ...


# Renders a page of history, and the cursor of the next, as the API answers it.
PageRenderer = Callable[[list[Transaction], HistoryCursor | None], bytes]


class LedgerCache(Protocol):
    """Cache-aside copies of wallets and history pages (never the source of truth)."""

    async def wallet(
        self, wallet_id: str, load: Callable[[], Awaitable[Wallet | None]]
    ) -> Wallet | None:
        """The wallet from the cache, or as `load` reads it (then kept, unless a write of
        the wallet's came in between: a value read before a write is never kept after
        it)."""
        ...

    async def history_page(
        self, owner_id: str, query: str, load: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        """A history page as the API rendered it for `query`, from the cache (the ledger
        never looks inside: a hit is answered as it is, with no SQL, no decoding and no
        rebuilding), or as `load` renders it (then kept, as a wallet is)."""
        ...

    async def invalidate(self, wallet_ids: set[str], owner_ids: set[str]) -> None:
        """Drops what a committed write changed; called before answering."""
        ...


class Directory(Protocol):
    """The user service, asked on the caller's behalf."""

    async def user_id_for_email(self, access_token: str, email: str) -> str | None: ...

    async def display_name(self, access_token: str, user_id: str) -> str | None: ...

    async def me(self, access_token: str) -> UserProfile: ...


class Clock(Protocol):
    def now(self) -> datetime: ...
