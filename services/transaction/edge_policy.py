"""How the edge treats the transaction service's RPCs (read by the service's
wiring and by whatever renders the Envoy config)."""

from __future__ import annotations

from wallet.transaction.v1 import funding_service_pb2, transaction_service_pb2

_SERVICE = transaction_service_pb2.DESCRIPTOR.services_by_name["TransactionService"]
SERVICE_NAME: str = _SERVICE.full_name
# Internal: the payment gateway's notices, with the service credential; not routed.
FUNDING_SERVICE_NAME: str = funding_service_pb2.DESCRIPTOR.services_by_name[
    "FundingService"
].full_name

# Every call needs a token.
PUBLIC_METHODS: tuple[str, ...] = ()
# Reads are safe to retry; so is every call that moves money, because each
# carries an idempotency key: a retry of a committed call replays its result,
# a retry of one still running is refused (ABORTED), never executed twice.
IDEMPOTENT_METHODS: tuple[str, ...] = tuple(
    f"/{SERVICE_NAME}/{method.name}" for method in _SERVICE.methods
)
# Calls that move money: the stricter rate-limit class, which fails closed.
MONEY_METHODS: tuple[str, ...] = tuple(
    f"/{SERVICE_NAME}/{method}"
    for method in (
        "CreateTransfer",
        "BatchCreateTransfers",
        "CreateHold",
        "CaptureHold",
        "VoidHold",
        "RefundTransaction",
        "AdjustWallet",
        "TopUpWallet",
        "WithdrawFromWallet",
    )
)
