"""The JSON shapes the ledger's SQL functions return (and the cache stores),
to and from the domain's records."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypedDict

from services.transaction.domain.model import (
    Hold,
    HoldStatus,
    LedgerOutcome,
    LedgerResult,
    Transaction,
    TransactionStatus,
    TransactionType,
    Wallet,
    WalletStatus,
)


# The JSON documents the ledger's SQL functions return (ledger_wallet_json,
# ledger_txn_json, ledger_hold_json), and the cache stores: one definition of their keys,
# checked against the SQL by tests/integration/test_ledger_contract.py.
class WalletJson(TypedDict):
    id: str
    owner_id: str
    currency: str
    balance: int
    held: int
    overdraft_limit: int
    status: str
    created_at: str


class TransactionJson(TypedDict):
    id: str
    type: str
    status: str
    amount: int
    currency: str
    fee: int
    source_account_id: str | None
    destination_account_id: str | None
    source_owner_id: str | None
    destination_owner_id: str | None
    memo: str | None
    metadata: dict[str, str] | None
    receipt_number: str | None
    refunded_amount: int
    refund_of: str | None
    hold_id: str | None
    initiated_by: str | None
    created_at: str
    payment_provider: str | None
    failure_code: str | None
    failure_message: str | None


class HoldJson(TypedDict):
    id: str
    account_id: str
    merchant_account_id: str
    currency: str
    amount: int
    captured_amount: int
    status: str
    expires_at: str
    memo: str | None
    capture_transaction_id: str | None
    created_by: str | None
    created_at: str


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def wallet_from_json(data: dict[str, Any]) -> Wallet:
    return Wallet(
        id=data["id"],
        owner_id=data["owner_id"],
        currency=data["currency"],
        balance=int(data["balance"]),
        held=int(data["held"]),
        overdraft_limit=int(data["overdraft_limit"]),
        status=WalletStatus(data["status"]),
        created_at=_time(data["created_at"]),
    )


def wallet_to_json(wallet: Wallet) -> WalletJson:
    return {
        "id": wallet.id,
        "owner_id": wallet.owner_id,
        "currency": wallet.currency,
        "balance": wallet.balance,
        "held": wallet.held,
        "overdraft_limit": wallet.overdraft_limit,
        "status": wallet.status.value,
        "created_at": wallet.created_at.isoformat(),
    }


def transaction_from_json(data: dict[str, Any]) -> Transaction:
    return Transaction(
        id=data["id"],
        type=TransactionType(data["type"]),
        status=TransactionStatus(data["status"]),
        amount=int(data["amount"]),
        currency=data["currency"],
        fee=int(data["fee"]),
        source_wallet_id=data["source_account_id"],
        destination_wallet_id=data["destination_account_id"],
        source_owner_id=data["source_owner_id"],
        destination_owner_id=data["destination_owner_id"],
        memo=data["memo"] or "",
        metadata=dict(data["metadata"] or {}),
        receipt_number=data["receipt_number"],
        refunded_amount=int(data["refunded_amount"]),
        refund_of=data["refund_of"],
        hold_id=data["hold_id"],
        initiated_by=data["initiated_by"],
        created_at=_time(data["created_at"]),
        payment_provider=data.get("payment_provider") or "",
        failure_code=data.get("failure_code") or "",
        failure_message=data.get("failure_message") or "",
    )


def hold_from_json(data: dict[str, Any]) -> Hold:
    return Hold(
        id=data["id"],
        wallet_id=data["account_id"],
        merchant_wallet_id=data["merchant_account_id"],
        currency=data["currency"],
        amount=int(data["amount"]),
        captured_amount=int(data["captured_amount"]),
        status=HoldStatus(data["status"]),
        expires_at=_time(data["expires_at"]),
        memo=data["memo"] or "",
        capture_transaction_id=data["capture_transaction_id"],
        created_by=data["created_by"],
        created_at=_time(data["created_at"]),
    )


def result_from_json(data: dict[str, Any], outcome: str | None = None) -> LedgerResult:
    # An outcome word this service does not know is a broken contract: ValueError.
    return LedgerResult(
        outcome=LedgerOutcome(outcome or data["outcome"]),
        transaction=transaction_from_json(data["transaction"]) if data.get("transaction") else None,
        hold=hold_from_json(data["hold"]) if data.get("hold") else None,
        wallet=wallet_from_json(data["wallet"]) if data.get("wallet") else None,
    )
