"""What the ledger's use cases need from outside: the SQL ledger, the cache,
the user service, and a clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.transaction.domain.model import (
    HistoryCursor,
    HistoryFilter,
    Hold,
    IdempotencyKey,
    LedgerResult,
    Transaction,
    Wallet,
    WalletStatus,
)
from services.transaction.domain.money import Money


@dataclass(frozen=True)
class AuditFinding:
    check: str
    subject: str
    expected: str
    actual: str


class LedgerStore(Protocol):
    """The ledger in PostgreSQL. Every mutating call is one database function:
    one round trip, one transaction, idempotent by its key."""

    async def create_wallet(self, key: IdempotencyKey, currency: str) -> LedgerResult: ...

    async def transfer(
        self,
        key: IdempotencyKey,
        source_wallet_id: str,
        destination_wallet_id: str,
        money: Money,
        memo: str,
        metadata: dict[str, str],
    ) -> LedgerResult: ...

    async def create_hold(
        self,
        key: IdempotencyKey,
        wallet_id: str,
        merchant_wallet_id: str,
        money: Money,
        expires_at: datetime,
        memo: str,
    ) -> LedgerResult: ...

    async def capture_hold(
        self, key: IdempotencyKey, hold_id: str, amount: int | None, now: datetime
    ) -> LedgerResult: ...

    async def void_hold(self, key: IdempotencyKey, hold_id: str) -> LedgerResult: ...

    async def refund(
        self,
        key: IdempotencyKey,
        transaction_id: str,
        amount: int | None,
        reason: str,
        is_admin: bool,
    ) -> LedgerResult: ...

    async def adjust(
        self, key: IdempotencyKey, wallet_id: str, money: Money, reason: str
    ) -> LedgerResult: ...

    async def set_wallet_status(
        self, key: IdempotencyKey, wallet_id: str, status: WalletStatus, reason: str
    ) -> LedgerResult: ...

    async def close_wallet(self, key: IdempotencyKey, wallet_id: str) -> LedgerResult: ...

    async def replay(self, key: IdempotencyKey) -> LedgerResult | None:
        """The stored result of a key already used: outcome "replayed", or
        "key_mismatch" if it was used for another request; None if unused."""
        ...

    async def wallet(self, wallet_id: str) -> Wallet | None: ...

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


class LedgerCache(Protocol):
    """Cache-aside copies of wallets and history pages (never the source of truth)."""

    async def wallet(self, wallet_id: str) -> Wallet | None: ...

    async def put_wallet(self, wallet: Wallet) -> None: ...

    async def history_page(self, owner_id: str, query: str) -> list[Transaction] | None: ...

    async def put_history_page(
        self, owner_id: str, query: str, page: list[Transaction]
    ) -> None: ...

    async def invalidate(self, wallet_ids: set[str], owner_ids: set[str]) -> None:
        """Drops what a committed write changed; called before answering."""
        ...


class Directory(Protocol):
    """The user service, asked on the caller's behalf."""

    async def user_id_for_email(self, access_token: str, email: str) -> str | None: ...

    async def display_name(self, access_token: str, user_id: str) -> str | None: ...


class Clock(Protocol):
    def now(self) -> datetime: ...
