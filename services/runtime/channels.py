"""Channels from one service to another: client-side round robin over every
instance of the callee, with gRPC's own retries for the calls that are safe to
repeat when an instance is down."""

from __future__ import annotations

import json
from collections.abc import Iterable

import grpc


def round_robin_channel(target: str, retryable: Iterable[tuple[str, str]] = ()) -> grpc.aio.Channel:
    """`target` lists every instance ("ipv4:127.0.0.1:50051,127.0.0.1:50052");
    `retryable` names (service, method) pairs retried on UNAVAILABLE, on another
    instance: reads, and calls idempotent by their request's key."""
    names = [{"service": service, "method": method} for service, method in retryable]
    config: dict[str, object] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if names:
        config["methodConfig"] = [
            {
                "name": names,
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    return grpc.aio.insecure_channel(
        target,
        options=[("grpc.service_config", json.dumps(config)), ("grpc.enable_retries", 1)],
    )
