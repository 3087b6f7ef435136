"""The launcher's private PostgreSQL and Redis, started for real on free ports.

These run as root (CI) and as a normal user: as root the cluster runs as the `postgres`
OS user, and pytest's tmp_path (under a mode-700 folder) makes it move its data to the
temp folder, which `destroy()` removes again.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from services.localmesh.postgres import PostgresError, PostgresServer
from services.localmesh.processes import ProcessError, free_port
from services.localmesh.redis import RedisServer
from tests.eventually import eventually

# Fixtures here are per test ("fresh_"): these tests stop, kill and restart servers,
# which the shared session servers of tests/conftest.py must not suffer.

REPO_ROOT = Path(__file__).resolve().parents[2]
AS_ROOT = os.geteuid() == 0


def _postmaster_pid(server: PostgresServer) -> int:
    return int((server.data_dir / "postmaster.pid").read_text().split()[0])


@pytest.fixture
def postgres_servers() -> Iterator[list[PostgresServer]]:
    """Servers a test creates; each is stopped and deleted afterwards, pass or fail."""
    servers: list[PostgresServer] = []
    yield servers
    for server in reversed(servers):
        server.destroy()


@pytest.fixture
def fresh_postgres(tmp_path: Path, postgres_servers: list[PostgresServer]) -> PostgresServer:
    server = PostgresServer(tmp_path / "postgres", free_port())
    postgres_servers.append(server)
    return server


@pytest.fixture
def fresh_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", free_port())
    yield server
    server.stop()


# --- PostgreSQL -----------------------------------------------------------------------


def test_postgres_serves_databases_over_loopback_with_a_password(
    fresh_postgres: PostgresServer,
) -> None:
    fresh_postgres.start()
    fresh_postgres.create_database("users")
    fresh_postgres.create_database("users")  # idempotent

    with psycopg.connect(fresh_postgres.conninfo("users")) as conn:
        row = conn.execute(
            "SELECT current_user, current_database(), current_setting('listen_addresses')"
        ).fetchone()
    assert row == ("wallet", "users", "127.0.0.1")
    assert fresh_postgres.dsn("users") == (
        f"postgresql+psycopg://wallet:{fresh_postgres.password}@127.0.0.1:{fresh_postgres.port}/users"
    )
    assert fresh_postgres.password_file.stat().st_mode & 0o777 == 0o600
    assert len(fresh_postgres.password) >= 24


def test_postgres_rejects_a_wrong_password_over_tcp(fresh_postgres: PostgresServer) -> None:
    fresh_postgres.start()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host="127.0.0.1",
            port=fresh_postgres.port,
            user="wallet",
            password="not-the-password",
            dbname="postgres",
        )


def test_postgres_keeps_data_and_password_across_restarts(
    tmp_path: Path, postgres_servers: list[PostgresServer]
) -> None:
    port = free_port()
    first = PostgresServer(tmp_path / "postgres", port)
    postgres_servers.append(first)
    first.start()
    first.create_database("ledger")
    with psycopg.connect(first.conninfo("ledger"), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (value text)")
        conn.execute("INSERT INTO kept VALUES ('still here')")
    first.stop()
    assert not first.is_running()

    second = PostgresServer(tmp_path / "postgres", port)
    second.start()
    assert second.password == first.password
    with psycopg.connect(second.conninfo("ledger")) as conn:
        assert conn.execute("SELECT value FROM kept").fetchone() == ("still here",)
    second.stop()


def test_postgres_reuses_a_server_left_running_by_a_crashed_launcher(
    fresh_postgres: PostgresServer,
) -> None:
    fresh_postgres.start()
    pid = _postmaster_pid(fresh_postgres)

    again = PostgresServer(fresh_postgres.base_dir, fresh_postgres.port)
    again.start()

    assert _postmaster_pid(again) == pid
    again.stop()
    assert not fresh_postgres.is_running()


def test_postgres_restarts_a_server_left_running_on_another_port(
    fresh_postgres: PostgresServer,
) -> None:
    fresh_postgres.start()
    moved = PostgresServer(fresh_postgres.base_dir, free_port())
    moved.start()

    with psycopg.connect(moved.conninfo("postgres")) as conn:
        assert conn.execute("SELECT current_setting('port')").fetchone() == (str(moved.port),)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(fresh_postgres.conninfo("postgres"), connect_timeout=2)
    moved.stop()


def test_postgres_starts_after_its_server_was_killed(fresh_postgres: PostgresServer) -> None:
    fresh_postgres.start()
    os.kill(_postmaster_pid(fresh_postgres), signal.SIGKILL)
    eventually(lambda: not fresh_postgres.is_running(), "PostgreSQL to stop", interval=0.05)
    assert (fresh_postgres.data_dir / "postmaster.pid").exists()  # left behind, stale

    fresh_postgres.start()

    with psycopg.connect(fresh_postgres.conninfo("postgres")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_postgres_start_fails_clearly_when_its_port_is_taken(
    fresh_postgres: PostgresServer,
) -> None:
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", fresh_postgres.port))
        squatter.listen()
        with pytest.raises(PostgresError, match=r"could not bind|could not create"):
            fresh_postgres.start()
    assert not fresh_postgres.is_running()


@pytest.mark.skipif(not AS_ROOT, reason="the postgres OS user is only used as root")
def test_postgres_as_root_moves_data_the_server_user_cannot_reach(
    tmp_path: Path, postgres_servers: list[PostgresServer]
) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    server = PostgresServer(private / "postgres", free_port())
    postgres_servers.append(server)

    server.start()

    assert server.is_relocated
    assert server.server_dir.parent == Path(tempfile.gettempdir())
    assert server.data_dir.stat().st_uid == pwd.getpwnam("postgres").pw_uid
    assert str(server.server_dir) in (server.base_dir / "DATA-LOCATION").read_text()
    # The same folder maps to the same place: a second launcher finds the data.
    assert PostgresServer(server.base_dir, server.port).server_dir == server.server_dir

    server.destroy()
    assert not server.server_dir.exists()


@pytest.mark.skipif(not AS_ROOT, reason="the postgres OS user is only used as root")
def test_postgres_as_root_keeps_data_in_place_when_reachable(
    postgres_servers: list[PostgresServer],
) -> None:
    reachable = Path(tempfile.mkdtemp(prefix="wallet-test-"))
    try:
        reachable.chmod(0o755)
        server = PostgresServer(reachable / "postgres", free_port())
        postgres_servers.append(server)
        server.start()
        assert not server.is_relocated
        assert server.data_dir.parent == server.base_dir
        assert server.data_dir.stat().st_uid == pwd.getpwnam("postgres").pw_uid
        assert server.password_file.stat().st_uid == 0
        server.destroy()
    finally:
        shutil.rmtree(reachable, ignore_errors=True)


# --- Redis ----------------------------------------------------------------------------


def test_redis_answers_and_starts_again_on_the_same_port(fresh_redis: RedisServer) -> None:
    fresh_redis.start()
    assert fresh_redis.url == f"redis://127.0.0.1:{fresh_redis.port}/0"
    client = redis.Redis.from_url(fresh_redis.url, socket_connect_timeout=1)
    try:
        client.set("greeting", "hello")
        assert client.get("greeting") == b"hello"

        fresh_redis.stop()
        assert not fresh_redis.is_running
        with pytest.raises(redis.ConnectionError):
            client.ping()

        fresh_redis.start()
        assert client.ping()
        assert client.get("greeting") is None  # no persistence, by design
    finally:
        client.close()


def test_redis_stops_a_server_left_running_by_a_killed_launcher(
    fresh_redis: RedisServer,
) -> None:
    # A launcher that exits without stopping its Redis (as after SIGKILL).
    launcher = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from services.localmesh.redis import RedisServer\n"
        "server = RedisServer(Path(sys.argv[1]), int(sys.argv[2]))\n"
        "server.start()\n"
        "print(server._process.pid, flush=True)\n"
        "os._exit(0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", launcher, str(fresh_redis.base_dir), str(fresh_redis.port)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        timeout=60,
    )
    orphan = int(result.stdout.split()[0])
    try:
        os.kill(orphan, 0)  # still running, holding the port

        fresh_redis.start()

        assert not Path(f"/proc/{orphan}").exists() or _is_zombie(orphan)
        client = redis.Redis.from_url(fresh_redis.url)
        assert client.ping()
        client.close()
    finally:
        if Path(f"/proc/{orphan}").exists() and not _is_zombie(orphan):
            os.kill(orphan, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2] == "Z"


def test_redis_start_fails_clearly_when_its_port_is_taken(fresh_redis: RedisServer) -> None:
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", fresh_redis.port))
        squatter.listen()
        with pytest.raises(ProcessError, match="redis-server exited"):
            fresh_redis.start()
    assert not fresh_redis.is_running
