"""A private Redis for `make run` and the tests.

Redis runs as a child process of the launcher (never the system service), on loopback,
without persistence: it only holds rate-limit buckets and caches, which may be lost. It
can be stopped and started again on the same port, which is how the failure tests check
that the services survive a Redis outage.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.localmesh.processes import POLL_INTERVAL, ManagedProcess, reap_stale

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0  # seconds to wait for the first PING answer


class RedisError(RuntimeError):
    """redis-server could not be found or started."""


def find_redis_server() -> str:
    """Path of redis-server, from PATH."""
    path = shutil.which("redis-server")
    if path is None:
        raise RedisError("redis-server not found: run scripts/ensure-system-deps.sh")
    return path


class RedisServer:
    """A redis-server on 127.0.0.1:`port`, with its log and pid file in `base_dir`."""

    def __init__(self, base_dir: Path, port: int) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.port = port
        self.log_file = self.base_dir / "redis.log"
        self._pid_file = self.base_dir / "redis.pid"
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.is_running

    @property
    def pid(self) -> int | None:
        """The process id of the last redis-server started (fault tests pause it with SIGSTOP)."""
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """The exit code of the last redis-server started (None: running or never started)."""
        return self._process.returncode if self._process is not None else None

    def start(self) -> None:
        """Start redis-server and wait until it answers PING."""
        if self.is_running:
            return
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.reap_orphan()
        self._process = ManagedProcess(
            "redis-server",
            [
                find_redis_server(),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.base_dir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--logfile",
                "",  # stdout, which goes to the log file
            ],
            log_path=self.log_file,
            cwd=self.base_dir,
            pid_file=self._pid_file,
        )
        self._process.start()
        try:
            self._wait_until_ready(self._process)
        except BaseException:
            self._process.terminate(grace=5)
            raise

    def reap_orphan(self) -> None:
        """Stop a Redis of this folder left running by a launcher that was killed: it
        would hold the port. (Only that very process: its pid file records its start.)"""
        if not self.is_running and reap_stale(self._pid_file):
            log.warning("stopped a Redis left running by an earlier launcher")

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (Redis shuts down at once without persistence), SIGKILL after `grace`."""
        if self._process is not None:
            self._process.terminate(grace)

    def _wait_until_ready(self, process: ManagedProcess) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        # No client-side retries: each poll is one short attempt, and the loop checks
        # between polls whether redis-server died (a busy port, say).
        client = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_connect_timeout=1,
            socket_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )
        last = "no answer yet"
        with contextlib.closing(client):
            while time.monotonic() < deadline:
                process.check_alive()
                try:
                    if client.ping():
                        return
                except redis.RedisError as error:
                    last = str(error)
                time.sleep(POLL_INTERVAL)
        raise RedisError(f"Redis on port {self.port} did not answer PING in time ({last})")
