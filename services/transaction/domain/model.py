"""The ledger as the domain sees it: wallets, transactions, holds. Plain data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class WalletStatus(StrEnum):
    ACTIVE = "active"
    FROZEN = "frozen"
    CLOSED = "closed"


class TransactionType(StrEnum):
    TRANSFER = "transfer"
    PAYMENT = "payment"
    REFUND = "refund"
    ADJUSTMENT = "adjustment"
    FREEZE = "freeze"
    UNFREEZE = "unfreeze"
    TOP_UP = "top_up"  # money in from a payment provider
    WITHDRAWAL = "withdrawal"  # money out to a payment provider


class TransactionStatus(StrEnum):
    POSTED = "posted"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    # A top-up or withdrawal waiting for its provider, or a transfer on its way to the
    # payee's database (saga.sql).
    PENDING = "pending"
    # A top-up or withdrawal its provider refused, or a transfer the payee's database
    # refused (its money back with the payer).
    FAILED = "failed"


class HoldStatus(StrEnum):
    ACTIVE = "active"
    CAPTURED = "captured"
    VOIDED = "voided"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Wallet:
    id: str
    owner_id: str
    currency: str
    balance: int
    held: int
    overdraft_limit: int
    status: WalletStatus
    created_at: datetime

    @property
    def available(self) -> int:
        return self.balance - self.held


@dataclass(frozen=True)
class BalanceAt:
    """A wallet's balance as it was at an instant (the wallet as it is now)."""

    wallet: Wallet
    at: datetime
    balance: int  # after the wallet's last posting made at or before `at`
    held: int  # by the holds active at `at`

    @property
    def available(self) -> int:
        return self.balance - self.held


@dataclass(frozen=True)
class Transaction:
    id: str
    type: TransactionType
    status: TransactionStatus
    amount: int
    currency: str
    fee: int
    source_wallet_id: str | None
    destination_wallet_id: str | None
    source_owner_id: str | None
    destination_owner_id: str | None
    memo: str
    metadata: dict[str, str]
    receipt_number: str
    refunded_amount: int
    refund_of: str | None
    hold_id: str | None
    initiated_by: str
    created_at: datetime
    # Top-ups and withdrawals: the provider, and why a failed one failed.
    payment_provider: str = ""
    failure_code: str = ""
    failure_message: str = ""


@dataclass(frozen=True)
class Hold:
    id: str
    wallet_id: str
    merchant_wallet_id: str
    currency: str
    amount: int
    captured_amount: int
    status: HoldStatus
    expires_at: datetime
    memo: str
    capture_transaction_id: str | None
    created_by: str
    created_at: datetime


class LedgerOutcome(StrEnum):
    """Every outcome word a ledger function (SQL) returns: the one contract between the
    SQL and this service. tests/integration/test_ledger_contract.py reads the words the
    functions in the database can return and fails on any that is not here."""

    # Done, or the stored answer of a key that was done before.
    OK = "ok"
    REPLAYED = "replayed"
    # ledger_settle_external: settled now, or by whoever came first.
    SETTLED = "settled"
    ALREADY_SETTLED = "already_settled"
    # ledger_receive_leg: the payee's database booked a credit leg, or refused it (the
    # payer's database then reverses the debit leg; saga.sql).
    DELIVERED = "delivered"
    REFUSED = "refused"
    # Refusals (domain/ledger.py maps each to the error a caller sees).
    IN_PROGRESS = "in_progress"
    KEY_MISMATCH = "key_mismatch"
    WALLET_NOT_FOUND = "wallet_not_found"
    DESTINATION_NOT_FOUND = "destination_not_found"
    HOLD_NOT_FOUND = "hold_not_found"
    TRANSACTION_NOT_FOUND = "transaction_not_found"
    NOT_OWNER = "not_owner"
    WALLET_EXISTS = "wallet_exists"
    CURRENCY_MISMATCH = "currency_mismatch"
    SELF_TRANSFER = "self_transfer"
    SOURCE_FROZEN = "source_frozen"
    SOURCE_CLOSED = "source_closed"
    DESTINATION_CLOSED = "destination_closed"
    WALLET_CLOSED = "wallet_closed"
    WALLET_FROZEN = "wallet_frozen"
    PAYMENT_PENDING = "payment_pending"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    HOLD_NOT_ACTIVE = "hold_not_active"
    HOLD_EXPIRED = "hold_expired"
    AMOUNT_EXCEEDS_HOLD = "amount_exceeds_hold"
    NOT_REFUNDABLE = "not_refundable"
    AMOUNT_EXCEEDS_REFUNDABLE = "amount_exceeds_refundable"
    STATUS_UNCHANGED = "status_unchanged"
    BALANCE_NOT_ZERO = "balance_not_zero"


# Outcomes that are not refusals: the operation's records are the answer.
ACCEPTED_OUTCOMES = frozenset(
    {
        LedgerOutcome.OK,
        LedgerOutcome.REPLAYED,
        LedgerOutcome.SETTLED,
        LedgerOutcome.ALREADY_SETTLED,
        # Answers between the two databases of a movement, not to a caller.
        LedgerOutcome.DELIVERED,
        LedgerOutcome.REFUSED,
    }
)


@dataclass(frozen=True)
class LedgerResult:
    """What one ledger operation returned: an outcome word and the records it
    touched (see the SQL functions in services/transaction/sql/)."""

    outcome: LedgerOutcome
    transaction: Transaction | None = None
    hold: Hold | None = None
    wallet: Wallet | None = None


@dataclass(frozen=True)
class Posted:
    """The transaction a money-moving call answers with: written by this call, or
    `replayed` from the answer stored under its idempotency key (the api layer counts
    them apart)."""

    transaction: Transaction
    replayed: bool


@dataclass(frozen=True)
class HistoryFilter:
    wallet_id: str | None = None
    type: TransactionType | None = None
    status: TransactionStatus | None = None
    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True)
class HistoryCursor:
    """Position after the last transaction of a page (newest first)."""

    created_at: datetime
    transaction_id: str


@dataclass(frozen=True)
class IdempotencyKey:
    """A caller's key for one request, and a hash of the operation and the request. (Whose
    key it is, the owner, is a parameter of its own wherever it is used.)"""

    key: str
    request_hash: str


@dataclass(frozen=True)
class Party:
    """A side of a receipt."""

    user_id: str | None
    display_name: str
    wallet_id: str | None


@dataclass(frozen=True)
class Receipt:
    transaction: Transaction
    payer: Party
    payee: Party
    issued_at: datetime


@dataclass(frozen=True)
class UserProfile:
    """The caller's own profile, as the user service says (for the account summary)."""

    user_id: str
    email: str
    display_name: str
    phone: str
    roles: tuple[str, ...]  # the user service's role names ("ROLE_USER", ...)
    created_at: datetime | None
    updated_at: datetime | None
