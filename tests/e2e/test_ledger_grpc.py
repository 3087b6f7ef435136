"""A person's money over gRPC through the edge, with the generated stubs."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import timestamp_pb2

from services.localmesh.mesh import Mesh
from tests.e2e.people import Bank
from wallet.transaction.v1 import transaction_service_pb2 as pb
from wallet.transaction.v1 import transaction_service_pb2_grpc
from wallet.type.v1 import money_pb2


def eur(amount: int) -> money_pb2.Money:
    return money_pb2.Money(currency="EUR", amount=amount)


async def test_wallets_transfer_hold_capture_refund_and_receipt_over_grpc(
    bank: Bank, mesh: Mesh
) -> None:
    ada, ada_wallet = bank.funded_person("grpcpayer", 5_000)
    shop, shop_wallet = bank.funded_person("grpcshop", 0)
    as_ada = (("authorization", f"Bearer {ada.access_token}"),)
    as_shop = (("authorization", f"Bearer {shop.access_token}"),)
    async with grpc.aio.insecure_channel(mesh.edge_grpc_target) as channel:
        ledger = transaction_service_pb2_grpc.TransactionServiceStub(channel)
        usd = await ledger.CreateWallet(
            pb.CreateWalletRequest(request_id=str(uuid.uuid4()), currency="USD"), metadata=as_ada
        )
        assert usd.wallet.balance.decimal == "0.00"

        paid = await ledger.CreateTransfer(
            pb.CreateTransferRequest(
                request_id=str(uuid.uuid4()),
                source_wallet_id=ada_wallet,
                recipient_email=shop.email,
                amount=eur(1_000),
                memo="books",
            ),
            metadata=as_ada,
        )
        assert paid.transaction.destination_wallet_id == shop_wallet

        hold = await ledger.CreateHold(
            pb.CreateHoldRequest(
                request_id=str(uuid.uuid4()),
                wallet_id=ada_wallet,
                merchant_wallet_id=shop_wallet,
                amount=eur(2_000),
            ),
            metadata=as_ada,
        )
        captured = await ledger.CaptureHold(
            pb.CaptureHoldRequest(request_id=str(uuid.uuid4()), hold_id=hold.hold.hold_id),
            metadata=as_shop,
        )
        assert captured.transaction.amount.amount == 2_000

        refund = await ledger.RefundTransaction(
            pb.RefundTransactionRequest(
                request_id=str(uuid.uuid4()),
                transaction_id=paid.transaction.transaction_id,
                amount=eur(250),
                reason="damaged cover",
            ),
            metadata=as_shop,
        )
        assert refund.transaction.type == pb.TRANSACTION_TYPE_REFUND

        wallet = await ledger.GetWallet(pb.GetWalletRequest(wallet_id=ada_wallet), metadata=as_ada)
        assert wallet.wallet.balance.amount == 5_000 - 1_000 - 2_000 + 250

        receipt = await ledger.GetReceipt(
            pb.GetReceiptRequest(transaction_id=refund.transaction.transaction_id),
            metadata=as_ada,
        )
        assert receipt.receipt.payer.display_name == "Grpcshop"
        assert receipt.receipt.payee.display_name == "Grpcpayer"
        assert "damaged cover" in receipt.text

        history = await ledger.ListTransactions(
            pb.ListTransactionsRequest(page_size=10), metadata=as_ada
        )
        assert [t.type for t in history.transactions][:3] == [
            pb.TRANSACTION_TYPE_REFUND,
            pb.TRANSACTION_TYPE_PAYMENT,
            pb.TRANSACTION_TYPE_TRANSFER,
        ]

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ledger.CreateTransfer(
                pb.CreateTransferRequest(
                    request_id=str(uuid.uuid4()),
                    source_wallet_id=ada_wallet,
                    destination_wallet_id=shop_wallet,
                    amount=eur(10**9),
                ),
                metadata=as_ada,
            )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_balance_at_an_instant_over_grpc(bank: Bank, mesh: Mesh) -> None:
    ada, ada_wallet = bank.funded_person("grpchistorian", 3_000)
    _, bob_wallet = bank.funded_person("grpcheir", 0)
    as_ada = (("authorization", f"Bearer {ada.access_token}"),)
    async with grpc.aio.insecure_channel(mesh.edge_grpc_target) as channel:
        ledger = transaction_service_pb2_grpc.TransactionServiceStub(channel)
        before = timestamp_pb2.Timestamp()
        before.GetCurrentTime()
        await ledger.CreateTransfer(
            pb.CreateTransferRequest(
                request_id=str(uuid.uuid4()),
                source_wallet_id=ada_wallet,
                destination_wallet_id=bob_wallet,
                amount=eur(1_000),
            ),
            metadata=as_ada,
        )
        then = await ledger.GetBalance(
            pb.GetBalanceRequest(wallet_id=ada_wallet, at=before), metadata=as_ada
        )
        assert (then.balance.amount, then.available_balance.amount) == (3_000, 3_000)
        assert then.at == before
        now = await ledger.GetBalance(pb.GetBalanceRequest(wallet_id=ada_wallet), metadata=as_ada)
        assert now.balance.amount == 2_000
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ledger.GetBalance(pb.GetBalanceRequest(wallet_id=bob_wallet), metadata=as_ada)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
