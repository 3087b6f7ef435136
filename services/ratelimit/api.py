"""gRPC handler of Envoy's rate-limit service (envoy.service.ratelimit.v3): descriptors
in, one bucket decision per descriptor, statuses out. The rules are in `limits` (which
bucket), `buckets` and `fair_share` (how a bucket decides, shared in Redis or this
instance's share) and `limiter` (which of the two); this module only translates.

What Envoy does with the answer: it refuses the call when `overall_code` is OVER_LIMIT,
and builds the X-RateLimit-* headers from the status with the fewest `limit_remaining`
among those carrying a `current_limit` (Limit: `requests_per_unit`, plus `;w=` from the
unit; Remaining: `limit_remaining`; Reset: the whole seconds of `duration_until_reset`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from typing import Any

# xds-protos ships no type information.
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc  # type: ignore[import-untyped]
from google.protobuf import duration_pb2

from services.ratelimit.buckets import Decision
from services.ratelimit.limiter import Limiter
from services.ratelimit.limits import ClassLimit, Limits, Match, Per, Unmatched
from services.ratelimit.metrics import DecisionCounts, Outcome
from services.runtime.interceptors import Context

log = logging.getLogger(__name__)

_Response = rls_pb2.RateLimitResponse
_UNITS = {
    Per.SECOND: _Response.RateLimit.SECOND,
    Per.MINUTE: _Response.RateLimit.MINUTE,
    Per.HOUR: _Response.RateLimit.HOUR,
}
# Distinct "not ours" reasons remembered, so each is logged once; they come from the
# Envoy config, not from callers, so there are few, but the memory stays bounded anyway.
_MAX_WARNED = 100


class RateLimitApi(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    """ShouldRateLimit: OVER_LIMIT when any descriptor's bucket is short of tokens.

    Descriptors that are not ours (unknown domain or class, missing entry) are answered
    OK: unknown traffic is not ours to limit. When Redis does not answer, the limiter
    decides from this instance's fair share of each limit, so every call is answered;
    Envoy applies a route's failure mode (money fails closed) only when it cannot reach
    this service.
    """

    def __init__(self, limits: Limits, limiter: Limiter) -> None:
        self._limits = limits
        self._limiter = limiter
        self._current_limits = {
            name: _Response.RateLimit(requests_per_unit=limit.requests, unit=_UNITS[limit.per])
            for name, limit in limits.classes.items()
        }
        self._warned: set[str] = set()
        self._counts = DecisionCounts(limits.classes)

    async def ShouldRateLimit(
        self, request: rls_pb2.RateLimitRequest, context: Context
    ) -> rls_pb2.RateLimitResponse:
        # 0 means "not set", which the protocol defines as 1.
        request_hits = request.hits_addend or 1
        statuses: list[Any] = []
        to_decide: list[tuple[int, Match, int]] = []
        for index, descriptor in enumerate(request.descriptors):
            found = self._limits.match(
                request.domain, [(entry.key, entry.value) for entry in descriptor.entries]
            )
            if isinstance(found, Unmatched):
                self._warn_once(found.reason)
                self._counts.unmatched()
                statuses.append(_Response.DescriptorStatus(code=_Response.OK))
                continue
            # A descriptor's own hits_addend (newer Envoys) overrides the request's.
            hits = (
                descriptor.hits_addend.value or 1
                if descriptor.HasField("hits_addend")
                else request_hits
            )
            statuses.append(None)
            to_decide.append((index, found, hits))
        decisions = await self._decide(to_decide)
        for (index, found, _), decision in zip(to_decide, decisions, strict=True):
            statuses[index] = self._status(found.limit, decision)
            self._counts.decided(
                found.limit.name,
                Outcome.OK if decision.allowed else Outcome.OVER_LIMIT,
                decision.mode,
            )
        over = any(status.code == _Response.OVER_LIMIT for status in statuses)
        return _Response(
            overall_code=_Response.OVER_LIMIT if over else _Response.OK, statuses=statuses
        )

    async def _decide(self, to_decide: Sequence[tuple[int, Match, int]]) -> list[Decision]:
        takes = [
            self._limiter.take(found.limit, found.key_value, hits) for _, found, hits in to_decide
        ]
        if len(takes) == 1:  # what Envoy sends: no task to schedule
            return [await takes[0]]
        return list(await asyncio.gather(*takes))

    def _status(self, limit: ClassLimit, decision: Decision) -> Any:
        return _Response.DescriptorStatus(
            code=_Response.OK if decision.allowed else _Response.OVER_LIMIT,
            current_limit=self._current_limits[limit.name],
            limit_remaining=decision.remaining,
            # Whole seconds, rounded up: Envoy's X-RateLimit-Reset keeps only the seconds,
            # and "0" while the bucket is still short of tokens would invite a retry storm.
            duration_until_reset=duration_pb2.Duration(seconds=math.ceil(decision.until_full)),
        )

    def _warn_once(self, reason: str) -> None:
        if reason in self._warned or len(self._warned) >= _MAX_WARNED:
            return
        self._warned.add(reason)
        log.warning("descriptor not rate-limited (answered OK)", extra={"reason": reason})
