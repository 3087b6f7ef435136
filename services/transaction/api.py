"""gRPC handlers of wallet.transaction.v1.TransactionService: protobuf in,
domain call, protobuf out. Errors are mapped by the runtime's ServiceBoundary."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from services.runtime.auth import Caller, current_caller
from services.runtime.errors import InvalidArgument
from services.runtime.interceptors import Context, status_for
from services.runtime.money import format_decimal
from services.runtime.pagination import PageTokens
from services.runtime.protos import timestamp
from services.transaction import metrics
from services.transaction.domain import receipts
from services.transaction.domain.commands import (
    AdjustmentRequest,
    AmountInput,
    CaptureRequest,
    HoldRequest,
    RefundRequest,
    StatusChange,
    TopUpRequest,
    TransferRequest,
    WithdrawalRequest,
)
from services.transaction.domain.funding import Funding
from services.transaction.domain.ledger import Ledger, request_hash
from services.transaction.domain.model import (
    HistoryCursor,
    HistoryFilter,
    Hold,
    HoldStatus,
    IdempotencyKey,
    Party,
    Posted,
    Transaction,
    TransactionStatus,
    TransactionType,
    UserProfile,
    Wallet,
    WalletStatus,
)
from wallet.transaction.v1 import funding_service_pb2 as funding_pb
from wallet.transaction.v1 import funding_service_pb2_grpc, transaction_service_pb2_grpc
from wallet.transaction.v1 import transaction_service_pb2 as pb
from wallet.type.v1 import money_pb2
from wallet.user.v1 import user_service_pb2 as user_pb

IDEMPOTENCY_HEADER = "idempotency-key"

_WALLET_STATUS = {
    WalletStatus.ACTIVE: pb.WALLET_STATUS_ACTIVE,
    WalletStatus.FROZEN: pb.WALLET_STATUS_FROZEN,
    WalletStatus.CLOSED: pb.WALLET_STATUS_CLOSED,
}
_TYPES = {
    TransactionType.TRANSFER: pb.TRANSACTION_TYPE_TRANSFER,
    TransactionType.PAYMENT: pb.TRANSACTION_TYPE_PAYMENT,
    TransactionType.REFUND: pb.TRANSACTION_TYPE_REFUND,
    TransactionType.ADJUSTMENT: pb.TRANSACTION_TYPE_ADJUSTMENT,
    TransactionType.FREEZE: pb.TRANSACTION_TYPE_FREEZE,
    TransactionType.UNFREEZE: pb.TRANSACTION_TYPE_UNFREEZE,
    TransactionType.TOP_UP: pb.TRANSACTION_TYPE_TOP_UP,
    TransactionType.WITHDRAWAL: pb.TRANSACTION_TYPE_WITHDRAWAL,
}
_TYPES_BY_PROTO = {value: key for key, value in _TYPES.items()}
_STATUSES = {
    TransactionStatus.POSTED: pb.TRANSACTION_STATUS_POSTED,
    TransactionStatus.PARTIALLY_REFUNDED: pb.TRANSACTION_STATUS_PARTIALLY_REFUNDED,
    TransactionStatus.REFUNDED: pb.TRANSACTION_STATUS_REFUNDED,
    TransactionStatus.PENDING: pb.TRANSACTION_STATUS_PENDING,
    TransactionStatus.FAILED: pb.TRANSACTION_STATUS_FAILED,
}
_STATUSES_BY_PROTO = {value: key for key, value in _STATUSES.items()}
_HOLD_STATUS = {
    HoldStatus.ACTIVE: pb.HOLD_STATUS_ACTIVE,
    HoldStatus.CAPTURED: pb.HOLD_STATUS_CAPTURED,
    HoldStatus.VOIDED: pb.HOLD_STATUS_VOIDED,
    HoldStatus.EXPIRED: pb.HOLD_STATUS_EXPIRED,
}


def money(amount: int, currency: str) -> money_pb2.Money:
    return money_pb2.Money(
        currency=currency, amount=amount, decimal=format_decimal(amount, currency)
    )


def wallet_message(wallet: Wallet) -> pb.Wallet:
    return pb.Wallet(
        wallet_id=wallet.id,
        owner_user_id=wallet.owner_id,
        currency=wallet.currency,
        balance=money(wallet.balance, wallet.currency),
        available_balance=money(wallet.available, wallet.currency),
        status=_WALLET_STATUS[wallet.status],
        create_time=timestamp(wallet.created_at),
    )


def transaction_message(transaction: Transaction) -> pb.Transaction:
    currency = transaction.currency
    return pb.Transaction(
        transaction_id=transaction.id,
        type=_TYPES[transaction.type],
        status=_STATUSES[transaction.status],
        amount=money(transaction.amount, currency),
        source_wallet_id=transaction.source_wallet_id or "",
        destination_wallet_id=transaction.destination_wallet_id or "",
        source_user_id=transaction.source_owner_id or "",
        destination_user_id=transaction.destination_owner_id or "",
        fee=money(transaction.fee, currency),
        memo=transaction.memo,
        metadata=transaction.metadata,
        receipt_number=transaction.receipt_number,
        refunded_amount=money(transaction.refunded_amount, currency),
        refund_of_transaction_id=transaction.refund_of or "",
        hold_id=transaction.hold_id or "",
        create_time=timestamp(transaction.created_at),
        payment_provider=transaction.payment_provider,
        failure_code=transaction.failure_code,
        failure_message=transaction.failure_message,
    )


def hold_message(hold: Hold) -> pb.Hold:
    return pb.Hold(
        hold_id=hold.id,
        wallet_id=hold.wallet_id,
        merchant_wallet_id=hold.merchant_wallet_id,
        amount=money(hold.amount, hold.currency),
        captured_amount=money(hold.captured_amount, hold.currency),
        status=_HOLD_STATUS[hold.status],
        expire_time=timestamp(hold.expires_at),
        memo=hold.memo,
        capture_transaction_id=hold.capture_transaction_id or "",
        create_time=timestamp(hold.created_at),
    )


def amount_input(message: money_pb2.Money) -> AmountInput:
    return AmountInput(message.currency.strip().upper(), message.amount, message.decimal.strip())


def required_amount(request: Any) -> AmountInput:
    """The request's `amount`, which it must have."""
    if not request.HasField("amount"):
        raise InvalidArgument.single("amount", "is required")
    return amount_input(request.amount)


def idempotency_key(
    caller: Caller, request: Any, context: Context, operation: str
) -> IdempotencyKey:
    """The request's idempotency key (field or REST header) and a hash of the
    request without it: the same key may only come back with the same request."""
    header = next(
        (str(v) for k, v in context.invocation_metadata() or () if k == IDEMPOTENCY_HEADER), ""
    )
    if request.request_id and header and request.request_id != header:
        raise InvalidArgument.single(
            "request_id", "differs from the Idempotency-Key header; send one of them"
        )
    return keyed(caller, request, request.request_id or header, operation)


def keyed(caller: Caller, request: Any, key: str, operation: str) -> IdempotencyKey:
    """`key` with a hash of the request without its request_id."""
    canonical = type(request)()
    canonical.CopyFrom(request)
    canonical.ClearField("request_id")
    return IdempotencyKey(
        key,
        # The operation is part of the hash: a key reused for another call is refused.
        request_hash(operation, canonical.SerializeToString(deterministic=True)),
    )


def _time_filter(message: Message, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, field)
    return stamp.ToDatetime(tzinfo=UTC)


def user_message(profile: UserProfile) -> user_pb.User:
    user = user_pb.User(
        user_id=profile.user_id,
        email=profile.email,
        display_name=profile.display_name,
        phone=profile.phone,
        roles=[user_pb.Role.Value(role) for role in profile.roles],
    )
    if profile.created_at is not None:
        user.create_time.FromDatetime(profile.created_at)
    if profile.updated_at is not None:
        user.update_time.FromDatetime(profile.updated_at)
    return user


class TransactionApi(transaction_service_pb2_grpc.TransactionServiceServicer):
    def __init__(
        self,
        ledger: Ledger,
        funding: Funding,
        page_tokens: PageTokens,
    ) -> None:
        self._ledger = ledger
        self._funding = funding
        self._page_tokens = page_tokens

    async def CreateWallet(
        self, request: pb.CreateWalletRequest, context: Context
    ) -> pb.CreateWalletResponse:
        caller = current_caller()
        key = idempotency_key(caller, request, context, "CreateWallet")
        wallet = await self._ledger.create_wallet(caller, key, request.currency)
        return pb.CreateWalletResponse(wallet=wallet_message(wallet))

    async def ListWallets(
        self, request: pb.ListWalletsRequest, context: Context
    ) -> pb.ListWalletsResponse:
        wallets = await self._ledger.wallets(current_caller())
        return pb.ListWalletsResponse(wallets=[wallet_message(w) for w in wallets])

    async def GetWallet(
        self, request: pb.GetWalletRequest, context: Context
    ) -> pb.GetWalletResponse:
        wallet = await self._ledger.wallet(current_caller(), request.wallet_id)
        return pb.GetWalletResponse(wallet=wallet_message(wallet))

    async def GetBalance(
        self, request: pb.GetBalanceRequest, context: Context
    ) -> pb.GetBalanceResponse:
        found = await self._ledger.balance_at(
            current_caller(), request.wallet_id, _time_filter(request, "at")
        )
        currency = found.wallet.currency
        return pb.GetBalanceResponse(
            wallet_id=found.wallet.id,
            at=timestamp(found.at),
            balance=money(found.balance, currency),
            held=money(found.held, currency),
            available_balance=money(found.available, currency),
        )

    async def CloseWallet(
        self, request: pb.CloseWalletRequest, context: Context
    ) -> pb.CloseWalletResponse:
        caller = current_caller()
        key = idempotency_key(caller, request, context, "CloseWallet")
        wallet = await self._ledger.close_wallet(caller, key, request.wallet_id)
        return pb.CloseWalletResponse(wallet=wallet_message(wallet))

    @metrics.counts_refusals(TransactionType.TRANSFER)
    async def CreateTransfer(
        self, request: pb.CreateTransferRequest, context: Context
    ) -> pb.CreateTransferResponse:
        caller = current_caller()
        key = idempotency_key(caller, request, context, "CreateTransfer")
        posted = await self._ledger.transfer(
            caller,
            TransferRequest(
                key,
                request.source_wallet_id,
                request.destination_wallet_id,
                required_amount(request),
                request.memo,
                dict(request.metadata),
                recipient_email=request.recipient_email,
            ),
        )
        metrics.record_posted(posted)
        return pb.CreateTransferResponse(transaction=transaction_message(posted.transaction))

    @metrics.counts_refusals(TransactionType.TRANSFER)
    async def BatchCreateTransfers(
        self, request: pb.BatchCreateTransfersRequest, context: Context
    ) -> pb.BatchCreateTransfersResponse:
        caller = current_caller()
        items = [
            TransferRequest(
                # Hashed as a CreateTransfer: the same transfer sent alone or in a batch
                # under the same key is the same request.
                keyed(caller, item, item.request_id, "CreateTransfer"),
                item.source_wallet_id,
                item.destination_wallet_id,
                amount_input(item.amount),
                item.memo,
                dict(item.metadata),
            )
            for item in request.requests
        ]
        for index, item in enumerate(request.requests):
            if item.recipient_email:
                raise InvalidArgument.single(
                    f"requests[{index}].recipient_email",
                    "is not taken in a batch: name the destination_wallet_id",
                )
        answers = await self._ledger.transfer_batch(caller, items)
        results = []
        for answer in answers:
            if isinstance(answer, Posted):
                metrics.record_posted(answer)
                results.append(
                    pb.TransferResult(transaction=transaction_message(answer.transaction))
                )
            else:
                metrics.record_refusal(TransactionType.TRANSFER, answer)
                results.append(pb.TransferResult(error=status_for(answer)))
        return pb.BatchCreateTransfersResponse(results=results)

    @metrics.counts_refusals(TransactionType.TOP_UP)
    async def TopUpWallet(
        self, request: pb.TopUpWalletRequest, context: Context
    ) -> pb.TopUpWalletResponse:
        caller = current_caller()
        key = idempotency_key(caller, request, context, "TopUpWallet")
        posted = await self._funding.top_up(
            caller,
            TopUpRequest(
                key,
                request.wallet_id,
                required_amount(request),
                request.payment_method,
                request.provider,
            ),
        )
        metrics.record_external(posted)
        return pb.TopUpWalletResponse(transaction=transaction_message(posted.transaction))

    @metrics.counts_refusals(TransactionType.WITHDRAWAL)
    async def WithdrawFromWallet(
        self, request: pb.WithdrawFromWalletRequest, context: Context
    ) -> pb.WithdrawFromWalletResponse:
        caller = current_caller()
        key = idempotency_key(caller, request, context, "WithdrawFromWallet")
        posted = await self._funding.withdraw(
            caller,
            WithdrawalRequest(
                key,
                request.wallet_id,
                required_amount(request),
                request.destination,
                request.provider,
            ),
        )
        metrics.record_external(posted)
        return pb.WithdrawFromWalletResponse(transaction=transaction_message(posted.transaction))

    async def CreateHold(
        self, request: pb.CreateHoldRequest, context: Context
    ) -> pb.CreateHoldResponse:
        caller = current_caller()
        key = idempotency_key(caller, request, context, "CreateHold")
        hold = await self._ledger.create_hold(
            caller,
            HoldRequest(
                key,
                request.wallet_id,
                request.merchant_wallet_id,
                required_amount(request),
                request.expires_in_seconds,
                request.memo,
            ),
        )
        return pb.CreateHoldResponse(hold=hold_message(hold))

    async def GetHold(self, request: pb.GetHoldRequest, context: Context) -> pb.GetHoldResponse:
        hold = await self._ledger.hold(current_caller(), request.hold_id)
        return pb.GetHoldResponse(hold=hold_message(hold))

    @metrics.counts_refusals(TransactionType.PAYMENT)
    async def CaptureHold(
        self, request: pb.CaptureHoldRequest, context: Context
    ) -> pb.CaptureHoldResponse:
        caller = current_caller()
        key = idempotency_key(caller, request, context, "CaptureHold")
        hold, posted = await self._ledger.capture_hold(
            caller, CaptureRequest(key, request.hold_id, amount_input(request.amount))
        )
        metrics.record_posted(posted)
        return pb.CaptureHoldResponse(
            hold=hold_message(hold), transaction=transaction_message(posted.transaction)
        )

    async def VoidHold(self, request: pb.VoidHoldRequest, context: Context) -> pb.VoidHoldResponse:
        caller = current_caller()
        key = idempotency_key(caller, request, context, "VoidHold")
        hold = await self._ledger.void_hold(caller, key, request.hold_id)
        return pb.VoidHoldResponse(hold=hold_message(hold))

    @metrics.counts_refusals(TransactionType.REFUND)
    async def RefundTransaction(
        self, request: pb.RefundTransactionRequest, context: Context
    ) -> pb.RefundTransactionResponse:
        caller = current_caller()
        key = idempotency_key(caller, request, context, "RefundTransaction")
        posted = await self._ledger.refund(
            caller,
            RefundRequest(
                key, request.transaction_id, amount_input(request.amount), request.reason
            ),
        )
        metrics.record_posted(posted)
        return pb.RefundTransactionResponse(transaction=transaction_message(posted.transaction))

    async def ListTransactions(
        self, request: pb.ListTransactionsRequest, context: Context
    ) -> pb.ListTransactionsResponse:
        filters = HistoryFilter(
            wallet_id=request.wallet_id or None,
            type=_TYPES_BY_PROTO.get(request.type),
            status=_STATUSES_BY_PROTO.get(request.status),
            start=_time_filter(request, "start_time"),
            end=_time_filter(request, "end_time"),
        )
        caller = current_caller()
        after = self._page_tokens.decode(request.page_token, request, caller.user_id)

        def render(page: list[Transaction], cursor: HistoryCursor | None) -> bytes:
            last = (cursor.created_at, cursor.transaction_id) if cursor else None
            return pb.ListTransactionsResponse(
                transactions=[transaction_message(t) for t in page],
                next_page_token=self._page_tokens.encode(last, request, caller.user_id),
            ).SerializeToString()

        # A cached page is answered as rendered (parsing it back is C, building it is not);
        # its next page token depends on the request's own filters as sent, hence the variant.
        rendered = await self._ledger.history_page(
            caller,
            filters,
            request.page_size,
            HistoryCursor(*after) if after else None,
            render,
            variant=self._page_tokens.query_hash(request, caller.user_id),
        )
        return pb.ListTransactionsResponse.FromString(rendered)

    async def GetTransaction(
        self, request: pb.GetTransactionRequest, context: Context
    ) -> pb.GetTransactionResponse:
        transaction = await self._ledger.transaction(current_caller(), request.transaction_id)
        return pb.GetTransactionResponse(transaction=transaction_message(transaction))

    async def GetReceipt(
        self, request: pb.GetReceiptRequest, context: Context
    ) -> pb.GetReceiptResponse:
        receipt = await self._ledger.receipt(current_caller(), request.transaction_id)
        transaction = receipt.transaction
        currency = transaction.currency

        def party(side: Party) -> pb.ReceiptParty:
            return pb.ReceiptParty(
                user_id=side.user_id or "",
                display_name=side.display_name,
                wallet_id=side.wallet_id or "",
            )

        return pb.GetReceiptResponse(
            receipt=pb.Receipt(
                receipt_number=transaction.receipt_number,
                transaction_id=transaction.id,
                type=_TYPES[transaction.type],
                status=_STATUSES[transaction.status],
                payer=party(receipt.payer),
                payee=party(receipt.payee),
                amount=money(transaction.amount, currency),
                fee=money(transaction.fee, currency),
                total=money(transaction.amount + transaction.fee, currency),
                refunded_amount=money(transaction.refunded_amount, currency),
                memo=transaction.memo,
                create_time=timestamp(transaction.created_at),
                issue_time=timestamp(receipt.issued_at),
            ),
            text=receipts.render(receipt),
        )

    async def GetAccountSummary(
        self, request: pb.GetAccountSummaryRequest, context: Context
    ) -> pb.GetAccountSummaryResponse:
        caller = current_caller()
        profile, wallets, recent = await self._ledger.summary(caller)
        return pb.GetAccountSummaryResponse(
            user=user_message(profile),
            wallets=[wallet_message(w) for w in wallets],
            recent_transactions=[transaction_message(t) for t in recent],
        )

    @metrics.counts_refusals(TransactionType.ADJUSTMENT)
    async def AdjustWallet(
        self, request: pb.AdjustWalletRequest, context: Context
    ) -> pb.AdjustWalletResponse:
        caller = current_caller()
        key = idempotency_key(caller, request, context, "AdjustWallet")
        posted, wallet = await self._ledger.adjust(
            caller,
            AdjustmentRequest(key, request.wallet_id, required_amount(request), request.reason),
        )
        metrics.record_posted(posted)
        return pb.AdjustWalletResponse(
            transaction=transaction_message(posted.transaction), wallet=wallet_message(wallet)
        )

    @metrics.counts_refusals(TransactionType.FREEZE)
    async def FreezeWallet(
        self, request: pb.FreezeWalletRequest, context: Context
    ) -> pb.FreezeWalletResponse:
        caller = current_caller()
        key = idempotency_key(caller, request, context, "FreezeWallet")
        posted, wallet = await self._ledger.set_status(
            caller, StatusChange(key, request.wallet_id, WalletStatus.FROZEN, request.reason)
        )
        metrics.record_posted(posted)
        return pb.FreezeWalletResponse(
            wallet=wallet_message(wallet), transaction=transaction_message(posted.transaction)
        )

    @metrics.counts_refusals(TransactionType.UNFREEZE)
    async def UnfreezeWallet(
        self, request: pb.UnfreezeWalletRequest, context: Context
    ) -> pb.UnfreezeWalletResponse:
        caller = current_caller()
        key = idempotency_key(caller, request, context, "UnfreezeWallet")
        posted, wallet = await self._ledger.set_status(
            caller, StatusChange(key, request.wallet_id, WalletStatus.ACTIVE, request.reason)
        )
        metrics.record_posted(posted)
        return pb.UnfreezeWalletResponse(
            wallet=wallet_message(wallet), transaction=transaction_message(posted.transaction)
        )


class FundingApi(funding_service_pb2_grpc.FundingServiceServicer):
    """The gateway's notices (internal: the boundary checks the service credential)."""

    def __init__(self, funding: Funding) -> None:
        self._funding = funding

    async def NotifyPaymentUpdated(
        self, request: funding_pb.NotifyPaymentUpdatedRequest, context: Context
    ) -> funding_pb.NotifyPaymentUpdatedResponse:
        settled = await self._funding.payment_updated(request.payment_id)
        return funding_pb.NotifyPaymentUpdatedResponse(settled=settled)
