"""The requests the ledger's use cases take, as the caller sent them (before checking).

One frozen dataclass per command, like the user service's: the gRPC handlers build
them from protobuf, the domain checks them (domain/ledger.py, domain/funding.py) and
turns them into ledger calls. Each carries the caller's idempotency key; who the
caller is travels beside it (the Caller).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.transaction.domain.model import IdempotencyKey, WalletStatus


@dataclass(frozen=True)
class AmountInput:
    """An amount as the client sent it: minor units and/or a decimal string."""

    currency: str
    amount: int
    decimal: str

    @property
    def given(self) -> bool:
        return bool(self.currency or self.amount or self.decimal)


NO_AMOUNT = AmountInput("", 0, "")


@dataclass(frozen=True)
class TransferRequest:
    """One transfer (alone, or as an item of a batch): to a wallet, or to a person by
    email (alone only)."""

    key: IdempotencyKey
    source_wallet_id: str
    destination_wallet_id: str
    amount: AmountInput
    memo: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    recipient_email: str = ""


@dataclass(frozen=True)
class HoldRequest:
    """Reserve money of the caller's wallet for a merchant (captured or voided later)."""

    key: IdempotencyKey
    wallet_id: str
    merchant_wallet_id: str
    amount: AmountInput
    expires_in_seconds: int = 0  # 0: the default lifetime
    memo: str = ""


@dataclass(frozen=True)
class CaptureRequest:
    """The merchant takes a hold's money: all of it, or `amount` of it."""

    key: IdempotencyKey
    hold_id: str
    amount: AmountInput = NO_AMOUNT


@dataclass(frozen=True)
class RefundRequest:
    """The receiver (or an operator) gives a transaction's money back: all that is
    left to refund, or `amount` of it."""

    key: IdempotencyKey
    transaction_id: str
    amount: AmountInput = NO_AMOUNT
    reason: str = ""


@dataclass(frozen=True)
class AdjustmentRequest:
    """An operator's signed correction of a wallet's balance, with the reason."""

    key: IdempotencyKey
    wallet_id: str
    amount: AmountInput
    reason: str


@dataclass(frozen=True)
class StatusChange:
    """An operator freezes or unfreezes a wallet, with the reason."""

    key: IdempotencyKey
    wallet_id: str
    status: WalletStatus
    reason: str


@dataclass(frozen=True)
class TopUpRequest:
    """Money in from a card (or another provider instrument) to the caller's wallet."""

    key: IdempotencyKey
    wallet_id: str
    amount: AmountInput
    payment_method: str  # the provider's token for the instrument, never card data
    provider: str = ""  # "": the configured default


@dataclass(frozen=True)
class WithdrawalRequest:
    """Money out of the caller's wallet to a provider destination (a bank account)."""

    key: IdempotencyKey
    wallet_id: str
    amount: AmountInput
    destination: str
    provider: str = ""
