"""How the edge treats the gateway's RPCs: only the webhook receiver is routed,
and it is public (the provider's signature authenticates it) and never retried
by the edge (the provider redelivers)."""

from __future__ import annotations

from wallet.gateway.v1 import gateway_service_pb2

_WEBHOOKS = gateway_service_pb2.DESCRIPTOR.services_by_name["WebhookService"]
_GATEWAY = gateway_service_pb2.DESCRIPTOR.services_by_name["PaymentGatewayService"]

WEBHOOK_SERVICE_NAME: str = _WEBHOOKS.full_name
# Internal: called by the transaction service with the service credential; not routed.
GATEWAY_SERVICE_NAME: str = _GATEWAY.full_name

PUBLIC_METHODS: tuple[str, ...] = (f"/{WEBHOOK_SERVICE_NAME}/ReceiveWebhook",)
