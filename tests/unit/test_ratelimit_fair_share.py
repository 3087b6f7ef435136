"""The rate-limit service's own buckets, used while Redis does not answer: each
instance holds rate ÷ instances and burst ÷ instances of every limit, the instance
count coming from the launcher. No I/O: the clock is the test's."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from services.catalogue import RATELIMIT
from services.localmesh.edge import RateLimitSettings as EdgeRateLimitSettings
from services.localmesh.mesh import Mesh, MeshConfig
from services.ratelimit.buckets import DECISION_TIMEOUT, Mode
from services.ratelimit.fair_share import FairShareBuckets
from services.ratelimit.limiter import COOLDOWN
from services.ratelimit.limits import ClassLimit, parse_limits
from services.ratelimit.server import RateLimitSettings, build_app
from services.runtime.config import ConfigError
from tests.fakes.ratelimit import Clock

LIMITS = parse_limits(
    """
    domain: wallet
    classes:
      money:     {key: user,           requests: 6,  per: second, burst: 12, failure_mode: closed}
      anonymous: {key: remote_address, requests: 10, per: minute, burst: 10, failure_mode: open}
    """
)
MONEY = LIMITS.classes["money"]


def allowed_in_a_row(buckets: FairShareBuckets, limit: ClassLimit, key: str) -> int:
    count = 0
    while buckets.take(limit, key, 1).allowed:
        count += 1
        assert count <= limit.burst, "more than the whole burst"
    return count


@pytest.mark.parametrize("instances", [1, 2, 3, 4])
def test_each_instance_holds_its_share_of_the_burst(instances: int) -> None:
    allowed = allowed_in_a_row(FairShareBuckets(instances, clock=Clock()), MONEY, "ada")
    assert allowed == MONEY.burst // instances
    assert instances * allowed <= MONEY.burst  # together, never more than the burst


def test_the_share_is_rate_and_burst_divided_by_the_instances() -> None:
    share = FairShareBuckets(3).share(MONEY)
    assert share.rate_per_second == pytest.approx(2.0)
    assert share.burst == pytest.approx(4.0)


def test_a_share_refills_at_its_rate_never_past_its_burst() -> None:
    clock = Clock()
    buckets = FairShareBuckets(2, clock=clock)  # 3 per second, burst 6
    assert allowed_in_a_row(buckets, MONEY, "ada") == 6
    clock.now += 1.0
    assert allowed_in_a_row(buckets, MONEY, "ada") == 3
    clock.now += 0.5  # 1.5 tokens: one call, the half stays
    assert allowed_in_a_row(buckets, MONEY, "ada") == 1
    clock.now += 0.2  # 0.5 + 0.6
    assert allowed_in_a_row(buckets, MONEY, "ada") == 1
    clock.now += 3600  # an hour idle: full, not more
    assert allowed_in_a_row(buckets, MONEY, "ada") == 6


def test_refusals_past_the_share_take_nothing_and_say_when_it_is_full() -> None:
    clock = Clock()
    buckets = FairShareBuckets(2, clock=clock)
    first = buckets.take(MONEY, "ada", 4)
    assert (first.allowed, first.remaining, first.mode) == (True, 2, Mode.LOCAL)
    refused = buckets.take(MONEY, "ada", 3)
    assert (refused.allowed, refused.remaining) == (False, 2)
    assert refused.until_full == pytest.approx(4 / 3)  # 4 tokens short at 3 a second
    assert buckets.take(MONEY, "ada", 2).allowed  # the refusal took nothing
    assert not buckets.take(MONEY, "bob", 7).allowed  # more than a whole share


def test_buckets_are_per_class_and_key_value() -> None:
    buckets = FairShareBuckets(2, clock=Clock())
    assert allowed_in_a_row(buckets, MONEY, "ada") == 6
    assert allowed_in_a_row(buckets, MONEY, "bob") == 6
    assert allowed_in_a_row(buckets, LIMITS.classes["anonymous"], "ada") == 5


def test_memory_is_bounded_by_forgetting_the_least_recently_used() -> None:
    buckets = FairShareBuckets(1, clock=Clock(), max_buckets=2)
    buckets.take(MONEY, "ada", 12)
    buckets.take(MONEY, "bob", 12)
    assert not buckets.take(MONEY, "ada", 1).allowed  # ada used again: bob is the oldest
    buckets.take(MONEY, "eve", 1)
    assert len(buckets) == 2
    assert not buckets.take(MONEY, "ada", 1).allowed  # still remembered, still empty
    assert buckets.take(MONEY, "bob", 1).allowed  # forgotten: full again


def test_at_least_one_instance() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FairShareBuckets(0)


def test_a_redis_decision_gives_up_well_before_envoy_does() -> None:
    """Envoy waits `timeout_ms` for the whole call; the local answer after a Redis
    timeout must still arrive within it, with room for the gRPC round trip."""
    envoy_timeout = next(
        f.default for f in dataclasses.fields(EdgeRateLimitSettings) if f.name == "timeout_ms"
    )
    assert isinstance(envoy_timeout, int)
    assert envoy_timeout >= 2 * DECISION_TIMEOUT * 1000
    # While Redis hangs, one decision per cooldown waits for it: a small part of the time.
    assert COOLDOWN >= 5 * DECISION_TIMEOUT


@pytest.mark.parametrize("instances", [1, 3])
def test_the_launcher_tells_each_instance_how_many_share_the_limits(
    instances: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh = Mesh(MeshConfig.for_tests(tmp_path, instances=instances))
    environment = mesh.service_env(RATELIMIT, 0)
    assert environment["RATELIMIT_INSTANCES"] == str(instances)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert RateLimitSettings.from_env().instances == instances


@pytest.mark.parametrize("value", [None, "0", "-2"])
def test_the_instance_count_is_required(value: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A default could be wrong, and a wrong count multiplies every limit during an outage."""
    monkeypatch.setenv("RATELIMIT_REDIS_URL", "redis://127.0.0.1:1/0")
    if value is None:
        monkeypatch.delenv("RATELIMIT_INSTANCES", raising=False)
    else:
        monkeypatch.setenv("RATELIMIT_INSTANCES", value)
    with pytest.raises(ConfigError, match="RATELIMIT_INSTANCES is required"):
        RateLimitSettings.from_env()


def test_a_burst_too_small_to_share_is_reported_at_start(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    settings = RateLimitSettings(
        instance_id="ratelimit-test",
        grpc_address="127.0.0.1:0",
        redis_url="redis://127.0.0.1:1/0",  # never connected to: nothing is served
        limits_file=tmp_path / "unused.yaml",
        instances=11,  # money's burst is 12, anonymous's 10
    )
    with caplog.at_level(logging.WARNING, logger="services.ratelimit.server"):
        build_app(settings, LIMITS)
    assert [r.__dict__["class"] for r in caplog.records] == ["anonymous"]
