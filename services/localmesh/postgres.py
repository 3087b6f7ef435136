"""A private PostgreSQL cluster for `make run` and the tests.

We never use the system's cluster: a cluster of our own, on a port of our own, can be
created, reset and thrown away without touching anything else on the machine, and it
works the same for a developer and for CI.

Layout, for a `base_dir`:

- `base_dir/password` — the superuser's password (mode 600), generated once. It is the
  source of truth: the role's password is set from it at every start, so a lost or
  replaced file never locks us out.
- `<server dir>/data` — the cluster (PGDATA); `<server dir>/socket` — the unix socket;
  `<server dir>/postgres.log` — the server's log. The server dir is `base_dir` itself,
  except in the root case below.

Authentication: scram-sha-256 over TCP, which listens on 127.0.0.1 only; trust on the
unix socket, whose folder only the cluster's owner (and root) can enter. The launcher
uses the socket for administration and hands services a TCP URL with the password.

Running as root: initdb, pg_ctl and postgres refuse to run as root, so they run as the
`postgres` OS user (`runuser -u postgres --`, which Debian's package creates), and the
folders the server writes to are chowned to it. That user must be able to enter
`base_dir` and every parent folder. When it cannot (a repository under /root, mode 700,
or pytest's tmp_path under /tmp/pytest-of-root), the server dir is placed instead in
`<tempfile.gettempdir()>/wallet-postgres-<hash of base_dir>`, and `base_dir/DATA-LOCATION`
says where. The same base_dir always maps to the same folder, so data is reused across
runs; `destroy()` removes it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import pwd
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import errors, sql
from psycopg.rows import TupleRow

from services.localmesh.processes import log_tail

log = logging.getLogger(__name__)

SERVER_USER = "postgres"  # the OS user that runs the server when we are root
LISTEN_ADDRESS = "127.0.0.1"
PG_CTL_TIMEOUT = 60  # seconds pg_ctl waits for start or stop

# Paths of unix sockets are limited to 107 bytes; beyond this, the socket goes to /tmp.
_MAX_SOCKET_DIR_LENGTH = 80


MAX_CONNECTIONS = 300


class PostgresError(RuntimeError):
    """PostgreSQL could not be found, initialised, started or stopped."""


def find_bin_dir(version: str | None = None) -> Path:
    """The folder holding initdb and pg_ctl (Debian keeps it off PATH).

    Preference: $WALLET_PG_BINDIR; the Debian folder of `version` (the version of an
    existing cluster, which newer binaries cannot open); the newest Debian folder;
    `pg_config --bindir`; wherever `initdb` is on PATH.
    """
    override = os.environ.get("WALLET_PG_BINDIR")
    if override:
        return Path(override)
    debian = {
        p.parent.parent.name: p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")
    }
    if version is not None and version in debian:
        return debian[version]
    if debian:
        newest = max(debian, key=lambda v: [int(part) for part in re.findall(r"\d+", v)])
        return debian[newest]
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        candidate = Path(result.stdout.strip())
        if result.returncode == 0 and (candidate / "initdb").exists():
            return candidate
    initdb = shutil.which("initdb")
    if initdb is not None:
        return Path(initdb).parent
    raise PostgresError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: run scripts/ensure-system-deps.sh"
        " or set WALLET_PG_BINDIR"
    )


class PostgresServer:
    """A private PostgreSQL cluster under `base_dir`, served on 127.0.0.1:`port`.

    See the module docstring for the layout, the authentication and the root case.
    """

    def __init__(self, base_dir: Path, port: int, superuser: str = "wallet") -> None:
        self.base_dir = Path(base_dir).absolute()
        self.port = port
        self.superuser = superuser
        self.password_file = self.base_dir / "password"

    # --- layout -----------------------------------------------------------------------

    @functools.cached_property
    def _server_account(self) -> pwd.struct_passwd | None:
        """The OS account that runs the server when we are root; None otherwise."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise PostgresError(
                f"running as root needs the {SERVER_USER!r} OS user, which Debian's "
                "postgresql package creates: run scripts/ensure-system-deps.sh"
            ) from None

    @functools.cached_property
    def server_dir(self) -> Path:
        """Where data, socket and log live: base_dir, or a temp folder (root case)."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self._server_account is None or self._server_user_can_enter(self.base_dir):
            return self.base_dir
        digest = hashlib.sha256(str(self.base_dir.resolve()).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"wallet-postgres-{digest}"

    @property
    def data_dir(self) -> Path:
        return self.server_dir / "data"

    @functools.cached_property
    def socket_dir(self) -> Path:
        socket_dir = self.server_dir / "socket"
        if len(str(socket_dir)) <= _MAX_SOCKET_DIR_LENGTH:
            return socket_dir
        digest = hashlib.sha256(str(self.server_dir).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"wallet-pgsock-{digest}"

    @property
    def log_file(self) -> Path:
        return self.server_dir / "postgres.log"

    @property
    def _initialized_marker(self) -> Path:
        # Written after initdb succeeded: a data folder without it is a failed attempt.
        return self.server_dir / "initialized"

    @property
    def is_initialized(self) -> bool:
        """Whether initdb has completed (the cluster may be stopped)."""
        return self._initialized_marker.exists() and (self.data_dir / "PG_VERSION").exists()

    @property
    def is_relocated(self) -> bool:
        return self.server_dir != self.base_dir

    # --- credentials ------------------------------------------------------------------

    @functools.cached_property
    def password(self) -> str:
        """The superuser's password, read from (or first generated into) password_file."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_urlsafe(24) + "\n")
        self.password_file.chmod(0o600)
        return self.password_file.read_text().strip()

    def dsn(self, database: str) -> str:
        """SQLAlchemy URL of `database` over TCP, as services get it."""
        return f"postgresql+psycopg://{self._netloc()}/{quote(database, safe='')}"

    def conninfo(self, database: str) -> str:
        """libpq URL of `database` over TCP, for psycopg.connect."""
        return f"postgresql://{self._netloc()}/{quote(database, safe='')}"

    def _netloc(self) -> str:
        user = quote(self.superuser, safe="")
        return f"{user}:{quote(self.password, safe='')}@{LISTEN_ADDRESS}:{self.port}"

    # --- lifecycle --------------------------------------------------------------------

    def ensure_initialized(self) -> None:
        """Create the cluster with initdb unless it exists already."""
        _ = self.password  # generated before the cluster, so both exist together
        self._prepare_server_dir()  # also on each start: the socket folder may be in /tmp
        if self.is_initialized:
            return
        if self.data_dir.exists():
            log.warning("removing %s: an initdb that did not finish", self.data_dir)
            shutil.rmtree(self.data_dir)
        self._make_owned_dir(self.data_dir)
        log.info("initialising a PostgreSQL cluster in %s", self.data_dir)
        self._run_tool(
            "initdb",
            "--pgdata",
            str(self.data_dir),
            "--username",
            self.superuser,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",  # the C locale exists everywhere; the developer's might not
            "--no-sync",  # a throw-away development cluster: no need to wait for the disk
        )
        self._initialized_marker.write_text("initdb finished\n")

    def start(self) -> None:
        """Start the server (initialising it first if needed) and wait until it accepts
        connections. A server left running by a crashed launcher is reused if it serves
        this port and socket, and restarted otherwise."""
        self.ensure_initialized()
        running = self._postmaster_settings()
        if running is not None:
            if running == (str(self.port), str(self.socket_dir), LISTEN_ADDRESS):
                log.info("reusing the PostgreSQL server already running on port %s", self.port)
                self._sync_password()
                return
            log.info("restarting the PostgreSQL server left running with other settings")
            self.stop()
        else:
            # A postmaster.pid whose server is gone (a crash or a reboot); pg_ctl status
            # has just checked that no process of that pid runs.
            (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        options = shlex.join(
            [
                "-p",
                str(self.port),
                "-k",
                str(self.socket_dir),
                "-c",
                f"listen_addresses={LISTEN_ADDRESS}",
                # Every instance keeps a full pool (services times instances times pool size)
                # and pgbench's clients come on top: the default 100 is too few.
                "-c",
                f"max_connections={MAX_CONNECTIONS}",
            ]
        )
        # Own session: a Ctrl-C in the launcher's terminal must not reach the server, which
        # the launcher stops itself, in order.
        self._run_tool(
            "pg_ctl",
            "start",
            "--pgdata",
            str(self.data_dir),
            "--log",
            str(self.log_file),
            "--wait",
            "--timeout",
            str(PG_CTL_TIMEOUT),
            "-o",
            options,
            new_session=True,
        )
        self._sync_password()

    def is_running(self) -> bool:
        """True if a server runs on this cluster's data folder (whatever its port)."""
        return self._postmaster_settings() is not None

    def listening_port(self) -> int | None:
        """The port of the server running on this cluster's data folder, if one runs
        (it may differ from `port`: a server another launcher started elsewhere)."""
        running = self._postmaster_settings()
        return int(running[0]) if running is not None else None

    def postmaster_pid(self) -> int | None:
        """The pid recorded in postmaster.pid, without asking pg_ctl whether it still
        runs (cheap enough to poll; the caller checks the process, see supervisor.py)."""
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first_line)
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """Fast shutdown (rolls back open transactions); nothing to do if not running."""
        if not (self.data_dir / "postmaster.pid").exists():
            return
        if self._pg_ctl_status() != 0:
            return
        self._run_tool(
            "pg_ctl",
            "stop",
            "--pgdata",
            str(self.data_dir),
            "--mode",
            "fast",
            "--wait",
            "--timeout",
            str(PG_CTL_TIMEOUT),
        )

    def destroy(self) -> None:
        """Stop the server and delete the cluster, its socket folder and its password."""
        self.stop()
        if self.is_relocated:
            shutil.rmtree(self.server_dir, ignore_errors=True)
        else:
            for folder in (self.data_dir, self.socket_dir):
                shutil.rmtree(folder, ignore_errors=True)
            self.log_file.unlink(missing_ok=True)
            self._initialized_marker.unlink(missing_ok=True)
        if self.socket_dir.parent != self.server_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
        (self.base_dir / "DATA-LOCATION").unlink(missing_ok=True)
        self.password_file.unlink(missing_ok=True)
        self.__dict__.pop("password", None)

    # --- databases --------------------------------------------------------------------

    def create_database(self, name: str) -> None:
        """Create database `name`, owned by the superuser, unless it exists."""
        with self._admin_connection() as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if exists:
                return
            with contextlib.suppress(errors.DuplicateDatabase):  # created meanwhile
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                log.info("created database %s", name)

    def _admin_connection(self) -> psycopg.Connection[TupleRow]:
        """A connection over the unix socket (trust), for administration."""
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=self.superuser,
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        )

    def _sync_password(self) -> None:
        """Set the superuser's password from password_file (see the module docstring)."""
        with self._admin_connection() as conn:
            statement = sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
                sql.Identifier(self.superuser), sql.Literal(self.password)
            )
            conn.execute(statement)

    # --- helpers ----------------------------------------------------------------------

    def _prepare_server_dir(self) -> None:
        """Create the server dir and the socket folder, owned by the server's user."""
        if self.is_relocated:
            self._make_owned_dir(self.server_dir, private_shared_parent=True)
            (self.base_dir / "DATA-LOCATION").write_text(
                f"The PostgreSQL cluster of this folder lives in {self.server_dir}:\n"
                f"the {SERVER_USER} OS user cannot enter {self.base_dir}.\n"
            )
            if not self._server_user_can_enter(self.server_dir):
                raise PostgresError(
                    f"the {SERVER_USER} OS user can enter neither {self.base_dir} nor "
                    f"{self.server_dir}: set TMPDIR to a folder it can enter"
                )
        else:
            self.server_dir.mkdir(parents=True, exist_ok=True)
        self._make_owned_dir(
            self.socket_dir, private_shared_parent=self.socket_dir.parent != self.server_dir
        )
        if self._server_account is not None and not self.log_file.exists():
            self.log_file.touch(mode=0o600)
            os.chown(self.log_file, self._server_account.pw_uid, self._server_account.pw_gid)

    def _make_owned_dir(self, path: Path, *, private_shared_parent: bool = False) -> None:
        """mkdir with mode 700, owned by the server's user.

        With `private_shared_parent` (a folder directly in the shared temp folder), a
        folder that already exists must be a real folder owned by us or the server's
        user: another user may have created it first to capture our data.
        """
        path.mkdir(mode=0o700, parents=not private_shared_parent, exist_ok=True)
        if private_shared_parent:
            info = path.lstat()
            allowed = {os.geteuid()}
            if self._server_account is not None:
                allowed.add(self._server_account.pw_uid)
            if path.is_symlink() or not path.is_dir() or info.st_uid not in allowed:
                raise PostgresError(f"{path} exists and is not ours: remove it")
        path.chmod(0o700)
        if self._server_account is not None:
            os.chown(path, self._server_account.pw_uid, self._server_account.pw_gid)

    def _server_user_can_enter(self, folder: Path) -> bool:
        """Whether the server's user can reach `folder` (the kernel checks every parent)."""
        result = subprocess.run(
            ["runuser", "-u", SERVER_USER, "--", "test", "-x", str(folder)],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def _postmaster_settings(self) -> tuple[str, str, str] | None:
        """(port, socket folder, listen address) of the server running on our data, if
        one runs; from postmaster.pid (lines 4-6), once pg_ctl status confirms it."""
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists() or self._pg_ctl_status() != 0:
            return None
        lines = pid_file.read_text().splitlines()
        if len(lines) < 6:
            return None
        return lines[3].strip(), lines[4].strip(), lines[5].strip()

    def _pg_ctl_status(self) -> int:
        """pg_ctl status: 0 running, 3 not running, 4 no data folder."""
        result = self._run_tool("pg_ctl", "status", "--pgdata", str(self.data_dir), check=False)
        return result.returncode

    @functools.cached_property
    def _bin_dir(self) -> Path:
        version_file = self.data_dir / "PG_VERSION"
        version = version_file.read_text().strip() if version_file.exists() else None
        return find_bin_dir(version)

    def _run_tool(
        self, tool: str, *args: str, check: bool = True, new_session: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool as the server's user, from inside the server dir."""
        command: Sequence[str] = [str(self._bin_dir / tool), *args]
        if self._server_account is not None:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        # PG* variables of the caller (PGDATA, PGPORT, ...) must not redirect our tools.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        try:
            result = subprocess.run(
                command,
                cwd=self.server_dir,
                env=env,
                capture_output=True,
                text=True,
                timeout=PG_CTL_TIMEOUT * 2,
                check=False,
                start_new_session=new_session,
            )
        except subprocess.TimeoutExpired:
            raise PostgresError(f"{tool} {args[0]} did not finish in time") from None
        if check and result.returncode != 0:
            raise PostgresError(
                f"{tool} {args[0]} failed with code {result.returncode}:\n"
                f"{result.stdout}{result.stderr}\n"
                f"end of {self.log_file}:\n{log_tail(self.log_file)}"
            )
        return result
