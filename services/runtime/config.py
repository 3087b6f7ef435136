"""Settings from environment variables, one prefix per service (USER_, ...)."""

from __future__ import annotations

import os
from dataclasses import dataclass


class ConfigError(RuntimeError):
    """A required setting is missing or malformed."""


def env(prefix: str, name: str, default: str | None = None) -> str:
    value = os.environ.get(prefix + name, default)
    if value is None or value == "":
        raise ConfigError(f"environment variable {prefix}{name} is required")
    return value


def env_optional(prefix: str, name: str) -> str | None:
    """A setting whose absence turns a feature off: None when unset or empty."""
    return os.environ.get(prefix + name) or None


def env_int(prefix: str, name: str, default: int) -> int:
    raw = os.environ.get(prefix + name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as error:
        raise ConfigError(f"{prefix}{name} must be an integer, got {raw!r}") from error


@dataclass(frozen=True)
class RuntimeSettings:
    """What every service process needs, whatever it does."""

    service: str  # "user"
    instance_id: str  # "user-1"
    grpc_address: str  # "127.0.0.1:50051"
    database_url: str  # postgresql+psycopg://...
    redis_url: str  # redis://...
    database_pool_size: int
    jwt_issuer: str
    jwt_audience: str
    metrics_address: str | None = None  # "127.0.0.1:9100"; None: no metrics endpoint

    @classmethod
    def from_env(cls, service: str, prefix: str) -> RuntimeSettings:
        return cls(
            service=service,
            instance_id=env(prefix, "INSTANCE_ID", f"{service}-0"),
            grpc_address=env(prefix, "GRPC_ADDRESS", "127.0.0.1:50051"),
            database_url=env(prefix, "DATABASE_URL"),
            redis_url=env(prefix, "REDIS_URL"),
            database_pool_size=env_int(prefix, "DATABASE_POOL_SIZE", 20),
            jwt_issuer=env("WALLET_", "JWT_ISSUER", "wallet-mesh"),
            jwt_audience=env("WALLET_", "JWT_AUDIENCE", "wallet-mesh"),
            metrics_address=env_optional(prefix, "METRICS_ADDRESS"),
        )
