"""Smoke test of the container image (`make test-image`; image/README.md).

Builds the image (image/build.sh: from its caches, in seconds, once built), starts
PostgreSQL and Redis on host loopback with the local mesh's own helpers, then runs
inside the image, with buildah on the host network, as a pod would run it (read-only
root, a writable /tmp, the image's non-root user, secrets mounted read-only): each
service's migrations, each service, and Envoy in front of them. Checks, from the host,
that each answers its gRPC health check, that Envoy validates and serves the rendered
edge configuration, and that a person can register, log in and open a wallet through
it. The environment of each service is the local mesh's (Mesh.service_env), with its
host paths translated to the image's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from unittest import mock

import httpx
import pytest

from services.catalogue import SERVICES
from services.localmesh import processes
from services.localmesh.edge import RATELIMIT_CLUSTER, REPO_ROOT, render_envoy_config
from services.localmesh.mesh import Mesh, MeshConfig, ensure_service_token, ensure_signing_key
from services.localmesh.processes import ManagedProcess
from tests.image.buildah import (
    ContainedProcess,
    ImageConfig,
    ImageContainer,
    Mount,
    build_image,
    buildah,
)

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0, reason="buildah --isolation chroot and debootstrap need root"
    ),
    # The first test's set-up builds the image: minutes from nothing.
    pytest.mark.timeout(2400),
]

# Where the image keeps the code, and where the pods' secrets are mounted.
APP_DIR = "/app"
SECRETS_DIR = "/run/secrets/wallet"
ENVOY_CONFIG_DIR = "/etc/envoy"
READY_TIMEOUT = 90.0
PASSWORD = "correct horse battery"
# The services of the catalogue.
SERVICE_NAMES = [spec.name for spec in SERVICES]


@pytest.fixture(scope="module")
def image() -> str:
    return build_image()


@pytest.fixture(scope="module")
def image_config(image: str) -> ImageConfig:
    return ImageConfig.of(image)


@pytest.fixture(scope="module")
def image_user(image_config: ImageConfig) -> str:
    """The image's "uid:gid", the only user anything in it runs as."""
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", image_config.user), image_config.user
    return image_config.user


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[ImageContainer]:
    """A container for the one-shot checks."""
    box = ImageContainer(image, f"wallet-image-test-{uuid.uuid4().hex[:8]}")
    yield box
    box.remove()


@dataclass(frozen=True)
class PathsInImage:
    """Host folders of the local mesh and where the image has them."""

    moves: Mapping[Path, str]

    def translate(self, value: str) -> str:
        for host, inside in self.moves.items():
            value = value.replace(str(host), inside)
        return value

    def check_translated(self, text: str, what: str) -> None:
        """Fail if a host path of the mesh is left in `text` (it would not exist inside)."""
        for host in self.moves:
            assert str(host) not in text, f"{what} still refers to {host}"


@dataclass
class SmokeMesh:
    """The local mesh's servers and settings, with the services run from the image."""

    mesh: Mesh
    image: str
    user: str
    paths: PathsInImage
    secrets: Mount
    boxes: list[ImageContainer] = dataclasses.field(default_factory=list)
    running: dict[str, ManagedProcess] = dataclasses.field(default_factory=dict)

    def env(self, service: str) -> dict[str, str]:
        """The mesh's environment of the service's first instance, without the host's
        own variables, with paths as the image sees them."""
        with mock.patch.dict(os.environ, clear=True):
            env = self.mesh.service_env(self.mesh.spec(service), 0)
        env.pop("PYTHONPATH")  # the image puts its code on the path itself (a .pth)
        translated = {name: self.paths.translate(value) for name, value in env.items()}
        self.paths.check_translated(json.dumps(translated), f"{service}'s environment")
        return translated

    def box(self, name: str) -> ImageContainer:
        """A container of its own for each process, as each would have its own pod."""
        box = ImageContainer(self.image, f"wallet-image-test-{name}-{uuid.uuid4().hex[:8]}")
        self.boxes.append(box)
        return box

    def migrate(self, service: str) -> subprocess.CompletedProcess[str]:
        return self.box(f"{service}-migrate").run(
            "wallet-service",
            service,
            "migrate",
            env=self.env(service),
            mounts=[self.secrets],
            read_only_as=self.user,
            timeout=READY_TIMEOUT * 3,
        )

    def start(self, name: str, command: list[str]) -> ManagedProcess:
        process = ManagedProcess(
            name, command, log_path=self.mesh.logs_dir / f"{name}.log", cwd=self.mesh.run_dir
        )
        self.running[name] = process
        process.start()
        return process

    def serve(self, service: str) -> ManagedProcess:
        command = self.box(service).command(
            "wallet-service",
            service,
            "serve",
            env=self.env(service),
            mounts=[self.secrets],
            read_only_as=self.user,
        )
        return self.start(service, command)

    def envoy_config(self) -> Mount:
        """The edge configuration of this mesh, rendered as `make run` renders it, with
        the image's paths; a folder to mount at ENVOY_CONFIG_DIR."""
        settings = dataclasses.replace(
            self.mesh.edge_settings(), access_log_path=Path("/tmp/envoy-access.log")
        )
        text = self.paths.translate(render_envoy_config(settings))
        self.paths.check_translated(text, "the Envoy configuration")
        folder = self.mesh.run_dir / "envoy"
        folder.mkdir(exist_ok=True)
        (folder / "envoy.yaml").write_text(text)
        return Mount(folder, ENVOY_CONFIG_DIR)

    def contained(self, name: str) -> ContainedProcess:
        """The program of a started process, inside its container."""
        buildah_pid = self.running[name].pid
        assert buildah_pid is not None
        return ContainedProcess.under(buildah_pid)

    def stop_gracefully(self, name: str, grace: float = 30.0) -> int:
        """SIGTERM to the program (not to buildah, which would end it with SIGKILL);
        buildah's exit code is the program's."""
        os.kill(self.contained(name).pid, signal.SIGTERM)
        return self.running[name].wait(grace)

    def stop(self) -> None:
        processes.terminate_all(list(self.running.values()), grace=15)
        for box in self.boxes:
            box.remove()


@pytest.fixture(scope="module")
def smoke(
    image: str, image_user: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SmokeMesh]:
    """PostgreSQL, Redis and the secrets on the host (the local mesh's helpers); the
    services are started by the tests, and everything is stopped at the end."""
    mesh = Mesh(MeshConfig.for_tests(tmp_path_factory.mktemp("image-mesh"), instances=1))
    keys = mesh.signing_key_path.parent
    smoke = SmokeMesh(
        mesh=mesh,
        image=image,
        user=image_user,
        paths=PathsInImage({keys: SECRETS_DIR, REPO_ROOT: APP_DIR}),
        secrets=Mount(keys, SECRETS_DIR),
    )
    with contextlib.ExitStack() as stack:
        mesh.logs_dir.mkdir(parents=True, exist_ok=True)
        stack.callback(mesh.postgres.destroy)
        mesh.postgres.start()
        for spec in mesh.config.services:
            if spec.database:
                mesh.postgres.create_database(spec.database)
        stack.callback(mesh.redis.stop)
        mesh.redis.start()
        ensure_signing_key(mesh.signing_key_path)
        ensure_service_token(mesh.service_token_path)
        # Readable by the image's user only, as a pod's Secret volume with fsGroup.
        uid, gid = (int(part) for part in image_user.split(":"))
        for path in (keys, *keys.iterdir()):
            os.chown(path, uid, gid)
        stack.callback(smoke.stop)
        yield smoke
    # Everything the test started is gone: no service of the image holds its port.
    for spec in mesh.config.services:
        address = mesh.instance_addresses(spec.name)[0]
        assert _port_is_free(address), f"{spec.name} still listens on {address}"


@pytest.fixture(scope="module")
def serving(smoke: SmokeMesh) -> SmokeMesh:
    """Every service migrated and SERVING, each in its own container."""
    specs = smoke.mesh.config.services
    for spec in specs:
        if spec.database:
            result = smoke.migrate(spec.name)
            assert result.returncode == 0, f"{spec.name} migrate:\n{result.stdout}{result.stderr}"
    started = {spec.name: smoke.serve(spec.name) for spec in specs}
    for spec in specs:
        processes.wait_for_grpc_health(
            smoke.mesh.instance_addresses(spec.name)[0],
            spec.grpc_services[0],
            READY_TIMEOUT,
            process=started[spec.name],
        )
    return smoke


# --- the image's configuration ----------------------------------------------------------


def test_runs_as_a_non_root_user_by_default(image_user: str, container: ImageContainer) -> None:
    result = container.run("sh", "-c", 'echo "$(id -u):$(id -g)"')
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == image_user


def test_entry_point_runs_each_service_by_name(
    image_config: ImageConfig, container: ImageContainer
) -> None:
    assert image_config.entrypoint == ("/usr/local/bin/wallet-service",)
    listed = container.run("wallet-service", "help")
    assert listed.returncode == 0, listed.stderr
    services_line = listed.stdout.strip().splitlines()[-1]
    named = set(services_line.removeprefix("services in this image:").split())
    assert named == set(SERVICE_NAMES)
    unknown = container.run("wallet-service", "localmesh", "run")
    assert unknown.returncode == 2
    assert "not a service" in unknown.stderr


def test_labels_say_what_was_built(image_config: ImageConfig) -> None:
    labels = image_config.labels
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    ).stdout.strip()
    assert labels["org.opencontainers.image.title"] == "wallet-mesh"
    assert labels["org.opencontainers.image.revision"] in (head, f"{head}-dirty")
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", labels["org.opencontainers.image.version"])
    created = datetime.fromisoformat(labels["org.opencontainers.image.created"])
    assert created.tzinfo is not None


def test_root_filesystem_is_read_only_to_the_processes(
    image_user: str, container: ImageContainer
) -> None:
    """The way the services are run below: nothing can be written but /tmp."""
    result = container.run(
        "sh",
        "-c",
        "touch /tmp/scratch && echo tmp-writable; "
        "for path in /app/x /opt/wallet/x /etc/x /x; do touch $path 2>&1; done; id -u",
        read_only_as=image_user,
    )
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "tmp-writable"
    assert all("Read-only file system" in line for line in lines[1:-1]), lines
    assert len(lines) == 6
    assert lines[-1] == image_user.split(":")[0]


def test_buildah_storage_keeps_the_tagged_image(image: str) -> None:
    listed = buildah("images", "--format", "{{.Name}}:{{.Tag}}", image)
    assert image in listed.split()


def test_holds_no_private_key(container: ImageContainer) -> None:
    """No secret is baked in: keys come from the pod's Secrets. (Python libraries
    mention PEM headers in their code, so /opt/wallet's packages are not searched.)"""
    result = container.run(
        "sh",
        "-c",
        "grep -rlI -e '-----BEGIN [A-Z ]*PRIVATE KEY-----' /app /etc /root /home /var /usr/local"
        " 2>/dev/null; echo done",
    )
    assert result.stdout.strip() == "done", f"private keys found:\n{result.stdout}"


# --- the services and the edge, run from the image --------------------------------------


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_service_migrates_and_serves_from_the_image(serving: SmokeMesh, service: str) -> None:
    spec = serving.mesh.spec(service)
    address = serving.mesh.instance_addresses(service)[0]
    assert processes.grpc_health(address, spec.grpc_services[0]) == "SERVING"
    # The serving process itself: the image's interpreter, its user, no capabilities,
    # a read-only root.
    serving_process = serving.contained(service)
    assert serving_process.command_line == [
        "/opt/wallet/bin/python",
        "-m",
        spec.module,
        "serve",
    ]
    uid, gid = (int(part) for part in serving.user.split(":"))
    assert serving_process.ids == ({uid}, {gid})
    assert serving_process.effective_capabilities == 0
    assert "ro" in serving_process.root_mount_options


def test_envoy_validates_the_rendered_edge_config(serving: SmokeMesh) -> None:
    config = serving.envoy_config()
    result = serving.box("envoy-validate").run(
        "wallet-service",
        "envoy",
        "--mode",
        "validate",
        "-c",
        f"{ENVOY_CONFIG_DIR}/envoy.yaml",
        mounts=[config],
        read_only_as=serving.user,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"configuration '{ENVOY_CONFIG_DIR}/envoy.yaml' OK" in result.stdout


def test_edge_from_the_image_serves_a_person(serving: SmokeMesh) -> None:
    mesh = serving.mesh
    command = serving.box("envoy").command(
        "wallet-service",
        "envoy",
        "-c",
        f"{ENVOY_CONFIG_DIR}/envoy.yaml",
        # One process per pod: no hot restart, so no shared memory to set up.
        "--disable-hot-restart",
        "--log-level",
        "warn",
        mounts=[serving.envoy_config()],
        read_only_as=serving.user,
    )
    envoy = serving.start("envoy", command)
    processes.wait_for_http(f"{mesh.admin_url}/ready", READY_TIMEOUT, process=envoy)
    clusters = [f"{spec.name}_grpc" for spec in mesh.config.services if spec.routed]
    processes.wait_until(
        lambda: _unhealthy_clusters(mesh.admin_url, [*clusters, RATELIMIT_CLUSTER]),
        READY_TIMEOUT,
        what="Envoy to see every service healthy",
        process=envoy,
    )

    email = f"image-{uuid.uuid4().hex[:8]}@example.com"
    with httpx.Client(base_url=mesh.edge_url, timeout=10, trust_env=False) as rest:
        created = rest.post(
            "/v1/users", json={"email": email, "password": PASSWORD, "display_name": "Ada"}
        )
        assert created.status_code == 200, created.text
        login = rest.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        user_id = login.json()["user_id"]
        auth = {"authorization": f"Bearer {login.json()['access_token']}"}
        # The transaction service (checking the token with the user service's keys),
        # the money class of the rate limits, and the ledger's database.
        wallet = rest.post(
            "/v1/wallets",
            json={"currency": "EUR"},
            headers={**auth, "idempotency-key": str(uuid.uuid4())},
        )
        assert wallet.status_code == 200, wallet.text
        assert wallet.json()["wallet"]["owner_user_id"] == user_id
        assert wallet.json()["wallet"]["currency"] == "EUR"


def test_every_process_stops_gracefully_on_sigterm(serving: SmokeMesh) -> None:
    """SIGTERM to the program itself, as the kubelet sends it to a container's first
    process: each drains and exits 0 (the services log their shutdown). Last in this
    module: it stops what the tests above use."""
    assert serving.running, "nothing was started"
    for name in list(serving.running):
        code = serving.stop_gracefully(name)
        assert code == 0, f"{name} exited with {code}:\n{serving.running[name].log_tail()}"
    for spec in serving.mesh.config.services:
        assert '"message": "shutting down"' in serving.running[spec.name].log_tail(), spec.name


def _unhealthy_clusters(admin_url: str, clusters: list[str]) -> list[str]:
    """Clusters in which Envoy sees no healthy host yet (its membership_healthy stat)."""
    stats = processes.http_get_json(f"{admin_url}/stats?format=json&filter=membership_healthy")
    values = {
        str(stat.get("name")): stat.get("value")
        for stat in (stats.get("stats", []) if isinstance(stats, dict) else [])
        if isinstance(stat, dict)
    }
    return [
        name
        for name in clusters
        if not isinstance(healthy := values.get(f"cluster.{name}.membership_healthy"), int)
        or healthy < 1
    ]


def _port_is_free(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except OSError:
            return False
    return True
