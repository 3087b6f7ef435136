"""Waiting, in a test, for what happens in the background (webhooks, the reconciler, a
restart, an exporter's flush): poll a check until it holds, for a bounded time, and fail
naming what was still wrong. Never a fixed sleep.

A check returns True/False, or the list of what is still wrong (empty when all is well),
which the failure then quotes. The synchronous form is the mesh's own readiness poll
(services.localmesh.processes.wait_until); the asynchronous one is its twin for checks
that await, so that the event loop keeps serving while it waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import pytest

from services.localmesh.processes import POLL_INTERVAL, wait_until

Outcome = bool | Sequence[str]

DEFAULT_TIMEOUT = 30.0


def _problems(outcome: Outcome) -> list[str]:
    if isinstance(outcome, bool):
        return [] if outcome else ["the check was still false"]
    return list(outcome)


def eventually(
    check: Callable[[], Outcome],
    what: str,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    interval: float = POLL_INTERVAL,
) -> None:
    """Poll `check` until it holds; fail the test after `timeout` seconds."""
    try:
        wait_until(lambda: _problems(check()), timeout, what=what, interval=interval)
    except TimeoutError as error:
        pytest.fail(str(error))


async def eventually_async(
    check: Callable[[], Awaitable[Outcome]],
    what: str,
    # A deadline over many polls, not one await's timeout (what ASYNC109 is about).
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
    *,
    interval: float = POLL_INTERVAL,
) -> None:
    """`eventually` for a check that awaits."""
    deadline = time.monotonic() + timeout
    while True:
        last = _problems(await check())
        if not last:
            return
        if time.monotonic() >= deadline:
            pytest.fail(f"waited {timeout:.0f} s for {what}; still: {'; '.join(last)}")
        await asyncio.sleep(interval)
