"""The gateway's circuit breaker and retry policy, on a fake clock and a fixed random."""

from __future__ import annotations

import pytest

from services.gateway.domain.resilience import BreakerState, CircuitBreaker, RetryPolicy
from tests.fakes.gateway import FakeMonotonicClock

THRESHOLD = 3
OPEN_SECONDS = 10.0


def state_of(breaker: CircuitBreaker) -> BreakerState:
    """The breaker's state, read afresh (a call, so type checkers do not narrow it)."""
    return breaker.state


class World:
    def __init__(self) -> None:
        self.clock = FakeMonotonicClock()
        self.changes: list[BreakerState] = []
        self.breaker = CircuitBreaker(
            failure_threshold=THRESHOLD,
            open_seconds=OPEN_SECONDS,
            clock=self.clock,
            on_change=self.changes.append,
        )

    def trip(self) -> None:
        for _ in range(THRESHOLD):
            self.breaker.record_failure()


@pytest.fixture
def world() -> World:
    return World()


# --- circuit breaker -------------------------------------------------------------------


def test_a_new_breaker_is_closed_and_allows_calls(world: World) -> None:
    assert state_of(world.breaker) is BreakerState.CLOSED
    assert all(world.breaker.allow() for _ in range(10))
    assert world.changes == []


def test_opens_after_exactly_threshold_consecutive_failures(world: World) -> None:
    for _ in range(THRESHOLD - 1):
        world.breaker.record_failure()
    assert state_of(world.breaker) is BreakerState.CLOSED
    assert world.breaker.allow()

    world.breaker.record_failure()

    assert state_of(world.breaker) is BreakerState.OPEN
    assert world.changes == [BreakerState.OPEN]


def test_a_success_resets_the_failure_count(world: World) -> None:
    for _ in range(THRESHOLD - 1):
        world.breaker.record_failure()
    world.breaker.record_success()
    for _ in range(THRESHOLD - 1):
        world.breaker.record_failure()

    assert state_of(world.breaker) is BreakerState.CLOSED
    assert world.breaker.allow()

    world.breaker.record_failure()  # the threshold-th in a row since the success
    assert state_of(world.breaker) is BreakerState.OPEN


def test_an_open_breaker_refuses_until_open_seconds_have_passed(world: World) -> None:
    world.trip()

    assert not world.breaker.allow()
    world.clock.advance(OPEN_SECONDS - 0.001)
    assert not world.breaker.allow()
    assert state_of(world.breaker) is BreakerState.OPEN


def test_after_open_seconds_half_open_allows_one_probe_at_a_time(world: World) -> None:
    world.trip()
    world.clock.advance(OPEN_SECONDS)

    assert state_of(world.breaker) is BreakerState.HALF_OPEN
    assert world.breaker.allow()  # the probe
    assert not world.breaker.allow()  # no second call while the probe is out
    assert not world.breaker.allow()
    assert state_of(world.breaker) is BreakerState.HALF_OPEN


def test_a_successful_probe_closes_the_breaker(world: World) -> None:
    world.trip()
    world.clock.advance(OPEN_SECONDS)
    assert world.breaker.allow()

    world.breaker.record_success()

    assert state_of(world.breaker) is BreakerState.CLOSED
    assert all(world.breaker.allow() for _ in range(5))
    # And the count starts again from zero.
    for _ in range(THRESHOLD - 1):
        world.breaker.record_failure()
    assert state_of(world.breaker) is BreakerState.CLOSED


def test_a_failed_probe_opens_the_breaker_again_for_open_seconds(world: World) -> None:
    world.trip()
    world.clock.advance(OPEN_SECONDS)
    assert world.breaker.allow()

    world.breaker.record_failure()  # one failure is enough in half-open

    assert state_of(world.breaker) is BreakerState.OPEN
    assert not world.breaker.allow()
    world.clock.advance(OPEN_SECONDS - 0.001)  # counted from the failed probe
    assert not world.breaker.allow()
    world.clock.advance(0.001)
    assert world.breaker.allow()


def test_on_change_sees_each_transition_once(world: World) -> None:
    world.trip()
    world.breaker.record_failure()  # already open: no new transition
    assert not world.breaker.allow()
    world.clock.advance(OPEN_SECONDS)
    assert state_of(world.breaker) is BreakerState.HALF_OPEN
    assert state_of(world.breaker) is BreakerState.HALF_OPEN  # read twice, reported once
    assert world.breaker.allow()
    world.breaker.record_failure()
    world.clock.advance(OPEN_SECONDS)
    assert world.breaker.allow()
    world.breaker.record_success()
    world.breaker.record_success()  # already closed: no new transition

    assert world.changes == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]


def test_works_without_an_on_change_callback() -> None:
    clock = FakeMonotonicClock()
    breaker = CircuitBreaker(failure_threshold=1, open_seconds=1.0, clock=clock)
    breaker.record_failure()
    assert state_of(breaker) is BreakerState.OPEN
    clock.advance(1.0)
    assert breaker.allow()
    breaker.record_success()
    assert state_of(breaker) is BreakerState.CLOSED


@pytest.mark.parametrize(
    ("threshold", "open_seconds"),
    [(0, 10.0), (-1, 10.0), (5, 0.0), (5, -1.0)],
)
def test_invalid_arguments_raise_value_error(threshold: int, open_seconds: float) -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(
            failure_threshold=threshold, open_seconds=open_seconds, clock=FakeMonotonicClock()
        )


def test_the_state_values_are_the_exported_metric_numbers() -> None:
    assert [int(s) for s in BreakerState] == [0, 1, 2]
    assert [s.name for s in BreakerState] == ["CLOSED", "OPEN", "HALF_OPEN"]


# --- retry policy ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry", "cap"),
    [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.6), (5, 2.0), (10, 2.0)],
)
def test_delay_is_full_jitter_up_to_the_capped_exponential(retry: int, cap: float) -> None:
    policy = RetryPolicy(attempts=3, base_delay=0.1, max_delay=2.0)

    assert policy.delay(retry, rand=lambda: 0.0) == 0.0
    assert policy.delay(retry, rand=lambda: 1.0) == pytest.approx(cap)
    assert policy.delay(retry, rand=lambda: 0.5) == pytest.approx(cap / 2)


def test_delay_with_the_default_random_stays_in_bounds() -> None:
    policy = RetryPolicy(base_delay=0.05, max_delay=0.3)
    for retry in range(8):
        cap = min(0.3, 0.05 * 2**retry)
        for _ in range(50):
            assert 0.0 <= policy.delay(retry) <= cap


def test_delay_uses_the_injected_random_once_per_call() -> None:
    draws: list[float] = []

    def rand() -> float:
        draws.append(0.25)
        return 0.25

    assert RetryPolicy(base_delay=1.0, max_delay=100.0).delay(3, rand=rand) == 2.0
    assert draws == [0.25]
