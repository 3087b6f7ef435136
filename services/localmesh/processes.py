"""Child processes of the local mesh, and the readiness checks that wait for them.

Every child runs in its own session (its own process group), so that a Ctrl-C in the
terminal reaches only the launcher, which then stops the children in order, and so that
stopping a child also stops anything it spawned. Output goes to a log file per child:
a terminal shared by a dozen processes is unreadable.

Readiness is always polled against a deadline; a fixed sleep is never used to wait for
something to be up.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shlex
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Pause between two readiness probes: short enough to add little start-up latency.
POLL_INTERVAL = 0.1


class ProcessError(RuntimeError):
    """A child process failed or exited early; the message carries the end of its log."""


class ManagedProcess:
    """One child process: started in its own session, output appended to `log_path`.

    The object can be started again after it has exited (to restart a killed service
    instance on the same port). With `pid_file`, the pid and the kernel's start time of
    the process are recorded, so that a later launcher can stop a child orphaned by a
    crash (see `reap_stale`).
    """

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        pid_file: Path | None = None,
    ) -> None:
        self.name = name
        self.args = tuple(args)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.pid_file = pid_file
        self._popen: subprocess.Popen[bytes] | None = None
        # What this process wrote into pid_file: only that very record is ever removed,
        # never the record of a replacement started meanwhile on the same file.
        self._pid_record: str | None = None

    def start(self) -> None:
        """Start the process; it must not be running already."""
        if self.is_running:
            raise ProcessError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(_banner(f"starting {self.name}: {shlex.join(self.args)}"))
            log.flush()

            def spawn() -> subprocess.Popen[bytes]:
                return subprocess.Popen(
                    self.args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                )

            spawning = _spawner().submit(spawn)
            try:
                popen = spawning.result()
            except BaseException:
                # Interrupted (Ctrl-C) while the child was forked: keep hold of it, so
                # that stopping the mesh stops it too, instead of orphaning it.
                if spawning.exception() is None:
                    self._popen = spawning.result()
                raise
        self._popen = popen
        if self.pid_file is not None:
            self._pid_record = write_pid_file(self.pid_file, popen.pid)

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen is not None else None

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit; raises subprocess.TimeoutExpired."""
        if self._popen is None:
            raise ProcessError(f"{self.name} was never started")
        return self._popen.wait(timeout)

    def terminate(self, grace: float = 10.0) -> int | None:
        """SIGTERM the process group, then SIGKILL it if still alive after `grace` seconds.

        Returns the exit code, or None if the process was never started.
        """
        if self._popen is None:
            return None
        # Signal only while the leader is unreaped: its pid (the group id) cannot have
        # been reused by another process until then.
        if self._popen.poll() is None:
            _signal_group(self._popen.pid, signal.SIGTERM)
            try:
                self._popen.wait(grace)
            except subprocess.TimeoutExpired:
                _signal_group(self._popen.pid, signal.SIGKILL)
                self._popen.wait()
        self._forget_pid_file()
        return self._popen.returncode

    def kill(self) -> None:
        """SIGKILL the process group at once (a crash, for failure tests) and reap it."""
        if self._popen is None:
            return
        if self._popen.poll() is None:
            _signal_group(self._popen.pid, signal.SIGKILL)
            self._popen.wait()
        self._forget_pid_file()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the log, for error messages."""
        return log_tail(self.log_path, lines)

    def check_alive(self) -> None:
        """Raise ProcessError (with the log's tail) if the process has exited."""
        code = self.returncode
        if code is not None:
            raise ProcessError(
                f"{self.name} exited with code {code}; end of {self.log_path}:\n{self.log_tail()}"
            )

    def _forget_pid_file(self) -> None:
        """Remove the pid file if it still holds this process's record (not a successor's)."""
        if self.pid_file is None or self._pid_record is None:
            return
        with contextlib.suppress(FileNotFoundError):
            if self.pid_file.read_text() == self._pid_record:
                self.pid_file.unlink(missing_ok=True)
        self._pid_record = None


@functools.cache
def _spawner() -> ThreadPoolExecutor:
    """The one thread that forks every child, and lives as long as the launcher.

    A child that asks to be signalled when its parent dies (Envoy sets PR_SET_PDEATHSIG)
    is signalled on Linux when the *thread* that forked it ends: forked by a thread of
    the supervisor, it would be stopped with that thread.
    """
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="localmesh-spawner")


def terminate_all(processes: Sequence[ManagedProcess], grace: float = 10.0) -> None:
    """Stop several processes at once: SIGTERM to all, then SIGKILL whatever still runs
    after `grace` seconds. Stopping them one by one would add up their grace periods."""
    for process in processes:
        if process.is_running and process.pid is not None:
            _signal_group(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            if process.is_running:
                process.wait(max(0.0, deadline - time.monotonic()))
        process.terminate(grace=0)


def run_to_completion(
    name: str,
    args: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 300.0,
) -> None:
    """Run a one-shot command (a migration, say) with its output appended to `log_path`.

    Raises ProcessError with the end of the log if it fails or runs out of time.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(_banner(f"running {name}: {shlex.join(args)}"))
        log.flush()
        try:
            result = subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                timeout=timeout,
                check=False,
                start_new_session=True,  # like every child: Ctrl-C reaches the launcher only
            )
        except subprocess.TimeoutExpired:
            raise ProcessError(
                f"{name} did not finish in {timeout:.0f} s; end of {log_path}:\n"
                f"{log_tail(log_path)}"
            ) from None
    if result.returncode != 0:
        raise ProcessError(
            f"{name} failed with code {result.returncode}; end of {log_path}:\n{log_tail(log_path)}"
        )


def log_tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file ("" if there is none)."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 64 * 1024))
            data = log.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


# --- orphans of a crashed launcher ----------------------------------------------------


def write_pid_file(path: Path, pid: int) -> str:
    """Record `pid` with its start time, which tells it apart from a later reuse of the pid.

    Written under a temporary name and renamed, so a reader never sees half a record.
    Returns the record written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    record = f"{pid} {start_time(pid) or '-'}\n"
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temporary.write_text(record)
    temporary.replace(path)
    return record


def reap_stale(pid_file: Path, grace: float = 10.0) -> bool:
    """Stop the process group recorded in `pid_file` if that very process still runs.

    A launcher killed with SIGKILL leaves its children running, holding their ports. The
    recorded start time must match, so an unrelated process that got the same pid later
    is never touched. Returns True if something was stopped. Needs /proc (Linux);
    elsewhere it only removes the file.
    """
    try:
        pid_text, _, started = pid_file.read_text().strip().partition(" ")
        pid = int(pid_text)
    except (FileNotFoundError, ValueError):
        pid_file.unlink(missing_ok=True)
        return False
    stopped = False
    if started not in ("", "-") and start_time(pid) == started:
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while start_time(pid) == started and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL)
        if start_time(pid) == started:
            _signal_group(pid, signal.SIGKILL)
        stopped = True
    pid_file.unlink(missing_ok=True)
    return stopped


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks); None if not running.

    A pid with the same start time is the same process: pids are reused, start times
    of one pid are not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after it.
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] == "Z":
        return None
    return fields[19]


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group led by `pid` (every child runs in its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def append_to_log(path: Path, text: str) -> None:
    """Append a dated line to a process's log (the supervisor notes its restarts there)."""
    with contextlib.suppress(OSError), path.open("ab") as log:
        log.write(_banner(text))


def _banner(text: str) -> bytes:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"\n=== {stamp} {text}\n".encode()


# --- ports and readiness --------------------------------------------------------------

_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the kernel picks it).

    Never returns the same port twice in one process, so the ports of one mesh differ
    even if the kernel offers a port again before the first user has bound it.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_for_grpc_health(
    address: str,
    service: str,
    timeout: float = 60.0,
    *,
    process: ManagedProcess | None = None,
) -> None:
    """Poll the standard gRPC health service at `address` until `service` is SERVING.

    Fails at once (with the log's tail) if `process` exits meanwhile, and with
    TimeoutError after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    # Short reconnect back-off: the default (1 s, growing) would add seconds to start-up.
    options = [
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 500),
    ]
    with grpc.insecure_channel(address, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        while True:
            if process is not None:
                process.check_alive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"{address} did not report {service!r} SERVING within {timeout:.0f} s "
                    f"(last: {last})"
                )
            try:
                response = stub.Check(request, timeout=min(1.0, remaining))
                status = int(response.status)
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            except grpc.RpcError as error:
                last = f"{error.code().name}: {error.details()}"
            time.sleep(POLL_INTERVAL)


def grpc_health(address: str, service: str, timeout: float = 2.0) -> str:
    """One health check of `service` at `address`: "SERVING", another status's name, or
    the error that came instead of an answer."""
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as error:
            return f"{error.code().name}: {error.details()}"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(int(response.status)))


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET `url` without any proxy (a developer's http_proxy must not capture loopback).

    Returns the status and body for any HTTP answer, raises OSError if none came.
    """
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an HTTP URL: {url}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_for_http(
    url: str,
    timeout: float = 60.0,
    *,
    expect_status: int = 200,
    process: ManagedProcess | None = None,
) -> bytes:
    """Poll `url` until it answers `expect_status`; returns that answer's body."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        if process is not None:
            process.check_alive()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                f"{url} did not answer {expect_status} within {timeout:.0f} s ({last})"
            )
        try:
            status, body = http_get(url, timeout=min(2.0, remaining))
            if status == expect_status:
                return body
            last = f"HTTP {status}"
        except OSError as error:
            last = str(error)
        time.sleep(POLL_INTERVAL)


def http_get_json(url: str, timeout: float = 2.0) -> object:
    """GET `url` and decode its JSON body (raises ProcessError unless the status is 200)."""
    status, body = http_get(url, timeout)
    if status != 200:
        raise ProcessError(f"{url} answered HTTP {status}")
    decoded: object = json.loads(body)
    return decoded


def wait_until(
    problems: Callable[[], Sequence[str]],
    timeout: float,
    *,
    what: str,
    process: ManagedProcess | None = None,
    interval: float = POLL_INTERVAL,
) -> None:
    """Poll `problems` every `interval` s until it returns nothing (all is well), for at
    most `timeout` s.

    The TimeoutError names what was still wrong at the last poll.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None:
            process.check_alive()
        try:
            last = list(problems())
        except (OSError, ValueError, ProcessError) as error:
            last = [str(error)]
        if not last:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}; still: {'; '.join(last)}")
        time.sleep(interval)
