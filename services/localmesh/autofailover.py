"""A highly available PostgreSQL on this machine: a pg_auto_failover formation (Debian's
`postgresql-15-auto-failover`) of a monitor, a primary and a synchronous standby, each
run by `pg_autoctl ... --run` (which keeps its Postgres up and follows the monitor).
Used for a ledger database that must survive losing its primary
(services/transaction/SHARDS.md); the services reach it by a URL listing both nodes with
`target_session_attrs=read-write`, which connects to whichever is primary.

Loopback only, `trust` authentication, no TLS: a local formation for tests and
development, like the mesh's other servers. As root, everything runs as the `postgres`
OS account (PostgreSQL refuses root), in a folder that account owns."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from services.localmesh.postgres import SERVER_USER, PostgresError, find_bin_dir
from services.localmesh.processes import wait_until

LOOPBACK = "127.0.0.1"
_NODES = ("node_1", "node_2")
_MONITOR_DB = "pg_auto_failover"
# How long a formation may take to form, or to fail over (pg_auto_failover's own
# timeouts put a failover at 10-30 s).
FORM_TIMEOUT = 120.0
FAILOVER_TIMEOUT = 90.0
_FAILOVER_TRIES = 3


def find_pg_autoctl() -> str:
    path = shutil.which("pg_autoctl")
    if path is None:
        raise PostgresError(
            "pg_autoctl not found: apt-get install postgresql-15-auto-failover"
            " (scripts/ensure-system-deps.sh installs it)"
        )
    return path


class Formation:
    """A monitor on `ports[0]` and two nodes on `ports[1]` and `ports[2]`."""

    def __init__(self, ports: tuple[int, int, int]) -> None:
        self.ports = ports
        self._root = Path(tempfile.mkdtemp(prefix="wallet-autofailover-"))
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        # pg_autoctl's own folders (XDG: <root>/pg_autoctl/<pgdata>), made here, whole:
        # its processes make them at once and one fails on the other's ("File exists").
        made = [self._root]
        for folder in ("config", "data", "run"):
            for name in ("monitor", *_NODES):
                path = self._root / folder / "pg_autoctl" / str(self._root / name).lstrip("/")
                path.mkdir(mode=0o700, parents=True)
            made += [p for p in (self._root / folder).rglob("*") if p.is_dir()]
            made.append(self._root / folder)
        if os.geteuid() == 0:
            for path in made:
                shutil.chown(path, SERVER_USER)

    # --- addresses --------------------------------------------------------------------

    def url(self, database: str) -> str:
        """SQLAlchemy URL of `database` on whichever node is primary."""
        hosts = ",".join(LOOPBACK for _ in _NODES)
        ports = ",".join(str(port) for port in self.ports[1:])
        return (
            f"postgresql+psycopg://{SERVER_USER}@/{database}"
            f"?host={hosts}&port={ports}&target_session_attrs=read-write"
        )

    def conninfo(self, database: str) -> str:
        return (
            f"host={','.join(LOOPBACK for _ in _NODES)}"
            f" port={','.join(str(port) for port in self.ports[1:])}"
            f" user={SERVER_USER} dbname={database} target_session_attrs=read-write"
        )

    # --- life -------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the monitor, then the nodes one after the other (the first becomes
        primary), and waits until one is primary and the other its secondary."""
        monitor_url = (
            f"postgres://autoctl_node@{LOOPBACK}:{self.ports[0]}/{_MONITOR_DB}?sslmode=disable"
        )
        self._run("monitor", ["create", "monitor", "--pgport", str(self.ports[0])])
        wait_until(self._monitor_problems, FORM_TIMEOUT, what="the pg_auto_failover monitor")
        for count, (name, port) in enumerate(zip(_NODES, self.ports[1:], strict=True), 1):
            self._run(
                name,
                [
                    "create",
                    "postgres",
                    "--pgport",
                    str(port),
                    "--name",
                    name,
                    "--monitor",
                    monitor_url,
                ],
            )
            wait_until(self._formed_with(count), FORM_TIMEOUT, what=f"{name} in the formation")

    def _run(self, name: str, arguments: list[str]) -> None:
        pgdata = self._root / name
        command = [
            find_pg_autoctl(),
            *arguments,
            "--pgdata",
            str(pgdata),
            "--hostname",
            LOOPBACK,
            "--auth",
            "trust",
            "--no-ssl",
            "--run",
        ]
        log = (self._root / f"{name}.log").open("ab")
        self._processes[name] = subprocess.Popen(
            self._as_server_user(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._environment(),
            cwd=self._root,
            start_new_session=True,
        )

    def _environment(self) -> dict[str, str]:
        # pg_autoctl keeps its state under XDG folders: ours, not the account's home.
        return {
            "PATH": f"{find_bin_dir()}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "XDG_CONFIG_HOME": str(self._root / "config"),
            "XDG_DATA_HOME": str(self._root / "data"),
            "XDG_RUNTIME_DIR": str(self._root / "run"),
            "HOME": str(self._root),
            "LANG": "C.UTF-8",
        }

    def _as_server_user(self, command: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return command
        environment = [f"{key}={value}" for key, value in self._environment().items()]
        return ["runuser", "-u", SERVER_USER, "--", "env", *environment, *command]

    def _autoctl(self, *arguments: str) -> str:
        result = subprocess.run(
            self._as_server_user(
                [find_pg_autoctl(), *arguments, "--pgdata", str(self._root / "monitor")]
            ),
            capture_output=True,
            text=True,
            env=self._environment(),
            cwd=self._root,
            timeout=FAILOVER_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            raise PostgresError(f"pg_autoctl {' '.join(arguments)}: {result.stderr.strip()}")
        return result.stdout

    def _monitor_problems(self) -> list[str]:
        self._check_running()
        try:
            self._autoctl("show", "state", "--json")
        except PostgresError as error:
            return [str(error)]
        return []

    def nodes(self) -> list[dict[str, object]]:
        """The monitor's view of each node (name, port, reported and assigned state)."""
        shown = json.loads(self._autoctl("show", "state", "--json") or "[]")
        return [node for node in shown if isinstance(node, dict)]

    def _formed_problems(self, expected: int = len(_NODES)) -> list[str]:
        self._check_running()
        try:
            nodes = self.nodes()
        except (PostgresError, ValueError) as error:
            return [str(error)]
        states = sorted(str(n.get("current_group_state")) for n in nodes)
        settled = all(n.get("current_group_state") == n.get("assigned_group_state") for n in nodes)
        wanted = ["single"] if expected == 1 else ["primary", "secondary"]
        if len(nodes) != expected or states != wanted or not settled:
            return [f"nodes: {[(n.get('nodename'), n.get('reported_state')) for n in nodes]}"]
        return []

    def _formed_with(self, count: int) -> Callable[[], list[str]]:
        return lambda: self._formed_problems(expected=count)

    def primary_port(self) -> int:
        [primary] = [n for n in self.nodes() if n.get("current_group_state") == "primary"]
        return int(str(primary["nodeport"]))

    def failover(self) -> None:
        """Has the monitor promote the secondary, and waits until the old primary is its
        secondary (`pg_autoctl perform failover`)."""
        before = self.primary_port()
        for attempt in range(1, _FAILOVER_TRIES + 1):
            try:
                self._autoctl("perform", "failover")
                break
            except PostgresError as error:
                # The monitor's own transactions can deadlock with a node's report
                # (seen here: "Monitor ERROR: deadlock detected"); the order is then
                # not given, and giving it again is what pg_autoctl's user would do.
                if "deadlock detected" not in str(error) or attempt == _FAILOVER_TRIES:
                    raise
        wait_until(
            lambda: (
                self._formed_problems()
                or ([] if self.primary_port() != before else ["the primary did not change"])
            ),
            FAILOVER_TIMEOUT,
            what="the failover",
        )

    def crash_primary(self) -> None:
        """Kills the primary's node (its pg_autoctl and Postgres, SIGKILL: a crash, not a
        switchover) and waits until the monitor has promoted the other, which then
        takes writes alone (`wait_primary`: nothing to replicate to) — pg_auto_failover's
        health checks take 20-30 s to decide."""
        before = self.primary_port()
        name = next(n for n, port in zip(_NODES, self.ports[1:], strict=True) if port == before)
        process = self._processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

        def promoted() -> list[str]:
            self._check_running()
            nodes = {int(str(n["nodeport"])): n for n in self.nodes()}
            other = next(port for port in self.ports[1:] if port != before)
            state = nodes[other].get("current_group_state")
            return [] if state in ("wait_primary", "primary") else [f"the other node: {state}"]

        wait_until(promoted, FAILOVER_TIMEOUT, what="the standby's promotion")

    def _check_running(self) -> None:
        for name, process in self._processes.items():
            if process.poll() is not None:
                log = (self._root / f"{name}.log").read_text(errors="replace")[-2000:]
                raise PostgresError(f"pg_autoctl of {name} exited {process.returncode}: {log}")

    def destroy(self) -> None:
        """Stops every pg_autoctl (each stops its Postgres) and deletes the folder."""
        for process in reversed(list(self._processes.values())):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self._processes.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        shutil.rmtree(self._root, ignore_errors=True)
