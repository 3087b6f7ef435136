"""gRPC handlers of wallet.gateway.v1: protobuf in, domain call, protobuf out.
Errors are mapped by the runtime's ServiceBoundary."""

from __future__ import annotations

from services.gateway import metrics
from services.gateway.domain.model import Payment
from services.gateway.domain.payments import Gateway
from services.gateway.domain.providers import PaymentKind, PaymentStatus
from services.runtime.errors import DomainError, InvalidArgument
from services.runtime.interceptors import Context
from services.runtime.protos import timestamp
from wallet.gateway.v1 import gateway_service_pb2 as pb
from wallet.gateway.v1 import gateway_service_pb2_grpc
from wallet.type.v1 import money_pb2

_KINDS = {
    PaymentKind.CHARGE: pb.PAYMENT_KIND_CHARGE,
    PaymentKind.PAYOUT: pb.PAYMENT_KIND_PAYOUT,
    PaymentKind.REFUND: pb.PAYMENT_KIND_REFUND,
}
_STATUSES = {
    PaymentStatus.PENDING: pb.PAYMENT_STATUS_PENDING,
    PaymentStatus.SUCCEEDED: pb.PAYMENT_STATUS_SUCCEEDED,
    PaymentStatus.FAILED: pb.PAYMENT_STATUS_FAILED,
}


def payment_to_proto(payment: Payment) -> pb.Payment:
    return pb.Payment(
        payment_id=payment.id,
        kind=_KINDS[payment.kind],
        status=_STATUSES[payment.status],
        provider=payment.provider,
        amount=money_pb2.Money(currency=payment.currency, amount=payment.amount),
        provider_reference=payment.reference,
        failure_code=payment.failure_code,
        failure_message=payment.failure_message,
        charge_payment_id=payment.charge_payment_id or "",
        create_time=timestamp(payment.created_at),
        update_time=timestamp(payment.updated_at),
    )


class PaymentGatewayApi(gateway_service_pb2_grpc.PaymentGatewayServiceServicer):
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def CreateCharge(
        self, request: pb.CreateChargeRequest, context: Context
    ) -> pb.CreateChargeResponse:
        payment = await self._gateway.charge(
            request.payment_id,
            request.provider,
            request.amount.amount,
            request.amount.currency,
            request.payment_method,
            request.description,
        )
        return pb.CreateChargeResponse(payment=payment_to_proto(payment))

    async def CreatePayout(
        self, request: pb.CreatePayoutRequest, context: Context
    ) -> pb.CreatePayoutResponse:
        payment = await self._gateway.payout(
            request.payment_id,
            request.provider,
            request.amount.amount,
            request.amount.currency,
            request.destination,
            request.description,
        )
        return pb.CreatePayoutResponse(payment=payment_to_proto(payment))

    async def RefundCharge(
        self, request: pb.RefundChargeRequest, context: Context
    ) -> pb.RefundChargeResponse:
        amount = request.amount.amount if request.HasField("amount") else None
        payment = await self._gateway.refund(
            request.payment_id, request.charge_payment_id, amount, request.amount.currency
        )
        return pb.RefundChargeResponse(payment=payment_to_proto(payment))

    async def GetPayment(
        self, request: pb.GetPaymentRequest, context: Context
    ) -> pb.GetPaymentResponse:
        payment = await self._gateway.payment(request.payment_id)
        return pb.GetPaymentResponse(payment=payment_to_proto(payment))


class WebhookApi(gateway_service_pb2_grpc.WebhookServiceServicer):
    def __init__(self, gateway: Gateway, providers: frozenset[str]) -> None:
        self._gateway = gateway
        self._providers = providers  # metric labels: never what a stranger typed

    async def ReceiveWebhook(
        self, request: pb.ReceiveWebhookRequest, context: Context
    ) -> pb.ReceiveWebhookResponse:
        # The transcoder hands the provider's headers over as metadata (lower case).
        headers = {
            key: value
            for key, value in (context.invocation_metadata() or ())
            if isinstance(value, str)
        }
        label = request.provider if request.provider in self._providers else "unknown"
        try:
            if not request.provider:
                # An empty message (a probe, a broken client): say which field is missing.
                raise InvalidArgument.single(
                    "provider", f"is required: one of {', '.join(sorted(self._providers))}"
                )
            applied = await self._gateway.receive_webhook(
                request.provider, request.body.data, headers
            )
        except DomainError:
            metrics.WEBHOOKS.labels(label, "refused").inc()
            raise
        metrics.WEBHOOKS.labels(label, "applied" if applied else "ignored").inc()
        return pb.ReceiveWebhookResponse(applied=applied)
