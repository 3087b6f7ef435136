"""Wiring of the rate-limit service: settings and limits → Redis → token buckets
(shared, with this instance's fair share as the fallback) → gRPC app. The only module
that knows every concrete class.

Envoy is the only caller and the service listens on loopback, so there is no token
check (RpcMetrics is its only interceptor). Readiness does not depend on Redis: without
Redis the service still decides (from its fair share), and an instance reported not
serving during a Redis outage would make Envoy fail money closed after all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

# xds-protos ships no type information.
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc  # type: ignore[import-untyped]

from services.ratelimit.api import RateLimitApi
from services.ratelimit.buckets import TokenBuckets
from services.ratelimit.fair_share import FairShareBuckets
from services.ratelimit.limiter import Limiter
from services.ratelimit.limits import Limits
from services.runtime.cache import create_redis
from services.runtime.config import ConfigError, env, env_int, env_optional
from services.runtime.metrics import RpcMetrics
from services.runtime.one_message import OneRequestMessage
from services.runtime.server import GrpcApp

log = logging.getLogger(__name__)

ENV_PREFIX = "RATELIMIT_"
DEFAULT_LIMITS_FILE = Path(__file__).with_name("limits.yaml")
# Also the health service name Envoy's health checks ask for.
SERVICE_NAME: str = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name


@dataclass(frozen=True)
class RateLimitSettings:
    instance_id: str  # "ratelimit-1"
    grpc_address: str  # "127.0.0.1:8081"
    redis_url: str  # redis://...
    limits_file: Path
    metrics_address: str | None = None  # "127.0.0.1:9100"; None: no metrics endpoint
    # How many instances Envoy spreads decisions over: without Redis, each decides
    # from 1/instances of every limit, so that together they stay within it.
    instances: int = 1

    @classmethod
    def from_env(cls) -> RateLimitSettings:
        # Required: a wrong default would let a Redis outage multiply every limit.
        instances = env_int(ENV_PREFIX, "INSTANCES", 0)
        if instances < 1:
            raise ConfigError(
                f"{ENV_PREFIX}INSTANCES is required: the number of rate-limit instances"
                f" (a whole number from 1), got {instances}"
            )
        return cls(
            instance_id=env(ENV_PREFIX, "INSTANCE_ID", "ratelimit-0"),
            grpc_address=env(ENV_PREFIX, "GRPC_ADDRESS", "127.0.0.1:8081"),
            redis_url=env(ENV_PREFIX, "REDIS_URL"),
            limits_file=Path(env(ENV_PREFIX, "CONFIG_FILE", str(DEFAULT_LIMITS_FILE))),
            metrics_address=env_optional(ENV_PREFIX, "METRICS_ADDRESS"),
            instances=instances,
        )


def build_app(settings: RateLimitSettings, limits: Limits) -> GrpcApp:
    """The app for `limits` (loaded by the caller, so a bad file stops the process
    before anything starts)."""
    for limit in limits.classes.values():
        if limit.burst < settings.instances:
            log.warning(
                "a burst smaller than the number of instances: while Redis is out, no"
                " instance's share holds one call, and every call of the class is refused",
                extra={"class": limit.name, "burst": limit.burst, "instances": settings.instances},
            )
    redis = create_redis(settings.redis_url)
    limiter = Limiter(TokenBuckets(redis), FairShareBuckets(settings.instances))
    api = RateLimitApi(limits, limiter)

    async def serving() -> None:
        """Ready once serving, Redis or not (see the module's docstring)."""

    async def close() -> None:
        await redis.aclose()

    return GrpcApp(
        name="ratelimit",
        service_names=(SERVICE_NAME,),
        register=lambda server: rls_pb2_grpc.add_RateLimitServiceServicer_to_server(api, server),
        interceptors=[OneRequestMessage(), RpcMetrics()],
        readiness_check=serving,
        on_shutdown=[close],
    )
