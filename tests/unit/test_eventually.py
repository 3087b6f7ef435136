"""The tests' one way of waiting (tests/eventually.py): it returns once the check holds,
and fails, naming what was still wrong, once the time is up."""

from __future__ import annotations

import itertools

import pytest

from tests.eventually import eventually, eventually_async


def test_returns_as_soon_as_the_check_holds() -> None:
    polls = itertools.count(1)
    eventually(lambda: next(polls) >= 3, "the third poll", timeout=10, interval=0.001)
    assert next(polls) == 4  # polled exactly three times


def test_fails_naming_what_was_still_wrong() -> None:
    with pytest.raises(pytest.fail.Exception) as failed:
        eventually(lambda: ["the queue holds 2"], "the queue to drain", timeout=0.05)
    assert "the queue to drain" in str(failed.value)
    assert "still: the queue holds 2" in str(failed.value)


def test_a_false_check_fails_too() -> None:
    with pytest.raises(pytest.fail.Exception, match="waited 0 s for nothing"):
        eventually(lambda: False, "nothing", timeout=0.01, interval=0.001)


async def test_the_async_form_awaits_its_check() -> None:
    polls = itertools.count(1)

    async def third() -> list[str]:
        poll = next(polls)
        return [] if poll >= 3 else [f"poll {poll}"]

    await eventually_async(third, "the third poll", timeout=10, interval=0.001)
    assert next(polls) == 4

    async def never() -> bool:
        return False

    with pytest.raises(pytest.fail.Exception, match="still: the check was still false"):
        await eventually_async(never, "never", timeout=0.01, interval=0.001)
