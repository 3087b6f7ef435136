"""The limiter's degraded mode, with a stand-in for Redis and the test's clock: local
fair-share decisions while the shared store fails, a cooldown before asking it again,
one decision at a time asking it, the gauge and one log line per change."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import REGISTRY

from services.ratelimit.buckets import Mode
from services.ratelimit.fair_share import FairShareBuckets
from services.ratelimit.limiter import Limiter
from services.ratelimit.limits import parse_limits
from tests.fakes.ratelimit import Clock, Store

MONEY = parse_limits(
    """
    domain: wallet
    classes:
      money: {key: user, requests: 6, per: second, burst: 12, failure_mode: closed}
    """
).classes["money"]
COOLDOWN = 1.0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def limiter(store: Store, clock: Clock) -> Limiter:
    return Limiter(store, FairShareBuckets(2, clock=clock), cooldown=COOLDOWN, clock=clock)


async def asking(store: Store, count: int) -> None:
    """Lets the tasks run until the store has been asked `count` times."""
    for _ in range(1000):
        if store.asked >= count:
            return
        await asyncio.sleep(0)
    pytest.fail(f"the store was asked {store.asked} times, not {count}")


def gauge() -> float | None:
    return REGISTRY.get_sample_value("ratelimit_degraded")


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "services.ratelimit.limiter"]


async def test_shared_while_the_store_answers(limiter: Limiter, store: Store) -> None:
    decision = await limiter.take(MONEY, "ada", 1)
    assert (decision.mode, decision.remaining, limiter.degraded) == (Mode.SHARED, 7, False)
    assert (store.asked, gauge()) == (1, 0)


async def test_a_failing_store_means_the_local_share_then_a_cooldown(
    limiter: Limiter, store: Store, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    store.down = True
    first = [await limiter.take(MONEY, "ada", 1) for _ in range(7)]
    # Share: 6 of the burst of 12; the 7th is refused. Redis was asked once only.
    assert [d.allowed for d in first] == [True] * 6 + [False]
    assert {d.mode for d in first} == {Mode.LOCAL}
    assert (store.asked, limiter.degraded, gauge()) == (1, True, 1)
    clock.now += COOLDOWN  # then asked again, still down: one more question, still local
    assert (await limiter.take(MONEY, "bob", 1)).mode is Mode.LOCAL
    assert store.asked == 2
    assert messages(caplog) == [
        "rate-limit store unavailable: deciding from this instance's fair share"
    ]
    store.down = False
    clock.now += COOLDOWN / 2  # cooldown: not asked yet
    assert (await limiter.take(MONEY, "bob", 1)).mode is Mode.LOCAL
    clock.now += COOLDOWN / 2
    back = await limiter.take(MONEY, "ada", 1)
    assert (back.mode, back.remaining, limiter.degraded, gauge()) == (Mode.SHARED, 7, False, 0)
    assert messages(caplog)[1:] == ["rate-limit store answers again: back to the shared buckets"]


async def test_while_degraded_one_decision_at_a_time_asks_the_store(
    limiter: Limiter, store: Store, clock: Clock
) -> None:
    store.down = True
    await limiter.take(MONEY, "ada", 1)
    clock.now += COOLDOWN
    store.held = asyncio.Event()
    probe = asyncio.create_task(limiter.take(MONEY, "ada", 1))
    await asking(store, 2)  # the probe is asking the store
    # Meanwhile, the others do not wait for a store that may hang.
    others = [await limiter.take(MONEY, "bob", 1) for _ in range(3)]
    assert {d.mode for d in others} == {Mode.LOCAL}
    assert store.asked == 2
    store.held.set()
    assert (await probe).mode is Mode.LOCAL  # still down
    store.held = None
    clock.now += COOLDOWN
    store.down = False
    assert (await limiter.take(MONEY, "bob", 1)).mode is Mode.SHARED


async def test_a_probe_that_is_cancelled_lets_the_next_one_ask(
    limiter: Limiter, store: Store, clock: Clock
) -> None:
    store.down = True
    await limiter.take(MONEY, "ada", 1)
    clock.now += COOLDOWN
    store.held = asyncio.Event()
    probe = asyncio.create_task(limiter.take(MONEY, "ada", 1))
    await asking(store, 2)
    probe.cancel()  # its client went away
    with pytest.raises(asyncio.CancelledError):
        await probe
    store.held, store.down = None, False
    assert (await limiter.take(MONEY, "ada", 1)).mode is Mode.SHARED
