"""In-memory stand-ins for the transaction service's ports (domain tests only): a ledger
store that answers what it is told and records the calls, a cache that records
invalidations, a user directory of two people, a fixed clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from services.transaction.domain.model import (
    BalanceAt,
    IdempotencyKey,
    LedgerOutcome,
    LedgerResult,
    Transaction,
    TransactionStatus,
    TransactionType,
    UserProfile,
    Wallet,
    WalletStatus,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ADA = "00000000-0000-0000-0000-00000000000a"
BOB = "00000000-0000-0000-0000-00000000000b"
ADA_EUR = "10000000-0000-0000-0000-00000000000a"
BOB_EUR = "10000000-0000-0000-0000-00000000000b"


def wallet(wallet_id: str, owner: str, balance: int = 0) -> Wallet:
    return Wallet(wallet_id, owner, "EUR", balance, 0, 0, WalletStatus.ACTIVE, NOW)


def transaction(index: int = 0, created_at: datetime = NOW) -> Transaction:
    return Transaction(
        f"20000000-0000-0000-0000-{index:012d}", TransactionType.TRANSFER,
        TransactionStatus.POSTED, 500, "EUR", 0, ADA_EUR, BOB_EUR, ADA, BOB, "", {},
        f"R-{index:011d}", 0, None, None, ADA, created_at,
    )  # fmt: skip


class ScriptedStore:
    """Answers every ledger call with `self.outcome`; records the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.outcome = "ok"
        self.wallets = {ADA_EUR: wallet(ADA_EUR, ADA, 1000), BOB_EUR: wallet(BOB_EUR, BOB)}
        self.stored: LedgerResult | None = None
        self.rows: list[Transaction] = []

    def _result(self, name: str, *args: Any) -> LedgerResult:
        self.calls.append((name, args))
        if self.outcome != "ok":
            return LedgerResult(LedgerOutcome(self.outcome))
        return LedgerResult(
            LedgerOutcome.OK, transaction=transaction(), wallet=self.wallets[ADA_EUR]
        )

    async def transfer(self, *args: Any) -> LedgerResult:
        return self._result("transfer", *args)

    async def adjust(self, *args: Any) -> LedgerResult:
        return self._result("adjust", *args)

    async def replay(self, owner_id: str, key: IdempotencyKey) -> LedgerResult | None:
        return self.stored

    async def wallet(self, wallet_id: str) -> Wallet | None:
        return self.wallets.get(wallet_id)

    async def balance_at(self, wallet_id: str, at: datetime) -> BalanceAt | None:
        self.calls.append(("balance_at", (wallet_id, at)))
        wallet = self.wallets.get(wallet_id)
        return BalanceAt(wallet, at, wallet.balance, wallet.held) if wallet else None

    async def wallet_of(self, owner_id: str, currency: str) -> Wallet | None:
        return next((w for w in self.wallets.values() if w.owner_id == owner_id), None)

    async def history(self, owner_id: str, filters: Any, after: Any, limit: int) -> list[Any]:
        self.calls.append(("history", (limit,)))
        return self.rows[:limit]


class RecordingCache:
    def __init__(self) -> None:
        self.invalidated: list[tuple[set[str], set[str]]] = []
        self.wallets: dict[str, Wallet] = {}
        self.pages: dict[tuple[str, str], bytes] = {}

    async def wallet(
        self, wallet_id: str, load: Callable[[], Awaitable[Wallet | None]]
    ) -> Wallet | None:
        if wallet_id not in self.wallets:
            loaded = await load()
            if loaded is None:
                return None
            self.wallets[wallet_id] = loaded
        return self.wallets[wallet_id]

    async def history_page(
        self, owner_id: str, query: str, load: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        if (owner_id, query) not in self.pages:
            self.pages[(owner_id, query)] = await load()
        return self.pages[(owner_id, query)]

    async def invalidate(self, wallet_ids: set[str], owner_ids: set[str]) -> None:
        self.invalidated.append((wallet_ids, owner_ids))
        self.pages = {k: v for k, v in self.pages.items() if k[0] not in owner_ids}


class Directory:
    def __init__(self) -> None:
        self.lookups = 0

    async def user_id_for_email(self, access_token: str, email: str) -> str | None:
        self.lookups += 1
        return {"bob@example.com": BOB, "ada@example.com": ADA}.get(email.lower())

    async def display_name(self, access_token: str, user_id: str) -> str | None:
        return {ADA: "Ada", BOB: "Bob"}.get(user_id)

    async def me(self, access_token: str) -> UserProfile:
        return UserProfile(ADA, "ada@example.com", "Ada", "", ("ROLE_USER",), NOW, NOW)


class Clock:
    def now(self) -> datetime:
        return NOW
