"""The launcher's supervisor: what exits is started again, what keeps exiting at once is
given up, a deliberate stop is left alone. Real processes on free loopback ports: a
supervised mesh (one instance per service) shared by this module's mesh tests, and
small shell processes for the rules themselves."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import psycopg
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.localmesh.mesh import RECORD_FILE, Mesh, MeshConfig, MeshError, watched_process
from services.localmesh.processes import ManagedProcess
from services.localmesh.supervisor import (
    GaveUpError,
    State,
    SupervisionPolicy,
    Supervisor,
    Watched,
    read_status,
)
from tests.eventually import eventually

REPO_ROOT = Path(__file__).resolve().parents[2]
# Generous: the machine running the tests may be busy.
RECOVERY_TIMEOUT = 120.0
# Fast enough for a test, same shape as the default.
FAST = SupervisionPolicy(poll_interval=0.05, first_backoff=0.05, max_backoff=0.4)


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    # Polled often: the fast policy restarts within 0.05 s.
    eventually(condition, what, timeout, interval=0.05)


def _pid_in(pid_file: Path) -> int:
    return int(pid_file.read_text().split()[0])


def _status_row(mesh: Mesh, name: str) -> dict[str, object]:
    document = json.loads(mesh.status_path.read_text())
    rows = {row["name"]: row for row in document["processes"]}
    row: dict[str, object] = rows[name]
    return row


def _command_env(run_dir: Path) -> dict[str, str]:
    """The environment of a developer who only says which run folder: no port variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    return {**env, "WALLET_RUN_DIR": str(run_dir), "PYTHONPATH": str(REPO_ROOT)}


def _register(mesh: Mesh, email: str) -> httpx.Response:
    with httpx.Client(base_url=mesh.edge_url, timeout=10) as rest:
        return rest.post(
            "/v1/users",
            json={"email": email, "password": "correct horse battery", "display_name": "Ada"},
        )


def _localmesh(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.localmesh", *args],
        env=_command_env(run_dir),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


# --- the rules, on small processes ----------------------------------------------------


def _shell(tmp_path: Path, name: str, script: str) -> ManagedProcess:
    return ManagedProcess(
        name,
        ["/bin/sh", "-c", script],
        log_path=tmp_path / f"{name}.log",
        pid_file=tmp_path / f"{name}.pid",
    )


def _watched(process: ManagedProcess) -> Watched:
    return watched_process(process, stop_grace=1)


@pytest.fixture
def started() -> Iterator[list[ManagedProcess | Supervisor]]:
    """Supervisors and processes a test starts; stopped afterwards, supervisors first."""
    things: list[ManagedProcess | Supervisor] = []
    yield things
    for thing in things:
        if isinstance(thing, Supervisor):
            thing.stop()
    for thing in things:
        if isinstance(thing, ManagedProcess):
            thing.terminate(grace=1)


def test_backoff_doubles_from_the_first_delay_up_to_the_cap() -> None:
    policy = SupervisionPolicy(first_backoff=0.2, max_backoff=3.0)
    assert [policy.backoff(n) for n in range(7)] == [0.2, 0.2, 0.4, 0.8, 1.6, 3.0, 3.0]


def test_a_process_that_exits_at_once_every_time_is_given_up_and_the_rest_keeps_running(
    tmp_path: Path, started: list[ManagedProcess | Supervisor]
) -> None:
    broken = _shell(tmp_path, "broken", "echo 'cannot read /etc/wallet.conf'; exit 3")
    steady = _shell(tmp_path, "steady", "exec sleep 600")
    started += [broken, steady]
    steady.start()
    broken.start()
    steady_pid = steady.pid
    status_file = tmp_path / "status.json"
    supervisor = Supervisor(
        [_watched(broken), _watched(steady)], policy=FAST, status_file=status_file
    )
    started.append(supervisor)
    supervisor.start()

    _wait_for(lambda: supervisor.status("broken").state is State.FAILED, "broken to be given up")

    broken_status = supervisor.status("broken")
    # Its first run was not the supervisor's start: five restarts, each exiting at once.
    assert broken_status.restarts == FAST.give_up_after
    assert broken_status.last_exit == "exited with code 3"
    assert broken_status.reason is not None
    assert "5 times in a row" in broken_status.reason
    assert "cannot read /etc/wallet.conf" in broken_status.reason  # the end of its log
    assert "gave up on broken" in broken.log_tail()
    steady_status = supervisor.status("steady")
    assert (steady_status.state, steady_status.restarts, steady_status.pid) == (
        State.RUNNING,
        0,
        steady_pid,
    )
    report = read_status(status_file)
    assert report is not None
    assert report.launcher_running
    rows = {row.name: row for row in report.rows}
    assert rows["broken"].state is State.FAILED
    assert rows["broken"].reason == broken_status.reason
    with pytest.raises(GaveUpError, match="broken was given up"):
        supervisor.wait_until_healthy(timeout=10)

    supervisor.revive("broken")
    _wait_for(
        lambda: supervisor.restarts("broken") > broken_status.restarts, "broken to be tried again"
    )


def test_a_process_that_ran_stably_restarts_after_the_first_delay_again(
    tmp_path: Path, started: list[ManagedProcess | Supervisor]
) -> None:
    flaky = _shell(tmp_path, "flaky", "exec sleep 600")
    started.append(flaky)
    flaky.start()
    policy = dataclasses.replace(FAST, quick_exit=0.0, give_up_after=2)  # every run is stable
    supervisor = Supervisor([_watched(flaky)], policy=policy)
    started.append(supervisor)
    supervisor.start()

    for restart in (1, 2, 3):  # more than give_up_after: none of them was quick
        pid = flaky.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

        def restarted(times: int = restart) -> bool:
            return supervisor.restarts("flaky") == times

        _wait_for(restarted, f"restart {restart}")
        supervisor.wait_until_healthy(timeout=30)
        assert supervisor.status("flaky").last_exit == "was killed by SIGKILL"
    assert supervisor.status("flaky").state is State.RUNNING


def test_a_held_process_is_left_stopped_until_released(
    tmp_path: Path, started: list[ManagedProcess | Supervisor]
) -> None:
    server = _shell(tmp_path, "server", "exec sleep 600")
    started.append(server)
    server.start()
    supervisor = Supervisor([_watched(server)], policy=FAST)
    started.append(supervisor)
    supervisor.start()

    supervisor.hold("server")
    server.terminate(grace=1)
    supervisor.wait_for_checks(rounds=5)

    assert not server.is_running
    assert supervisor.status("server").state is State.HELD
    assert supervisor.restarts("server") == 0

    server.start()
    supervisor.release("server")
    supervisor.wait_until_healthy(timeout=30)
    assert supervisor.restarts("server") == 0


def test_a_stale_process_object_never_removes_its_successors_pid_file(tmp_path: Path) -> None:
    first = _shell(tmp_path, "service", "exec sleep 600")
    first.start()
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)
    _wait_for(lambda: not first.is_running, "the first process to die")
    successor = _shell(tmp_path, "service", "exec sleep 600")  # same pid file
    successor.start()
    try:
        first.terminate(grace=1)  # how the dead one is tidied up
        first.kill()

        assert successor.pid_file is not None
        assert _pid_in(successor.pid_file) == successor.pid
    finally:
        successor.terminate(grace=1)
    assert successor.pid_file is not None
    assert not successor.pid_file.exists()


# --- a supervised mesh ----------------------------------------------------------------


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    config = dataclasses.replace(
        MeshConfig.for_tests(tmp_path_factory.mktemp("supervised"), instances=1),
        supervise=True,
    )
    with Mesh(config) as running:
        yield running


@pytest.fixture
def healthy_mesh(mesh: Mesh) -> Mesh:
    """The module's mesh, every process running and routed (as each test leaves it)."""
    mesh.supervisor.wait_until_healthy(RECOVERY_TIMEOUT)
    return mesh


def test_a_killed_instance_is_restarted_on_its_port_and_routed_again(healthy_mesh: Mesh) -> None:
    mesh = healthy_mesh
    process = mesh.instance("transaction", 0)
    old_pid = process.pid
    assert old_pid is not None
    before = mesh.supervisor.restarts("transaction-1")

    os.kill(old_pid, signal.SIGKILL)
    _wait_for(lambda: mesh.supervisor.restarts("transaction-1") == before + 1, "the restart")
    mesh.supervisor.wait_until_healthy(RECOVERY_TIMEOUT)  # Envoy routes to it again

    new_pid = process.pid
    assert new_pid is not None
    assert new_pid != old_pid
    assert process.pid_file is not None
    assert _pid_in(process.pid_file) == new_pid
    with grpc.insecure_channel(mesh.instance_addresses("transaction")[0]) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING  # on the same port
    row = _status_row(mesh, "transaction-1")
    assert (row["state"], row["pid"], row["restarts"]) == ("running", new_pid, before + 1)
    assert row["last_exit"] == "was killed by SIGKILL"
    assert f"restart {before + 1} of transaction-1" in process.log_tail()

    shown = _localmesh(mesh.run_dir, "status")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    line = next(line for line in shown.stdout.splitlines() if line.startswith("transaction-1"))
    assert line.split()[:4] == ["transaction-1", str(new_pid), "running", str(before + 1)]


def test_killed_redis_is_restarted_on_its_port(healthy_mesh: Mesh) -> None:
    mesh = healthy_mesh
    old_pid = mesh.redis.pid
    assert old_pid is not None
    before = mesh.supervisor.restarts("redis")

    os.kill(old_pid, signal.SIGKILL)
    _wait_for(lambda: mesh.supervisor.restarts("redis") == before + 1, "the restart")
    mesh.supervisor.wait_until_healthy(RECOVERY_TIMEOUT)

    assert mesh.redis.pid not in (None, old_pid)
    client = redis.Redis.from_url(mesh.redis.url, socket_connect_timeout=5)
    try:
        assert client.ping()
    finally:
        client.close()


def test_a_killed_postmaster_is_restarted_and_the_services_serve_again(
    healthy_mesh: Mesh,
) -> None:
    mesh = healthy_mesh
    old_pid = mesh.postgres.postmaster_pid()
    assert old_pid is not None
    before = mesh.supervisor.restarts("postgres")

    os.kill(old_pid, signal.SIGKILL)
    _wait_for(lambda: mesh.supervisor.restarts("postgres") == before + 1, "the restart", 120)
    # Every service's health follows its database: routed again means serving again.
    mesh.supervisor.wait_until_healthy(RECOVERY_TIMEOUT)

    assert mesh.postgres.postmaster_pid() not in (None, old_pid)
    created = _register(mesh, "after-postgres-restart@example.com")
    assert created.status_code == 200, created.text


def test_a_killed_envoy_is_restarted(healthy_mesh: Mesh) -> None:
    mesh = healthy_mesh
    old_pid = mesh.supervisor.status("envoy").pid
    assert old_pid is not None
    before = mesh.supervisor.restarts("envoy")

    os.kill(old_pid, signal.SIGKILL)
    _wait_for(lambda: mesh.supervisor.restarts("envoy") == before + 1, "the restart")
    mesh.supervisor.wait_until_healthy(RECOVERY_TIMEOUT)

    created = _register(mesh, "after-envoy-restart@example.com")
    assert created.status_code == 200, created.text


def test_a_deliberate_redis_stop_is_not_fought(healthy_mesh: Mesh) -> None:
    mesh = healthy_mesh
    before = mesh.supervisor.restarts("redis")

    mesh.stop_redis()
    try:
        mesh.supervisor.wait_for_checks(rounds=3)
        assert not mesh.redis.is_running
        assert mesh.supervisor.status("redis").state is State.HELD
        assert _status_row(mesh, "redis")["state"] == "held"
    finally:
        mesh.start_redis()

    mesh.supervisor.wait_until_healthy(RECOVERY_TIMEOUT)
    assert mesh.supervisor.restarts("redis") == before


def test_a_deliberate_postgres_restart_is_not_counted_as_a_crash(healthy_mesh: Mesh) -> None:
    mesh = healthy_mesh
    old_pid = mesh.postgres.postmaster_pid()
    before = mesh.supervisor.restarts("postgres")

    mesh.restart_postgres()
    mesh.supervisor.wait_until_healthy(RECOVERY_TIMEOUT)

    assert mesh.postgres.postmaster_pid() not in (None, old_pid)
    assert mesh.supervisor.restarts("postgres") == before
    assert mesh.supervisor.status("postgres").state is State.RUNNING


def test_audit_and_grant_admin_reach_the_run_folders_own_servers(healthy_mesh: Mesh) -> None:
    mesh = healthy_mesh
    assert json.loads((mesh.run_dir / RECORD_FILE).read_text())["postgres_port"] == (
        mesh.config.postgres_port
    )
    email = "operator@example.com"
    created = _register(mesh, email)
    assert created.status_code == 200, created.text

    granted = _localmesh(mesh.run_dir, "grant-admin", email)
    audited = _localmesh(mesh.run_dir, "audit")

    assert granted.returncode == 0, granted.stdout + granted.stderr
    assert f"{email} is now an admin" in granted.stdout
    with psycopg.connect(mesh.postgres.conninfo("users")) as connection:
        row = connection.execute("SELECT roles FROM users WHERE email = %s", (email,)).fetchone()
    assert row is not None
    assert "admin" in row[0]
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert "ledger audit: OK" in audited.stdout


def test_supervision_can_be_stopped_and_started_again_on_a_running_mesh(
    healthy_mesh: Mesh,
) -> None:
    mesh = healthy_mesh

    mesh.stop_supervising()

    assert not mesh.status_path.exists()
    with pytest.raises(MeshError, match="not supervised"):
        _ = mesh.supervisor
    assert _localmesh(mesh.run_dir, "status").returncode == 1

    supervisor = mesh.supervise()

    assert mesh.supervisor is supervisor
    # Envoy, restarted above by a thread of the first supervisor, outlived that thread
    # (Envoy asks for a signal when the thread that forked it ends).
    rows = supervisor.snapshot()
    assert [(row.name, row.state, row.restarts) for row in rows] == [
        (name, State.RUNNING, 0) for name in supervisor.names
    ]
    assert _status_row(mesh, "envoy")["state"] == "running"
