"""Wiring of the payment-gateway service: settings → database pool, Redis,
providers (each with its circuit breaker), ledger channel → domain → gRPC app."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from services.gateway import metrics
from services.gateway.adapters.ledger_notifier import (
    GrpcLedgerNotifier,
    transaction_service_channel,
)
from services.gateway.adapters.payment_store import SqlPaymentStore
from services.gateway.adapters.sandbox import SandboxProvider
from services.gateway.api import PaymentGatewayApi, WebhookApi
from services.gateway.domain.payments import Gateway
from services.gateway.domain.providers import PaymentProvider
from services.gateway.domain.resilience import CircuitBreaker, RetryPolicy
from services.gateway.edge_policy import (
    GATEWAY_SERVICE_NAME,
    PUBLIC_METHODS,
    WEBHOOK_SERVICE_NAME,
)
from services.runtime import db
from services.runtime.auth import ServiceCredential
from services.runtime.cache import create_redis
from services.runtime.config import ConfigError, RuntimeSettings, env, env_int, env_optional
from services.runtime.metrics import watch_driver_pool
from services.runtime.server import GrpcApp, service_interceptors
from wallet.gateway.v1 import gateway_service_pb2_grpc

ENV_PREFIX = "GATEWAY_"
MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StripeSettings:
    api_key: str
    webhook_secret: str
    api_base: str


@dataclass(frozen=True)
class PayPalSettings:
    client_id: str
    client_secret: str
    webhook_id: str
    api_base: str


@dataclass(frozen=True)
class GatewaySettings:
    runtime: RuntimeSettings
    transaction_service_target: str
    default_provider: str
    fallback_provider: str | None
    call_timeout: float
    retry: RetryPolicy
    breaker_failures: int
    breaker_open_seconds: float
    sandbox_webhook_url: str | None
    sandbox_webhook_secret: str
    sandbox_webhook_delay: float
    sandbox_latency: float
    sandbox_failure_rate: float
    stripe: StripeSettings | None
    paypal: PayPalSettings | None

    @classmethod
    def from_env(cls) -> GatewaySettings:
        p = ENV_PREFIX
        stripe_key = env_optional(p, "STRIPE_API_KEY")
        paypal_id = env_optional(p, "PAYPAL_CLIENT_ID")
        try:
            failure_rate = float(env(p, "SANDBOX_FAILURE_RATE", "0"))
        except ValueError as error:
            raise ConfigError(f"{p}SANDBOX_FAILURE_RATE must be a number") from error
        return cls(
            runtime=RuntimeSettings.from_env("gateway", p),
            transaction_service_target=env(p, "TRANSACTION_SERVICE_TARGET"),
            default_provider=env(p, "DEFAULT_PROVIDER", "sandbox"),
            fallback_provider=env_optional(p, "FALLBACK_PROVIDER"),
            call_timeout=env_int(p, "CALL_TIMEOUT_MS", 3000) / 1000,
            retry=RetryPolicy(
                attempts=env_int(p, "RETRY_ATTEMPTS", 3),
                base_delay=env_int(p, "RETRY_BASE_DELAY_MS", 100) / 1000,
                max_delay=env_int(p, "RETRY_MAX_DELAY_MS", 2000) / 1000,
            ),
            breaker_failures=env_int(p, "BREAKER_FAILURES", 5),
            breaker_open_seconds=env_int(p, "BREAKER_OPEN_MS", 10_000) / 1000,
            sandbox_webhook_url=env_optional(p, "SANDBOX_WEBHOOK_URL"),
            sandbox_webhook_secret=env(p, "SANDBOX_WEBHOOK_SECRET", "whsec_sandbox"),
            sandbox_webhook_delay=env_int(p, "SANDBOX_WEBHOOK_DELAY_MS", 2000) / 1000,
            sandbox_latency=env_int(p, "SANDBOX_LATENCY_MS", 0) / 1000,
            sandbox_failure_rate=failure_rate,
            stripe=StripeSettings(
                api_key=stripe_key,
                webhook_secret=env(p, "STRIPE_WEBHOOK_SECRET"),
                api_base=env(p, "STRIPE_API_BASE", "https://api.stripe.com"),
            )
            if stripe_key
            else None,
            paypal=PayPalSettings(
                client_id=paypal_id,
                client_secret=env(p, "PAYPAL_CLIENT_SECRET"),
                webhook_id=env(p, "PAYPAL_WEBHOOK_ID"),
                api_base=env(p, "PAYPAL_API_BASE", "https://api-m.paypal.com"),
            )
            if paypal_id
            else None,
        )


def _external_providers(settings: GatewaySettings) -> list[PaymentProvider]:
    """Stripe and PayPal, each when its credentials are configured."""
    providers: list[PaymentProvider] = []
    if settings.stripe is not None:
        from services.gateway.adapters.stripe_provider import StripeProvider

        providers.append(
            StripeProvider(
                api_key=settings.stripe.api_key,
                webhook_secret=settings.stripe.webhook_secret,
                api_base=settings.stripe.api_base,
                timeout_seconds=settings.call_timeout,
            )
        )
    if settings.paypal is not None:
        from services.gateway.adapters.paypal_provider import PayPalProvider

        providers.append(
            PayPalProvider(
                client_id=settings.paypal.client_id,
                client_secret=settings.paypal.client_secret,
                webhook_id=settings.paypal.webhook_id,
                api_base=settings.paypal.api_base,
                timeout_seconds=settings.call_timeout,
            )
        )
    return providers


def _state_of(breaker: CircuitBreaker) -> float:
    return float(breaker.state)


def build_app(settings: GatewaySettings) -> tuple[GrpcApp, Gateway]:
    runtime = settings.runtime
    pool = db.create_driver_pool(runtime.database_url, size=runtime.database_pool_size)
    watch_driver_pool(runtime.service, pool)
    redis = create_redis(runtime.redis_url)
    credential = ServiceCredential.from_env()
    ledger_channel = transaction_service_channel(settings.transaction_service_target)
    sandbox = SandboxProvider(
        pool,
        redis,
        webhook_url=settings.sandbox_webhook_url,
        webhook_secret=settings.sandbox_webhook_secret,
        webhook_delay=settings.sandbox_webhook_delay,
        latency=settings.sandbox_latency,
        failure_rate=settings.sandbox_failure_rate,
    )
    providers: dict[str, PaymentProvider] = {sandbox.name: sandbox}
    for provider in _external_providers(settings):
        providers[provider.name] = provider
    breakers = {
        name: CircuitBreaker(
            failure_threshold=settings.breaker_failures,
            open_seconds=settings.breaker_open_seconds,
            clock=time.monotonic,
            on_change=functools.partial(metrics.breaker_changed, name),
        )
        for name in providers
    }
    for name, breaker in breakers.items():
        # Read at each scrape: an open breaker turns half-open by time alone.
        metrics.BREAKER_STATE.labels(name).set_function(functools.partial(_state_of, breaker))
    store = SqlPaymentStore(pool)
    gateway = Gateway(
        store,
        providers,
        breakers,
        GrpcLedgerNotifier(ledger_channel, credential),
        default_provider=settings.default_provider,
        fallback_provider=settings.fallback_provider,
        retry=settings.retry,
        call_timeout=settings.call_timeout,
        observe=metrics.observe_call,
    )

    async def watch_pending() -> None:
        while True:
            try:
                metrics.PAYMENTS_PENDING.set(await store.pending_count())
            except Exception as error:
                log.warning("could not count pending payments", extra={"error": repr(error)})
            await asyncio.sleep(5)

    async def close() -> None:
        for provider in providers.values():
            closer = getattr(provider, "aclose", None)  # the providers' HTTP clients
            if closer is not None:
                await closer()
        await ledger_channel.close(grace=None)
        await redis.aclose()
        await pool.close()

    payments_api = PaymentGatewayApi(gateway)
    webhook_api = WebhookApi(gateway, frozenset(providers))

    def register(server: grpc.aio.Server) -> None:
        gateway_service_pb2_grpc.add_PaymentGatewayServiceServicer_to_server(payments_api, server)
        gateway_service_pb2_grpc.add_WebhookServiceServicer_to_server(webhook_api, server)

    app = GrpcApp(
        name="gateway",
        # The first is the one health checks ask about: the edge routes webhooks.
        service_names=(WEBHOOK_SERVICE_NAME, GATEWAY_SERVICE_NAME),
        register=register,
        interceptors=service_interceptors(
            None,
            WEBHOOK_SERVICE_NAME,
            PUBLIC_METHODS,
            internal_services=(GATEWAY_SERVICE_NAME,),
            credential=credential,
        ),
        readiness_check=lambda: db.ping_pool(pool),
        on_startup=[lambda: pool.open(wait=False)],
        on_shutdown=[close],
        background=[watch_pending],
    )
    return app, gateway
