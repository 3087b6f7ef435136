"""The gateway's metrics: provider calls by outcome, circuit-breaker state,
webhooks by result, payments still pending."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from services.gateway.domain.payments import ProviderCall
from services.gateway.domain.resilience import BreakerState

PROVIDER_CALLS = Counter(
    "gateway_provider_calls_total",
    "Calls to payment providers by provider, operation (charge, payout, refund, retrieve)"
    " and outcome (ok, declined, unavailable, timeout, rejected, circuit_open).",
    ["provider", "operation", "outcome"],
)
BREAKER_STATE = Gauge(
    "gateway_circuit_breaker_state",
    "Circuit breaker of each provider in this instance: 0 closed, 1 open, 2 half-open.",
    ["provider"],
)
BREAKER_TRANSITIONS = Counter(
    "gateway_circuit_breaker_transitions_total",
    "Circuit breaker state changes by provider and new state.",
    ["provider", "state"],
)
WEBHOOKS = Counter(
    "gateway_webhooks_total",
    "Webhook deliveries by provider and result (applied, ignored, refused).",
    ["provider", "result"],
)
PAYMENTS_PENDING = Gauge(
    "gateway_payments_pending",
    "Payments the gateway still waits on a provider for (whole database).",
)


def observe_call(call: ProviderCall) -> None:
    PROVIDER_CALLS.labels(call.provider, call.operation, call.outcome).inc()


def breaker_changed(provider: str, state: BreakerState) -> None:
    BREAKER_TRANSITIONS.labels(provider, state.name.lower()).inc()
