"""Where scripts/ensure-k8s-tools.sh (`make k8s-tools`) put the Kubernetes tools, and a
kubeconform runner wired to the offline schemas it generated."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TOOLS_DIR = REPO / ".tools" / "k8s"
# The version the control plane is built at (tools/k8s/go.mod) and its schemas describe.
KUBERNETES_VERSION = "v1.37.2"

BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
    "kubeconform",
)


class ToolsMissing(RuntimeError):
    """A tool is not installed: `make k8s-tools` installs them."""


@dataclass(frozen=True)
class K8sTools:
    """The installed tools under `root` (normally `.tools/k8s`)."""

    root: Path = DEFAULT_TOOLS_DIR

    def binary(self, name: str) -> Path:
        return self.root / "bin" / name

    @property
    def kwok_stages(self) -> Path:
        """kwok's stage files for fast nodes (with leases) and fast pods, in one YAML."""
        return self.root / "kwok-stages.yaml"

    @property
    def schema_dir(self) -> Path:
        """JSON schemas of every built-in kind, strict (unknown fields refused)."""
        return self.root / "schemas" / f"{KUBERNETES_VERSION}-standalone-strict"

    def check(self) -> K8sTools:
        """Raise ToolsMissing naming what is absent; return self when all is there."""
        missing = [name for name in BINARIES if not self.binary(name).is_file()]
        missing += [
            str(path)
            for path in (self.kwok_stages, self.schema_dir / "deployment-apps-v1.json")
            if not path.is_file()
        ]
        if missing:
            raise ToolsMissing(
                f"missing under {self.root}: {', '.join(missing)}; run `make k8s-tools`"
            )
        return self

    def kubeconform(
        self, *manifests: Path, extra_args: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess[str]:
        """Validate manifest files (or folders) against the offline schemas only: no
        network, and a kind without a schema is an error, not a silent pass."""
        location = str(self.schema_dir / "{{ .ResourceKind }}{{ .KindSuffix }}.json")
        return subprocess.run(
            [
                str(self.binary("kubeconform")),
                "-strict",
                "-summary",
                "-output",
                "text",
                "-schema-location",
                location,
                *extra_args,
                *(str(path) for path in manifests),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
