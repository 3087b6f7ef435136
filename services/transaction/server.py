"""Wiring of the transaction service: settings → engine, Redis, user-service
channel → domain → gRPC app."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from services.runtime import db
from services.runtime.auth import RevokedTokens, TokenVerifier
from services.runtime.cache import create_redis
from services.runtime.clock import SystemClock
from services.runtime.config import RuntimeSettings, env, env_int
from services.runtime.jwks import RemotePublicKeys
from services.runtime.metrics import watch_driver_pool
from services.runtime.server import GrpcApp, service_interceptors
from services.transaction.adapters.ledger_cache import RedisLedgerCache
from services.transaction.adapters.ledger_store import Shards, SqlLedgerStore
from services.transaction.adapters.user_directory import GrpcUserDirectory, user_service_channel
from services.transaction.api import TransactionApi
from services.transaction.domain.ledger import Ledger
from services.transaction.edge_policy import PUBLIC_METHODS, SERVICE_NAME
from wallet.transaction.v1 import transaction_service_pb2_grpc

ENV_PREFIX = "TRANSACTION_"
MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransactionSettings:
    runtime: RuntimeSettings
    # Every user-service instance, e.g. "ipv4:127.0.0.1:50051,127.0.0.1:50052".
    user_service_target: str
    hold_sweep_seconds: int

    @classmethod
    def from_env(cls) -> TransactionSettings:
        return cls(
            runtime=RuntimeSettings.from_env("transaction", ENV_PREFIX),
            user_service_target=env(ENV_PREFIX, "USER_SERVICE_TARGET"),
            hold_sweep_seconds=env_int(ENV_PREFIX, "HOLD_SWEEP_SECONDS", 1),
        )


def build_app(settings: TransactionSettings) -> tuple[GrpcApp, Ledger]:
    runtime = settings.runtime
    pool = db.create_driver_pool(runtime.database_url, size=runtime.database_pool_size)
    watch_driver_pool(runtime.service, pool)
    redis = create_redis(runtime.redis_url)
    channel = user_service_channel(settings.user_service_target)
    users = GrpcUserDirectory(channel)
    ledger = Ledger(SqlLedgerStore(Shards(pool)), RedisLedgerCache(redis), users, SystemClock())
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

    async def close() -> None:
        await channel.close(grace=None)
        await redis.aclose()
        await pool.close()

    api = TransactionApi(ledger, users)
    app = GrpcApp(
        name="transaction",
        service_names=(SERVICE_NAME,),
        register=lambda server: (
            transaction_service_pb2_grpc.add_TransactionServiceServicer_to_server(api, server)
        ),
        interceptors=service_interceptors(verifier, SERVICE_NAME, PUBLIC_METHODS),
        readiness_check=lambda: db.ping_pool(pool),
        on_startup=[lambda: pool.open(wait=False)],
        on_shutdown=[close],
        background=[sweep_expired_holds],
    )
    return app, ledger
