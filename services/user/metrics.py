"""The user service's counters: logins and registrations by result, recorded by
the api layer (the domain stays free of infrastructure)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter


class Attempts:
    """A counter of attempts by result: ok, or failed (refused for any reason;
    rpc_requests_total's code tells a wrong password from an outage)."""

    def __init__(self, name: str, documentation: str) -> None:
        counter = Counter(name, documentation, ["result"])
        self._ok = counter.labels("ok")
        self._failed = counter.labels("failed")

    @contextmanager
    def counting(self) -> Iterator[None]:
        try:
            yield
        except Exception:
            self._failed.inc()
            raise
        self._ok.inc()


LOGINS = Attempts("user_logins_total", "Logins: ok (a session was issued) or failed.")
REGISTRATIONS = Attempts(
    "user_registrations_total", "Registrations: ok (a user was created) or failed."
)
