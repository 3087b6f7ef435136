"""The payment-gateway service, called over gRPC with the mesh's service
credential, client-side round robin over its instances and a deadline on every
call. Its calls are idempotent on the payment id, so gRPC may retry them on
another instance when one is down."""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.runtime.auth import ServiceCredential
from services.runtime.channels import round_robin_channel
from services.runtime.money import Money
from services.transaction.domain.ports import (
    GatewayPayment,
    GatewayRejected,
    GatewayUnavailable,
    PaymentOutcome,
)
from wallet.gateway.v1 import gateway_service_pb2 as gateway_pb
from wallet.gateway.v1 import gateway_service_pb2_grpc
from wallet.type.v1 import money_pb2

_SERVICE = "wallet.gateway.v1.PaymentGatewayService"
_STATUSES = {
    gateway_pb.PAYMENT_STATUS_PENDING: PaymentOutcome.PENDING,
    gateway_pb.PAYMENT_STATUS_SUCCEEDED: PaymentOutcome.SUCCEEDED,
    gateway_pb.PAYMENT_STATUS_FAILED: PaymentOutcome.FAILED,
}


def gateway_service_channel(target: str) -> grpc.aio.Channel:
    return round_robin_channel(
        target, [(_SERVICE, m) for m in ("CreateCharge", "CreatePayout", "GetPayment")]
    )


def _payment(message: gateway_pb.Payment) -> GatewayPayment:
    return GatewayPayment(
        payment_id=message.payment_id,
        status=_STATUSES.get(message.status, PaymentOutcome.PENDING),
        failure_code=message.failure_code,
        failure_message=message.failure_message,
    )


def _field_violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """The BadRequest field violations of an INVALID_ARGUMENT, as (field, why)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    found: list[tuple[str, str]] = []
    for detail in status.details if status is not None else ():
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            found += [(v.field, v.description) for v in bad_request.field_violations]
    return found


class GrpcPaymentGateway:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        credential: ServiceCredential,
        *,
        timeout_seconds: float,
    ) -> None:
        self._stub = gateway_service_pb2_grpc.PaymentGatewayServiceStub(channel)
        self._credential = credential
        self._timeout = timeout_seconds

    async def charge(
        self, payment_id: str, provider: str, money: Money, payment_method: str
    ) -> GatewayPayment:
        request = gateway_pb.CreateChargeRequest(
            payment_id=payment_id,
            provider=provider,
            amount=money_pb2.Money(currency=money.currency, amount=money.amount),
            payment_method=payment_method,
            description="Wallet top-up",
        )
        return await self._create(self._stub.CreateCharge, request)

    async def payout(
        self, payment_id: str, provider: str, money: Money, destination: str
    ) -> GatewayPayment:
        request = gateway_pb.CreatePayoutRequest(
            payment_id=payment_id,
            provider=provider,
            amount=money_pb2.Money(currency=money.currency, amount=money.amount),
            destination=destination,
            description="Wallet withdrawal",
        )
        return await self._create(self._stub.CreatePayout, request)

    async def _create(
        self, method: grpc.aio.UnaryUnaryMultiCallable[Any, Any], request: Any
    ) -> GatewayPayment:
        try:
            response = await method(
                request, timeout=self._timeout, metadata=self._credential.metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise self._unavailable(error) from error
        return _payment(response.payment)

    async def payment(self, payment_id: str) -> GatewayPayment | None:
        try:
            response = await self._stub.GetPayment(
                gateway_pb.GetPaymentRequest(payment_id=payment_id),
                timeout=min(self._timeout, 5.0),
                metadata=self._credential.metadata(),
            )
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.NOT_FOUND:
                return None
            raise self._unavailable(error) from error
        return _payment(response.payment)

    @staticmethod
    def _unavailable(error: grpc.aio.AioRpcError) -> GatewayUnavailable | GatewayRejected:
        if error.code() is grpc.StatusCode.INVALID_ARGUMENT:
            # Checked before the gateway writes anything: nothing was sent anywhere.
            return GatewayRejected(str(error.details()), _field_violations(error))
        # Anything else (down, deadline, provider unavailable, a refusal that should
        # not happen): the payment may exist, so it stays pending and is asked again.
        return GatewayUnavailable(f"payment gateway: {error.code().name}: {error.details()}")
