"""Where the time goes: the CPU each kind of process of the mesh spends during a
workload, from the kernel's own accounting (`/proc/<pid>/stat` through psutil).

A family is a set of root processes and all their descendants (PostgreSQL's backends
under its postmaster). Descendants that exit during a workload are still counted: the
kernel adds their time to their parent's `children_*` once it reaps them, and those are
counted too. The load generator is what the bench process itself reaped meanwhile (ghz,
wrk), so it is counted as one more family, `load generator`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import psutil

LOAD_GENERATOR = "load generator"


def _seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


def family_seconds(roots: list[int]) -> float:
    """CPU seconds so far of these processes, their descendants, and those reaped."""
    total = 0.0
    for pid in roots:
        try:
            root = psutil.Process(pid)
            total += _seconds(root)
            descendants = root.children(recursive=True)
        except psutil.NoSuchProcess:
            continue  # stopped meanwhile (Redis, between read stages): nothing more
        for child in descendants:
            try:
                total += _seconds(child)
            except psutil.NoSuchProcess:
                continue  # exited after the listing: counted in its parent next time
    return total


class CpuMeter:
    """CPU seconds per family between `start` and `stop` (one workload)."""

    def __init__(self, families: Callable[[], Mapping[str, list[int]]]) -> None:
        self._families = families  # asked at each reading: instances may have restarted
        self._before: dict[str, float] = {}

    def _reading(self) -> dict[str, float]:
        reading = {name: family_seconds(pids) for name, pids in self._families().items()}
        # Only processes this one reaped: ghz, pgbench, wrk (the mesh's are still running).
        own = psutil.Process().cpu_times()
        reading[LOAD_GENERATOR] = float(own.children_user + own.children_system)
        return reading

    def start(self) -> None:
        self._before = self._reading()

    def stop(self) -> dict[str, float]:
        after = self._reading()
        return {
            name: max(0.0, seconds - self._before.get(name, 0.0)) for name, seconds in after.items()
        }


def per_unit_ms(spent: Mapping[str, float], units: int) -> dict[str, float]:
    """Milliseconds of CPU per unit of work (a transfer booked), by family, and `total`
    over the mesh's processes (the load generator apart: it is not the system's cost)."""
    if units <= 0:
        return {}
    per = {name: round(seconds * 1000 / units, 3) for name, seconds in spent.items()}
    per["total"] = round(sum(v for name, v in per.items() if name != LOAD_GENERATOR), 3)
    return per
