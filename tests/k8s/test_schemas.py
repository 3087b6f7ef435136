"""The offline checks. kubeconform is wired to the schemas of the control plane's
version: a valid manifest passes, a misspelt field or a wrong type fails, an unknown kind
is an error (never a silent pass or a download), and semantics are left to the API
server. `helm template` assumes that same Kubernetes version."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.k8s.manifests import deployment, write_chart
from tests.k8s.tools import K8sTools


def write(folder: Path, name: str, manifest: dict[str, Any]) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(manifest))  # JSON is YAML
    return path


def test_a_valid_deployment_passes(k8s_tools: K8sTools, tmp_path: Path) -> None:
    result = k8s_tools.kubeconform(write(tmp_path, "valid", deployment("web", 2)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid: 1, Invalid: 0, Errors: 0" in result.stdout


def test_a_misspelt_field_and_a_wrong_type_fail(k8s_tools: K8sTools, tmp_path: Path) -> None:
    misspelt = deployment("web", 2)
    misspelt["spec"]["replica"] = misspelt["spec"].pop("replicas")
    wrong_type = deployment("web", 2)
    wrong_type["spec"]["replicas"] = "two"

    result = k8s_tools.kubeconform(
        write(tmp_path, "misspelt", misspelt), write(tmp_path, "wrong-type", wrong_type)
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Invalid: 2" in result.stdout
    assert "'replica'" in result.stdout
    assert "/spec/replicas" in result.stdout


def test_an_unknown_kind_is_an_error(k8s_tools: K8sTools, tmp_path: Path) -> None:
    manifest = deployment("web", 2) | {"kind": "Deploymnet"}
    result = k8s_tools.kubeconform(write(tmp_path, "unknown", manifest))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "could not find schema for Deploymnet" in result.stdout


def test_schemas_do_not_catch_semantic_errors(k8s_tools: K8sTools, tmp_path: Path) -> None:
    # Negative replicas are well-typed: only the API server refuses them (see
    # test_control_plane.py), which is why the chart is also installed on one.
    result = k8s_tools.kubeconform(write(tmp_path, "negative", deployment("web", -3)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_helm_template_assumes_the_control_planes_kubernetes_version(
    k8s_tools: K8sTools, tmp_path: Path
) -> None:
    # Without a cluster helm assumes the version it was built for (1.20 unless the build
    # says otherwise): a chart asking for 1.37+ would not even render.
    chart = write_chart(tmp_path, "demo")
    result = subprocess.run(
        [str(k8s_tools.binary("helm")), "template", "demo", str(chart)],
        capture_output=True,
        text=True,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(result.stdout)
    validated = k8s_tools.kubeconform(rendered)
    assert "Valid: 1, Invalid: 0, Errors: 0" in validated.stdout, validated.stdout
