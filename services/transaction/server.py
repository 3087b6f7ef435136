"""Wiring of the transaction service: settings → engine, Redis, user-service
channel → domain → gRPC app."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc

from services.runtime import db, migrations
from services.runtime.auth import RevokedTokens, ServiceCredential, TokenVerifier
from services.runtime.cache import create_redis
from services.runtime.clock import SystemClock
from services.runtime.config import RuntimeSettings, env, env_int
from services.runtime.jwks import RemotePublicKeys
from services.runtime.metrics import watch_driver_pool
from services.runtime.pagination import PageTokens
from services.runtime.server import GrpcApp, service_interceptors
from services.transaction import metrics
from services.transaction.adapters.ledger_cache import RedisLedgerCache
from services.transaction.adapters.ledger_store import (
    SqlLedgerStore,
    claim_shards,
    held_shards,
)
from services.transaction.adapters.payment_gateway import (
    GrpcPaymentGateway,
    gateway_service_channel,
)
from services.transaction.adapters.saga import LegSettings
from services.transaction.adapters.shards import ShardConfig, ShardMap
from services.transaction.adapters.user_directory import GrpcUserDirectory, user_service_channel
from services.transaction.api import FundingApi, TransactionApi
from services.transaction.domain.funding import Funding, ReconcilerSettings
from services.transaction.domain.ledger import Ledger
from services.transaction.edge_policy import FUNDING_SERVICE_NAME, PUBLIC_METHODS, SERVICE_NAME
from wallet.transaction.v1 import funding_service_pb2_grpc, transaction_service_pb2_grpc

ENV_PREFIX = "TRANSACTION_"
MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransactionSettings:
    runtime: RuntimeSettings
    # The ledger's databases (runtime.database_url: one, or several separated by spaces)
    # and the logical shards each holds (adapters/shards.py).
    shards: ShardConfig
    # Every user-service instance, e.g. "ipv4:127.0.0.1:50051,127.0.0.1:50052".
    user_service_target: str
    hold_sweep_seconds: int
    # Every gateway instance; the deadline of a charge or payout call. Below the edge's
    # per-try timeout (5 s), so the client gets an answer (PENDING if the provider is
    # slower; the reconciler carries on) rather than the edge's 504.
    gateway_service_target: str
    gateway_timeout_seconds: float
    default_provider: str
    reconciler: ReconcilerSettings
    reconcile_interval_seconds: float
    # Movements between databases: how long a call waits for the other side, when and
    # how often the relay tries again (adapters/saga.py).
    legs: LegSettings
    relay_interval_seconds: float
    # Group commit (adapters/transfer_groups.py): group calls in flight per database; 0,
    # each single transfer its own call.
    transfer_groups: int = 0

    @classmethod
    def from_env(cls) -> TransactionSettings:
        p = ENV_PREFIX
        runtime = RuntimeSettings.from_env("transaction", p)
        return cls(
            runtime=runtime,
            shards=ShardConfig.from_env(p),
            user_service_target=env(p, "USER_SERVICE_TARGET"),
            hold_sweep_seconds=env_int(p, "HOLD_SWEEP_SECONDS", 1),
            gateway_service_target=env(p, "GATEWAY_SERVICE_TARGET"),
            gateway_timeout_seconds=env_int(p, "GATEWAY_TIMEOUT_MS", 4_500) / 1000,
            default_provider=env(p, "DEFAULT_PROVIDER", "sandbox"),
            reconciler=ReconcilerSettings(
                first_check_after=env_int(p, "RECONCILE_AFTER_MS", 10_000) / 1000,
                max_check_interval=env_int(p, "RECONCILE_MAX_INTERVAL_MS", 300_000) / 1000,
                lease=env_int(p, "GATEWAY_TIMEOUT_MS", 4_500) / 1000 + 1,
            ),
            reconcile_interval_seconds=env_int(p, "RECONCILE_INTERVAL_MS", 2_000) / 1000,
            legs=LegSettings(
                deliver_within=env_int(p, "LEG_DELIVER_WITHIN_MS", 1_000) / 1000,
                relay_after=env_int(p, "LEG_RELAY_AFTER_MS", 5_000) / 1000,
                relay_backoff=env_int(p, "LEG_RELAY_BACKOFF_MS", 1_000) / 1000,
                relay_max_backoff=env_int(p, "LEG_RELAY_MAX_BACKOFF_MS", 60_000) / 1000,
            ),
            relay_interval_seconds=env_int(p, "LEG_RELAY_INTERVAL_MS", 500) / 1000,
            transfer_groups=env_int(p, "TRANSFER_GROUPS", 0),
        )


def migrate(shards: ShardConfig) -> None:
    """The ledger's migrations on each of its databases; the first time, each claims its
    shards of the first split. From then on the databases say where the shards are: one
    added to the list holds none until shards are moved to it (adapters/shard_move.py).
    ShardMapError unless every shard is held once."""
    urls = shards.database_urls
    for url in urls:
        migrations.upgrade_to_head(MIGRATIONS, url)
    held = [held_shards(url) for url in urls]
    if not any(held):
        held = [claim_shards(url, first) for url, first in zip(urls, shards.shards, strict=True)]
    ShardMap(urls, held)


def build_app(settings: TransactionSettings) -> tuple[GrpcApp, Ledger]:
    runtime = settings.runtime
    databases = ShardMap.of(
        settings.shards,
        lambda url: db.create_driver_pool(url, size=runtime.database_pool_size),
    )
    pools = databases.databases()
    watch_driver_pool(runtime.service, *pools)
    redis = create_redis(runtime.redis_url)
    channel = user_service_channel(settings.user_service_target)
    users = GrpcUserDirectory(channel)
    store = SqlLedgerStore(
        databases,
        settings.legs,
        metrics.observe_leg,
        transfer_groups=settings.transfer_groups,
        observe_group=metrics.TRANSFER_GROUP_SIZE.observe,
    )
    cache = RedisLedgerCache(redis)
    ledger = Ledger(store, cache, users, SystemClock())
    credential = ServiceCredential.from_env()
    gateway_channel = gateway_service_channel(settings.gateway_service_target)
    funding = Funding(
        store,
        cache,
        GrpcPaymentGateway(
            gateway_channel, credential, timeout_seconds=settings.gateway_timeout_seconds
        ),
        SystemClock(),
        default_provider=settings.default_provider,
        reconciler=settings.reconciler,
        observe=metrics.observe_settled,
    )
    verifier = TokenVerifier(
        RemotePublicKeys(users.jwks),
        RevokedTokens(redis),
        issuer=runtime.jwt_issuer,
        audience=runtime.jwt_audience,
    )

    async def sweep_expired_holds() -> None:
        # Every instance sweeps; the SQL skips holds another one has locked.
        while True:
            await asyncio.sleep(settings.hold_sweep_seconds)
            try:
                released = await ledger.expire_holds()
                if released:
                    log.info("released expired holds", extra={"count": released})
            except Exception as error:
                log.warning("hold sweep failed", extra={"error": repr(error)})

    async def reconcile_payments() -> None:
        # Every instance reconciles; claiming pushes each payment's next look back,
        # so two instances do not work on the same one at the same time.
        while True:
            await asyncio.sleep(settings.reconcile_interval_seconds)
            try:
                await funding.reconcile()
                pending, oldest = await funding.backlog()
                metrics.RECONCILER_BACKLOG.set(pending)
                metrics.RECONCILER_OLDEST_SECONDS.set(oldest)
                metrics.RECONCILER_PASSES.labels("ok").inc()
            except Exception as error:
                metrics.RECONCILER_PASSES.labels("error").inc()
                log.warning("reconciler pass failed", extra={"error": repr(error)})

    async def refresh_shards() -> None:
        # A database down, or a move between its two commits: the map as it was.
        try:
            await store.refresh_shards()
        except Exception as error:
            log.warning("could not read the shard map again", extra={"error": repr(error)})

    async def relay_legs() -> None:
        # Every instance relays; claiming pushes each leg's next attempt back (its
        # backoff and lease), and SKIP LOCKED leaves the ones being settled.
        while True:
            await asyncio.sleep(settings.relay_interval_seconds)
            try:
                now = datetime.now(UTC)
                await refresh_shards()
                relayed = await store.legs.relay(now)
                waiting, oldest = await store.legs.backlog(now)
                metrics.LEGS_IN_FLIGHT.set(waiting)
                metrics.LEGS_OLDEST_SECONDS.set(oldest)
                metrics.RELAY_PASSES.labels("partial" if relayed.unreachable else "ok").inc()
            except Exception as error:
                metrics.RELAY_PASSES.labels("error").inc()
                log.warning("leg relay pass failed", extra={"error": repr(error)})

    async def close() -> None:
        await store.legs.drain()
        await gateway_channel.close(grace=None)
        await channel.close(grace=None)
        await redis.aclose()
        for pool in pools:
            await pool.close()

    async def open_pools() -> None:
        for pool in pools:
            await pool.open(wait=False)

    shards_read = False

    async def ready() -> None:
        # Every database answers, and (once) the map is read from them: each shard held
        # once. (The relay pass reads it again.)
        nonlocal shards_read
        for pool in pools:
            await db.ping_pool(pool)
        if not shards_read:
            await store.refresh_shards()
            shards_read = True

    api = TransactionApi(ledger, funding, PageTokens.for_mesh(credential))
    funding_api = FundingApi(funding)

    def register(server: grpc.aio.Server) -> None:
        transaction_service_pb2_grpc.add_TransactionServiceServicer_to_server(api, server)
        funding_service_pb2_grpc.add_FundingServiceServicer_to_server(funding_api, server)

    app = GrpcApp(
        name="transaction",
        service_names=(SERVICE_NAME, FUNDING_SERVICE_NAME),
        register=register,
        interceptors=service_interceptors(
            verifier,
            SERVICE_NAME,
            PUBLIC_METHODS,
            internal_services=(FUNDING_SERVICE_NAME,),
            credential=credential,
        ),
        readiness_check=ready,
        on_startup=[open_pools],
        on_shutdown=[close],
        background=[sweep_expired_holds, reconcile_payments, relay_legs],
    )
    return app, ledger
