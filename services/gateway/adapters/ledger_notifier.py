"""Tells the transaction service that a payment changed (after a webhook), over
its internal FundingService, with round robin over its instances and a deadline.
Best effort: if the notice is lost, the ledger's reconciler finds the payment."""

from __future__ import annotations

import logging

import grpc

from services.runtime.auth import ServiceCredential
from services.runtime.channels import round_robin_channel
from wallet.transaction.v1 import funding_service_pb2 as funding_pb
from wallet.transaction.v1 import funding_service_pb2_grpc

log = logging.getLogger(__name__)

NOTIFY_TIMEOUT_SECONDS = 5.0


def transaction_service_channel(target: str) -> grpc.aio.Channel:
    # The notice only makes the ledger ask: safe to send again on another instance.
    return round_robin_channel(
        target, [("wallet.transaction.v1.FundingService", "NotifyPaymentUpdated")]
    )


class GrpcLedgerNotifier:
    def __init__(self, channel: grpc.aio.Channel, credential: ServiceCredential) -> None:
        self._stub = funding_service_pb2_grpc.FundingServiceStub(channel)
        self._credential = credential

    async def payment_updated(self, payment_id: str) -> None:
        try:
            await self._stub.NotifyPaymentUpdated(
                funding_pb.NotifyPaymentUpdatedRequest(payment_id=payment_id),
                timeout=NOTIFY_TIMEOUT_SECONDS,
                metadata=self._credential.metadata(),
            )
        except grpc.aio.AioRpcError as error:
            log.warning(
                "could not notify the ledger; its reconciler will settle the payment",
                extra={"payment_id": payment_id, "code": error.code().name},
            )
