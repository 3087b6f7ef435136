"""A receipt as fixed-width text, for printing or attaching to an email."""

from __future__ import annotations

from services.runtime.money import format_decimal
from services.transaction.domain.model import Receipt, TransactionType

WIDTH = 48

_TITLES = {
    TransactionType.TRANSFER: "Transfer",
    TransactionType.PAYMENT: "Payment",
    TransactionType.REFUND: "Refund",
    TransactionType.ADJUSTMENT: "Adjustment",
    TransactionType.FREEZE: "Wallet frozen",
    TransactionType.UNFREEZE: "Wallet unfrozen",
    TransactionType.TOP_UP: "Top-up",
    TransactionType.WITHDRAWAL: "Withdrawal",
}


def _line(label: str, value: str) -> str:
    return f"{label:<14}{value:>{WIDTH - 14}}"


def render(receipt: Receipt) -> str:
    t = receipt.transaction
    amount = f"{format_decimal(t.amount, t.currency)} {t.currency}"
    lines = [
        "=" * WIDTH,
        "WALLET MESH — RECEIPT".center(WIDTH),
        "=" * WIDTH,
        _line("Receipt no.", t.receipt_number),
        _line("Type", _TITLES[t.type]),
        _line("Status", t.status.value.replace("_", " ")),
        _line("Date (UTC)", t.created_at.strftime("%Y-%m-%d %H:%M:%S")),
        "-" * WIDTH,
        _line("From", receipt.payer.display_name),
        _line("To", receipt.payee.display_name),
        "-" * WIDTH,
        _line("Amount", amount),
        _line("Fee", f"{format_decimal(t.fee, t.currency)} {t.currency}"),
        _line("Total", f"{format_decimal(t.amount + t.fee, t.currency)} {t.currency}"),
    ]
    if t.refunded_amount:
        lines.append(
            _line("Refunded", f"{format_decimal(t.refunded_amount, t.currency)} {t.currency}")
        )
    if t.memo:
        lines += ["-" * WIDTH, f"Memo: {t.memo}"[: WIDTH * 3]]
    lines += [
        "-" * WIDTH,
        f"Transaction {t.id}",
        f"Issued {receipt.issued_at.strftime('%Y-%m-%d %H:%M:%S')} UTC",
        "=" * WIDTH,
    ]
    return "\n".join(lines) + "\n"
