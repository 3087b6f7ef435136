"""Wiring of the user service: settings → engine, Redis, keys → domain →
gRPC app. The only module that knows every concrete class."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from services.runtime import db
from services.runtime.auth import RevokedTokens, ServiceCredential, TokenVerifier
from services.runtime.cache import create_redis
from services.runtime.clock import SystemClock
from services.runtime.config import RuntimeSettings, env, env_int
from services.runtime.metrics import watch_pool
from services.runtime.pagination import PageTokens
from services.runtime.server import GrpcApp, service_interceptors
from services.user.adapters.login_throttle import RedisLoginThrottle
from services.user.adapters.passwords import Argon2Passwords
from services.user.adapters.profile_cache import RedisProfileCache
from services.user.adapters.repository import SqlRefreshTokenRepository, SqlUserRepository
from services.user.adapters.tokens import JwtIssuer, LocalPublicKeys, SigningKey
from services.user.api import UserApi
from services.user.domain.accounts import Accounts
from services.user.edge_policy import PUBLIC_METHODS, SERVICE_NAME
from wallet.user.v1 import user_service_pb2_grpc

ENV_PREFIX = "USER_"
MIGRATIONS = Path(__file__).parent / "migrations"
# The purpose the login throttle's hashing key is derived for (from the signing key).
LOGIN_THROTTLE_KEY_PURPOSE = "wallet-mesh login-failure buckets v1"


@dataclass(frozen=True)
class UserSettings:
    runtime: RuntimeSettings
    signing_key_file: Path
    access_token_seconds: int
    refresh_token_days: int
    profile_cache_seconds: int
    # Failed logins per email: `login_failure_burst` at once, then one more every
    # `login_failure_refill_seconds` (README, "Per-account login limit").
    login_failure_burst: int = 5
    login_failure_refill_seconds: int = 30

    @classmethod
    def from_env(cls) -> UserSettings:
        return cls(
            runtime=RuntimeSettings.from_env("user", ENV_PREFIX),
            signing_key_file=Path(env(ENV_PREFIX, "JWT_SIGNING_KEY_FILE")),
            access_token_seconds=env_int(ENV_PREFIX, "ACCESS_TOKEN_SECONDS", 900),
            refresh_token_days=env_int(ENV_PREFIX, "REFRESH_TOKEN_DAYS", 30),
            profile_cache_seconds=env_int(ENV_PREFIX, "PROFILE_CACHE_SECONDS", 300),
            login_failure_burst=env_int(ENV_PREFIX, "LOGIN_FAILURE_BURST", 5),
            login_failure_refill_seconds=env_int(ENV_PREFIX, "LOGIN_FAILURE_REFILL_SECONDS", 30),
        )


def build_app(settings: UserSettings) -> tuple[GrpcApp, Accounts]:
    runtime = settings.runtime
    engine = db.create_engine(runtime.database_url, pool_size=runtime.database_pool_size)
    watch_pool(runtime.service, engine)
    redis = create_redis(runtime.redis_url)
    signing_key = SigningKey.from_pem_file(settings.signing_key_file)
    public_keys = LocalPublicKeys(signing_key)
    revoked = RevokedTokens(redis)
    accounts = Accounts(
        users=SqlUserRepository(engine),
        refresh_tokens=SqlRefreshTokenRepository(engine),
        passwords=Argon2Passwords(),
        access_tokens=JwtIssuer(
            signing_key,
            issuer=runtime.jwt_issuer,
            audience=runtime.jwt_audience,
            lifetime_seconds=settings.access_token_seconds,
        ),
        revoked_access_tokens=revoked,
        profiles=RedisProfileCache(redis, ttl_seconds=settings.profile_cache_seconds),
        clock=SystemClock(),
        login_throttle=RedisLoginThrottle(
            redis,
            secret=signing_key.derive_secret(LOGIN_THROTTLE_KEY_PURPOSE),
            burst=settings.login_failure_burst,
            refill_seconds=settings.login_failure_refill_seconds,
        ),
        refresh_lifetime=timedelta(days=settings.refresh_token_days),
    )
    verifier = TokenVerifier(
        public_keys, revoked, issuer=runtime.jwt_issuer, audience=runtime.jwt_audience
    )
    api = UserApi(accounts, public_keys.jwks, PageTokens.for_mesh(ServiceCredential.from_env()))

    async def close() -> None:
        await redis.aclose()
        await engine.dispose()

    app = GrpcApp(
        name="user",
        service_names=(SERVICE_NAME,),
        register=lambda server: user_service_pb2_grpc.add_UserServiceServicer_to_server(
            api, server
        ),
        interceptors=service_interceptors(verifier, SERVICE_NAME, PUBLIC_METHODS),
        readiness_check=lambda: db.ping(engine),
        on_shutdown=[close],
    )
    return app, accounts
