"""A real Kubernetes control plane on 127.0.0.1, for the chart's tests.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the real binaries
(built by `make k8s-tools`); kwok stands in for the kubelets of three fake nodes. Pods are
scheduled, turn Running and Ready, and roll over as on a real cluster, but no container
ever runs: pod and cluster IPs are fake, so nothing may be sent to them.

Every process listens on loopback only, on free ports, and logs into the run folder; the
apiserver makes its own self-signed serving certificate (--cert-dir) and knows one admin
by a static token. `stop()` ends every process started, also after a start that failed
half-way.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.localmesh.processes import (
    ManagedProcess,
    free_port,
    wait_for_http,
    wait_until,
)
from tests.k8s.tools import K8sTools

# Seconds to wait for each step of the start. The apiserver is ready in ~3 s when the
# machine is idle; these leave room for a machine shared with other builds and tests.
ETCD_TIMEOUT = 30.0
APISERVER_TIMEOUT = 90.0
COMPONENT_TIMEOUT = 60.0
NODES_TIMEOUT = 60.0

NODE_NAMES = ("kwok-node-0", "kwok-node-1", "kwok-node-2")
# Fake ranges: nothing routes them (containers never run), they only must not overlap.
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
# kwok renews each node's Lease; the node lifecycle controller marks a node NotReady if
# its lease is older than its grace period (50 s).
NODE_LEASE_SECONDS = 40


class ControlPlaneError(RuntimeError):
    """The control plane could not be started, or a kubectl/helm call failed."""


class CommandFailed(ControlPlaneError):
    """kubectl or helm exited non-zero; carries what it printed."""

    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        self.result = result
        super().__init__(
            f"{' '.join(result.args)} exited {result.returncode}:\n"
            f"{result.stderr.strip()}\n{result.stdout.strip()}".rstrip()
        )


class ControlPlane:
    """The control plane of one test session, in `run_dir` (its data, certs, logs)."""

    def __init__(self, run_dir: Path, tools: K8sTools | None = None) -> None:
        self.run_dir = Path(run_dir).absolute()
        self.tools = (tools or K8sTools()).check()
        self.kubeconfig = self.run_dir / "kubeconfig"
        self.cert_dir = self.run_dir / "apiserver-certs"
        self.apiserver_port = free_port()
        self._token = secrets.token_urlsafe(32)
        self._processes: list[ManagedProcess] = []
        self._ssl: ssl.SSLContext | None = None

    # --- lifecycle ------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start everything and wait until pods can be scheduled onto Ready nodes."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            etcd_url = self._start_etcd()
            self._start_apiserver(etcd_url)
            self._write_kubeconfig()
            self._start_controller_manager()
            self._start_scheduler()
            self._start_kwok()
            self._add_nodes()
            self._wait_for_workload_readiness()
        except BaseException as error:
            self.stop()
            error.add_note(f"control plane logs: {self.run_dir / 'logs'}")
            raise

    def stop(self) -> None:
        """Stop every process started, clients first and etcd last: an apiserver whose
        etcd went away meanwhile spends its whole grace period on its shutdown (each of
        the others stops within a second or so)."""
        for process in reversed(self._processes):
            process.terminate(grace=10.0)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def running(self) -> list[str]:
        """The names of the processes started here that still run."""
        return [process.name for process in self._processes if process.is_running]

    @property
    def logs(self) -> dict[str, Path]:
        """Each process's log file, by name."""
        return {process.name: process.log_path for process in self._processes}

    # --- the clients ----------------------------------------------------------------

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this control plane; raises CommandFailed if `check` and it
        fails."""
        return self._run(self.tools.binary("kubectl"), args, input, check, timeout)

    def helm(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 300.0
    ) -> subprocess.CompletedProcess[str]:
        """Run helm against this control plane, its cache and config in the run folder."""
        return self._run(self.tools.binary("helm"), args, input, check, timeout)

    def create_namespace(self, name: str, timeout: float = 30.0) -> None:
        """Create a namespace and wait for its `default` ServiceAccount, which the
        controller-manager adds moments later: pods are refused until it exists."""
        self.kubectl("create", "namespace", name)
        path = f"/api/v1/namespaces/{name}/serviceaccounts/default"
        wait_until(
            lambda: [] if self.request("GET", path)[0] == 200 else [f"no {path}"],
            timeout,
            what=f"the default ServiceAccount of {name}",
        )

    def kubectl_json(self, *args: str) -> Any:
        """`kubectl get ... -o json`, decoded."""
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def request(self, method: str, path: str, body: object | None = None) -> tuple[int, Any]:
        """One call of the API as the admin: the HTTP status and the body, decoded if JSON
        (for the status codes kubectl does not show, such as 422)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 (always https://127.0.0.1)
            self.server + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
        )
        # No proxy: a developer's https_proxy must not capture loopback.
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=self._tls())
        )
        try:
            with opener.open(request, timeout=10) as response:
                return int(response.status), _decode(response.read())
        except urllib.error.HTTPError as error:
            return error.code, _decode(error.read())

    def _run(
        self,
        binary: Path,
        args: Sequence[str],
        input: str | None,
        check: bool,
        timeout: float,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(binary), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self._client_env(),
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise CommandFailed(result)
        return result

    def _client_env(self) -> dict[str, str]:
        helm_home = self.run_dir / "helm"
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.run_dir),
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(helm_home / "cache"),
            "HELM_CONFIG_HOME": str(helm_home / "config"),
            "HELM_DATA_HOME": str(helm_home / "data"),
            "NO_PROXY": "127.0.0.1,localhost",
        }

    def _tls(self) -> ssl.SSLContext:
        """Trusts exactly the CA the apiserver made for its serving certificate."""
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=str(self.ca_file))
        return self._ssl

    @property
    def ca_file(self) -> Path:
        """The apiserver's CA (PEM), what clients of this control plane trust."""
        return self.run_dir / "apiserver-ca.crt"

    def _extract_ca(self) -> bool:
        """Copy the CA out of the apiserver's self-made certificate file (the serving
        certificate, then the CA that signed it): the controller-manager publishes its
        --root-ca-file as a trust bundle, which must hold CA certificates only.
        False while the apiserver has not written the file yet."""
        serving = self.cert_dir / "apiserver.crt"
        if self.ca_file.is_file():
            return True
        if not serving.is_file():
            return False
        authorities = [
            certificate
            for certificate in x509.load_pem_x509_certificates(serving.read_bytes())
            if _is_ca(certificate)
        ]
        if not authorities:
            return False  # still being written
        self.ca_file.write_bytes(
            b"".join(c.public_bytes(serialization.Encoding.PEM) for c in authorities)
        )
        return True

    # --- the processes --------------------------------------------------------------

    def _spawn(self, name: str, args: Sequence[str]) -> ManagedProcess:
        process = ManagedProcess(
            name,
            [str(self.tools.binary(name)), *args],
            log_path=self.run_dir / "logs" / f"{name}.log",
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.run_dir)},
            cwd=self.run_dir,
        )
        self._processes.append(process)
        process.start()
        return process

    def _start_etcd(self) -> str:
        client_url = f"http://127.0.0.1:{free_port()}"
        peer_url = f"http://127.0.0.1:{free_port()}"
        etcd = self._spawn(
            "etcd",
            [
                "--name=control-plane",
                f"--data-dir={self.run_dir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=control-plane={peer_url}",
                # A throwaway cluster: losing it on a power cut is fine, waiting for
                # every write to reach the disk of a shared machine is not.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        body = wait_for_http(f"{client_url}/health", ETCD_TIMEOUT, process=etcd)
        if json.loads(body).get("health") != "true":
            raise ControlPlaneError(f"etcd reports itself unhealthy: {body!r}")
        return client_url

    def _start_apiserver(self, etcd_url: str) -> None:
        token_file = self.run_dir / "tokens.csv"
        token_file.write_text(f"{self._token},admin,admin,system:masters\n")
        token_file.chmod(0o600)
        signing_key = self._write_service_account_key()
        apiserver = self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.apiserver_port}",
                f"--cert-dir={self.cert_dir}",
                f"--token-auth-file={token_file}",
                "--authorization-mode=Node,RBAC",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # The default reconciler publishes the apiserver's address in the
                # `kubernetes` Service's endpoints and refuses a loopback address.
                "--endpoint-reconciler-type=none",
                f"--service-account-key-file={signing_key}",
                f"--service-account-signing-key-file={signing_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--api-audiences=https://kubernetes.default.svc.cluster.local",
            ],
        )
        # /readyz is open to anonymous callers by default RBAC; it turns 200 once etcd
        # is reached, the built-in objects are bootstrapped and RBAC's roles exist.
        wait_until(
            lambda: self._status_problem("/readyz"),
            APISERVER_TIMEOUT,
            what="kube-apiserver /readyz",
            process=apiserver,
        )

    def _status_problem(self, path: str) -> list[str]:
        if not self._extract_ca():
            return ["no serving certificate yet"]
        status, body = self.request("GET", path)
        return [] if status == 200 else [f"{path} answered {status}: {str(body)[:300]}"]

    def _write_service_account_key(self) -> Path:
        """The key that signs service-account tokens (the apiserver verifies with it too)."""
        path = self.run_dir / "service-account.key"
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
        return path

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "loopback",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.ca_file),
                    },
                }
            ],
            "users": [{"name": "admin", "user": {"token": self._token}}],
            "contexts": [{"name": "loopback", "context": {"cluster": "loopback", "user": "admin"}}],
            "current-context": "loopback",
        }
        # JSON is YAML; the file holds the admin's token.
        self.kubeconfig.write_text(json.dumps(config, indent=2))
        self.kubeconfig.chmod(0o600)

    def _start_controller_manager(self) -> None:
        port = free_port()
        process = self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.run_dir / 'controller-manager-certs'}",
                "--leader-elect=false",
                f"--service-account-private-key-file={self.run_dir / 'service-account.key'}",
                f"--root-ca-file={self.ca_file}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
            ],
        )
        self._wait_for_healthz(process, port)

    def _start_scheduler(self) -> None:
        port = free_port()
        process = self._spawn(
            "kube-scheduler",
            [
                f"--kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.run_dir / 'scheduler-certs'}",
                "--leader-elect=false",
            ],
        )
        self._wait_for_healthz(process, port)

    def _wait_for_healthz(self, process: ManagedProcess, port: int) -> None:
        """Poll a component's /healthz (served anonymously, over TLS with a certificate it
        made for itself in memory: loopback, so the certificate is not checked)."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        url = f"https://127.0.0.1:{port}/healthz"

        def problems() -> list[str]:
            try:
                with opener.open(url, timeout=2) as response:
                    return [] if response.status == 200 else [f"HTTP {response.status}"]
            except urllib.error.HTTPError as error:
                return [f"HTTP {error.code}: {error.read()[:200]!r}"]
            except (OSError, ssl.SSLError) as error:
                return [str(error)]

        wait_until(problems, COMPONENT_TIMEOUT, what=f"{process.name} /healthz", process=process)

    def _start_kwok(self) -> None:
        self._spawn(
            "kwok",
            [
                f"--kubeconfig={self.kubeconfig}",
                f"--config={self.tools.kwok_stages}",
                # Only the nodes made here, never a real one (there is none, but a node
                # without this annotation is not ours to fake).
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
                f"--cidr={POD_CIDR}",
                "--node-ip=127.0.0.1",
            ],
        )

    def _add_nodes(self) -> None:
        nodes = {
            "apiVersion": "v1",
            "kind": "List",
            "items": [node_manifest(n) for n in NODE_NAMES],
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(nodes))

    def _wait_for_workload_readiness(self) -> None:
        """Nodes Ready, and the `default` ServiceAccount made (pods are refused before)."""

        def problems() -> list[str]:
            status, nodes = self.request("GET", "/api/v1/nodes")
            if status != 200:
                return [f"listing nodes: HTTP {status}"]
            found: list[str] = []
            ready = {item["metadata"]["name"] for item in nodes["items"] if node_is_ready(item)}
            if missing := sorted(set(NODE_NAMES) - ready):
                found.append(f"nodes not Ready: {', '.join(missing)}")
            status, _ = self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
            if status != 200:
                found.append(f"ServiceAccount default/default: HTTP {status}")
            return found

        kwok = next(process for process in self._processes if process.name == "kwok")
        wait_until(problems, NODES_TIMEOUT, what="Ready nodes", process=kwok)


def _decode(body: bytes) -> Any:
    """JSON bodies decoded, others (/readyz answers "ok") as text."""
    try:
        return json.loads(body)
    except ValueError:
        return body.decode(errors="replace")


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def node_manifest(name: str) -> dict[str, Any]:
    """A fake node, as kwok's documentation makes one; sized so no test runs out."""
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/role": "agent",
                "node-role.kubernetes.io/agent": "",
                "type": "kwok",
                # Three zones, so topology spread constraints have something to spread over.
                "topology.kubernetes.io/zone": f"zone-{name[-1]}",
            },
        },
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def node_is_ready(node: dict[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
