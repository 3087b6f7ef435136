"""Keeps the processes of a local mesh running: the supervisor behind `make run`.

Each watched process gets a thread that checks every `poll_interval` whether it still
runs. One that has exited is started again after a back-off that doubles with each
exit in a row that came soon after its start (a "quick exit"), from `first_backoff`
up to `max_backoff`; a process that ran `quick_exit` seconds or longer before it
exited counts as having run stably, and starts the count again. After `give_up_after`
quick exits in a row the supervisor gives up on that process, logs why (how it ended
and the end of its log) and keeps the rest running.

It watches for exits only. A process that hangs (SIGSTOP, a deadlock) still runs:
the edge's health checks route around it, and the supervisor does not kill it.

A deliberate stop is told apart by `hold`: a held process is left alone, running or
not, until `release` (Mesh.stop_redis/start_redis and the other Mesh methods that stop
something on purpose hold it). Anything that dies without a hold, whatever killed
it, is started again.

Every change of state is written to a status file (JSON, replaced atomically), which
`python -m services.localmesh status` prints, and every restart is noted in the
process's own log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from services.localmesh import processes

log = logging.getLogger(__name__)

TAIL_LINES = 20  # lines of a given-up process's log kept in its reason


class State(StrEnum):
    RUNNING = "running"
    RESTARTING = "restarting"  # exited; waiting out its back-off
    STARTING = "starting"  # being started again
    HELD = "held"  # stopped or restarted on purpose: left alone until released
    FAILED = "failed"  # given up: exited soon after its start too many times in a row


class GaveUpError(RuntimeError):
    """The supervisor gave up on a process (the message says why)."""


@dataclass(frozen=True)
class SupervisionPolicy:
    """How often to look, how long to wait between restarts, when to give up."""

    poll_interval: float = 0.5
    first_backoff: float = 0.2
    max_backoff: float = 5.0
    # An exit sooner than this after the start is a quick exit; a process that ran
    # longer ran stably, which resets the back-off and the count of quick exits.
    quick_exit: float = 10.0
    give_up_after: int = 5  # quick exits in a row

    def backoff(self, quick_exits: int) -> float:
        """Delay before the next start, after `quick_exits` quick exits in a row."""
        doublings = max(0, quick_exits - 1)
        return min(self.max_backoff, self.first_backoff * 2.0**doublings)


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Watched:
    """How the supervisor sees one process."""

    name: str
    log_path: Path
    is_alive: Callable[[], bool]
    # Start it again; may wait until it is ready. Raises if it cannot start.
    start: Callable[[], None]
    pid: Callable[[], int | None]
    # How it ended, for logs: "was killed by SIGKILL", "exited with code 3".
    describe_exit: Callable[[], str]
    # Tidies up after a start that raised (stops what may be half-started).
    cleanup: Callable[[], object] = _nothing


def describe_returncode(code: int | None) -> str:
    """Popen's return code in words."""
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclass(frozen=True)
class ProcessStatus:
    """One row of the status: what `status` prints and the chaos tests read."""

    name: str
    state: State
    pid: int | None
    restarts: int  # starts by the supervisor (not deliberate restarts)
    last_exit: str | None  # how it ended last time, if it ever did
    reason: str | None  # why it was given up, with the end of its log
    log_path: str

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "state": self.state.value,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "reason": self.reason,
            "log": self.log_path,
        }

    @classmethod
    def from_json(cls, value: object) -> ProcessStatus:
        if not isinstance(value, dict):
            raise ValueError(f"not a process status: {value!r}")
        pid, restarts = value.get("pid"), value.get("restarts", 0)
        last_exit, reason = value.get("last_exit"), value.get("reason")
        return cls(
            name=str(value["name"]),
            state=State(value["state"]),
            pid=pid if isinstance(pid, int) else None,
            restarts=restarts if isinstance(restarts, int) else 0,
            last_exit=last_exit if isinstance(last_exit, str) else None,
            reason=reason if isinstance(reason, str) else None,
            log_path=str(value.get("log", "")),
        )


@dataclass
class _Entry:
    """The supervisor's record of one process; changed only under `lock`."""

    watched: Watched
    lock: threading.RLock = field(default_factory=threading.RLock)
    state: State = State.RUNNING
    # When the supervisor (or a release) last started it; None: started before it was
    # supervised, by a start-up that waited until it was ready, so it counts as stable.
    started_at: float | None = None
    restarts: int = 0
    quick_exits: int = 0
    next_start: float = 0.0
    last_exit: str | None = None
    reason: str | None = None
    checks: int = 0  # completed checks, for wait_for_checks

    def status(self) -> ProcessStatus:
        alive = self.state in (State.RUNNING, State.HELD) and self.watched.is_alive()
        return ProcessStatus(
            name=self.watched.name,
            state=self.state,
            pid=self.watched.pid() if alive else None,
            restarts=self.restarts,
            last_exit=self.last_exit,
            reason=self.reason,
            log_path=str(self.watched.log_path),
        )


class Supervisor:
    """Watches `watched` (all running when `start` is called) until `stop`.

    `healthy_check` lists what is still wrong beyond the processes themselves (the
    mesh: instances Envoy does not route to yet); `wait_until_healthy` waits for it.
    """

    def __init__(
        self,
        watched: Sequence[Watched],
        *,
        policy: SupervisionPolicy | None = None,
        status_file: Path | None = None,
        healthy_check: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        names = [w.name for w in watched]
        if len(set(names)) != len(names):
            raise ValueError(f"watched names must differ: {names}")
        self.policy = policy or SupervisionPolicy()
        self.status_file = status_file
        self._healthy_check = healthy_check
        self._entries = {w.name: _Entry(w) for w in watched}
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._status_lock = threading.Lock()

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            raise RuntimeError("the supervisor is already started")
        for entry in self._entries.values():
            if not entry.watched.is_alive():  # died before we looked: restart it
                entry.state, entry.last_exit = State.RESTARTING, entry.watched.describe_exit()
        self._write_status()
        for entry in self._entries.values():
            thread = threading.Thread(
                target=self._watch, args=(entry,), name=f"supervise-{entry.watched.name}"
            )
            thread.daemon = True  # never keeps the launcher alive; stop() joins them
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop watching (waits for a restart under way to finish: nothing is started
        after this returns). Processes are left as they are."""
        self._stopping.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    # --- what the supervisor sees -----------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def restarts(self, name: str) -> int:
        """How many times the supervisor has started `name` again."""
        return self._entry(name).restarts

    def status(self, name: str) -> ProcessStatus:
        return self._entry(name).status()

    def snapshot(self) -> list[ProcessStatus]:
        return [entry.status() for entry in self._entries.values()]

    def summary(self) -> str:
        """One line for the launcher's terminal: what is not simply running."""
        rows = self.snapshot()
        running = sum(row.state is State.RUNNING for row in rows)
        notes = [
            f"{row.name} {row.state.value}"
            + (
                f" ({row.restarts} restart{'s' if row.restarts != 1 else ''})"
                if row.restarts
                else ""
            )
            for row in rows
            if row.state is not State.RUNNING or row.restarts
        ]
        head = f"{running} of {len(rows)} running"
        return "; ".join([head, *notes])

    def wait_until_healthy(self, timeout: float = 60.0) -> None:
        """Wait until every process runs (none held, none restarting) and the
        `healthy_check` finds nothing wrong. Raises GaveUpError at once if the
        supervisor has given up on one, TimeoutError after `timeout` seconds."""

        def problems() -> list[str]:
            found: list[str] = []
            for name, entry in self._entries.items():
                if entry.state is State.FAILED:
                    raise GaveUpError(f"{name} was given up: {entry.reason}")
                if entry.state is not State.RUNNING:
                    found.append(f"{name} {entry.state.value}")
                elif not entry.watched.is_alive():
                    found.append(f"{name} has exited")
            if not found and self._healthy_check is not None:
                found.extend(self._healthy_check())
            return found

        processes.wait_until(problems, timeout, what="every process to run and be healthy")

    def wait_for_checks(self, rounds: int = 2, timeout: float = 30.0) -> None:
        """Wait until every process has been checked `rounds` more times: after it,
        the supervisor has seen (and acted on) whatever happened before the call."""
        targets = {name: entry.checks + rounds for name, entry in self._entries.items()}
        processes.wait_until(
            lambda: [name for name, entry in self._entries.items() if entry.checks < targets[name]],
            timeout,
            what="the supervisor to check every process",
        )

    # --- deliberate stops -------------------------------------------------------------

    def hold(self, name: str) -> None:
        """Leave `name` alone (it is about to be stopped or restarted on purpose) until
        `release`. Waits for a restart of it under way to finish first."""
        entry = self._entry(name)
        with entry.lock:
            entry.state = State.HELD
        self._write_status()

    def release(self, name: str) -> None:
        """Watch `name` again, as started now: running, or to be started if it is not."""
        entry = self._entry(name)
        with entry.lock:
            entry.started_at = time.monotonic()
            entry.quick_exits = 0
            entry.reason = None
            if entry.watched.is_alive():
                entry.state = State.RUNNING
            else:
                entry.state, entry.next_start = State.RESTARTING, time.monotonic()
        self._write_status()

    @contextlib.contextmanager
    def paused(self, name: str) -> Iterator[None]:
        """`hold` for the duration of a with-block, `release` after it."""
        self.hold(name)
        try:
            yield
        finally:
            self.release(name)

    def revive(self, name: str) -> None:
        """Try again a process the supervisor has given up on (a fresh count)."""
        entry = self._entry(name)
        with entry.lock:
            if entry.state is State.FAILED:
                entry.quick_exits, entry.reason = 0, None
                entry.state, entry.next_start = State.RESTARTING, time.monotonic()
        self._write_status()

    # --- the watch --------------------------------------------------------------------

    def _entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"not supervised: {name!r} (supervised: {list(self._entries)})"
            ) from None

    def _watch(self, entry: _Entry) -> None:
        while not self._stopping.wait(self.policy.poll_interval):
            try:
                with entry.lock:
                    self._check(entry)
            except Exception:
                # A bug here must not end the watch of this process for good.
                log.exception("supervising %s", entry.watched.name)
            entry.checks += 1

    def _check(self, entry: _Entry) -> None:
        if entry.state is State.RUNNING and not entry.watched.is_alive():
            self._exited(entry, entry.watched.describe_exit())
        if (
            entry.state is State.RESTARTING
            and time.monotonic() >= entry.next_start
            and not self._stopping.is_set()
        ):
            self._restart(entry)

    def _exited(self, entry: _Entry, how: str, *, failed_start: bool = False) -> None:
        name, policy = entry.watched.name, self.policy
        ran = None if entry.started_at is None else time.monotonic() - entry.started_at
        entry.last_exit = how
        # A start that failed never ran at all, however long the attempt took.
        quick = failed_start or (ran is not None and ran < policy.quick_exit)
        entry.quick_exits = entry.quick_exits + 1 if quick else 0
        if entry.quick_exits >= policy.give_up_after:
            entry.state = State.FAILED
            entry.reason = (
                f"it {how}; it ended within {policy.quick_exit:g} s of its start "
                f"{entry.quick_exits} times in a row. End of {entry.watched.log_path}:\n"
                f"{processes.log_tail(entry.watched.log_path, TAIL_LINES)}"
            )
            log.error("%s: giving up (the rest keeps running): %s", name, entry.reason)
            processes.append_to_log(
                entry.watched.log_path,
                f"supervisor: gave up on {name} after {entry.quick_exits} quick exits in a row",
            )
        else:
            delay = policy.backoff(entry.quick_exits)
            entry.state, entry.next_start = State.RESTARTING, time.monotonic() + delay
            after = f" {ran:.1f} s after its start" if ran is not None else ""
            log.warning(
                "%s %s%s; restarting it in %.1f s (restart %d)",
                name,
                how,
                after,
                delay,
                entry.restarts + 1,
            )
        self._write_status()

    def _restart(self, entry: _Entry) -> None:
        name = entry.watched.name
        entry.restarts += 1
        entry.state, entry.started_at = State.STARTING, time.monotonic()
        self._write_status()
        processes.append_to_log(
            entry.watched.log_path,
            f"supervisor: restart {entry.restarts} of {name} (it {entry.last_exit})",
        )
        try:
            entry.watched.start()
        except Exception as error:
            with contextlib.suppress(Exception):
                entry.watched.cleanup()
            first_line = (str(error).splitlines() or [type(error).__name__])[0]
            self._exited(entry, f"failed to start ({first_line})", failed_start=True)
            return
        entry.state = State.RUNNING
        log.warning("%s restarted, pid %s (restart %d)", name, entry.watched.pid(), entry.restarts)
        self._write_status()

    def _write_status(self) -> None:
        if self.status_file is None:
            return
        with self._status_lock:
            write_status(self.status_file, self.snapshot())


# --- the status file ------------------------------------------------------------------


def write_status(path: Path, rows: Sequence[ProcessStatus]) -> None:
    """Replace the status file atomically (a reader never sees half of it)."""
    launcher = os.getpid()
    document = {
        "updated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "launcher": {"pid": launcher, "start_time": processes.start_time(launcher)},
        "processes": [row.to_json() for row in rows],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n")
    temporary.replace(path)


@dataclass(frozen=True)
class StatusReport:
    """A status file as read back: is its launcher still running, and the rows."""

    updated: str
    launcher_pid: int | None
    launcher_running: bool
    rows: tuple[ProcessStatus, ...]


def read_status(path: Path) -> StatusReport | None:
    """The status file at `path`, or None if there is none."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    launcher = document.get("launcher") or {}
    pid = launcher.get("pid")
    started = launcher.get("start_time")
    running = isinstance(pid, int) and started is not None and processes.start_time(pid) == started
    return StatusReport(
        updated=str(document.get("updated", "?")),
        launcher_pid=pid if isinstance(pid, int) else None,
        launcher_running=running,
        rows=tuple(ProcessStatus.from_json(row) for row in document.get("processes", [])),
    )


def render_status(report: StatusReport) -> str:
    """The status as a table, the reasons of given-up processes below it."""
    header = ("PROCESS", "PID", "STATE", "RESTARTS", "LAST EXIT")
    table = [header] + [
        (
            row.name,
            str(row.pid) if row.pid is not None else "-",
            row.state.value,
            str(row.restarts),
            row.last_exit or "-",
        )
        for row in report.rows
    ]
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]
    if report.launcher_running:
        lines.insert(0, f"launcher pid {report.launcher_pid}, status of {report.updated}")
    else:
        lines.insert(
            0,
            f"the launcher (pid {report.launcher_pid}) is not running: "
            f"its last status, of {report.updated}",
        )
    for row in report.rows:
        if row.reason:
            lines.append(f"\n{row.name} was given up (a new `make run` tries again): {row.reason}")
    return "\n".join(lines)
