"""The loopback control plane behaves as a cluster does for what the chart's tests need:
Deployments reach their ready replicas on the fake nodes, rollouts complete, and the API
server refuses an invalid object (what no schema check catches)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.k8s.control_plane import NODE_NAMES, CommandFailed, ControlPlane
from tests.k8s.manifests import deployment, write_chart

ROLLOUT_TIMEOUT = "60s"


def apply(plane: ControlPlane, namespace: str, manifest: dict[str, Any]) -> None:
    plane.kubectl("apply", "--namespace", namespace, "-f", "-", input=json.dumps(manifest))


def rollout_status(plane: ControlPlane, namespace: str, name: str) -> None:
    """Wait (bounded) until the Deployment's rollout is complete."""
    plane.kubectl(
        "rollout",
        "status",
        f"deployment/{name}",
        "--namespace",
        namespace,
        f"--timeout={ROLLOUT_TIMEOUT}",
    )


def live_pods(plane: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    """The Deployment's pods that are not being deleted."""
    pods = plane.kubectl_json(
        "get", "pods", "--namespace", namespace, "--selector", f"app.kubernetes.io/name={name}"
    )["items"]
    return [pod for pod in pods if "deletionTimestamp" not in pod["metadata"]]


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_a_deployment_reaches_its_ready_replicas_on_the_fake_nodes(
    control_plane: ControlPlane, namespace: str
) -> None:
    apply(control_plane, namespace, deployment("web", 2))
    rollout_status(control_plane, namespace, "web")

    status = control_plane.kubectl_json("get", "deployment/web", "--namespace", namespace)["status"]
    assert (status["readyReplicas"], status["availableReplicas"]) == (2, 2)
    pods = live_pods(control_plane, namespace, "web")
    assert len(pods) == 2
    # Placed by the scheduler on kwok's nodes, and marked Running and Ready by kwok.
    assert {pod["spec"]["nodeName"] for pod in pods} <= set(NODE_NAMES)
    assert all(pod["status"]["phase"] == "Running" and is_ready(pod) for pod in pods)


def test_a_changed_pod_template_rolls_every_pod_over(
    control_plane: ControlPlane, namespace: str
) -> None:
    apply(control_plane, namespace, deployment("api", 2, version="1"))
    rollout_status(control_plane, namespace, "api")
    first_pods = {pod["metadata"]["name"] for pod in live_pods(control_plane, namespace, "api")}

    apply(control_plane, namespace, deployment("api", 2, version="2"))
    rollout_status(control_plane, namespace, "api")

    found = control_plane.kubectl_json("get", "deployment/api", "--namespace", namespace)
    assert found["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    status = found["status"]
    assert status["observedGeneration"] == found["metadata"]["generation"]
    assert (status["updatedReplicas"], status["readyReplicas"], status["replicas"]) == (2, 2, 2)
    # Every pod now comes from the new template, and none of the first ones is left.
    pods = live_pods(control_plane, namespace, "api")
    assert len(pods) == 2
    assert not first_pods & {pod["metadata"]["name"] for pod in pods}
    assert all(pod["spec"]["containers"][0]["env"][0]["value"] == "2" for pod in pods)
    assert all(is_ready(pod) for pod in pods)
    replica_sets = control_plane.kubectl_json(
        "get", "replicasets", "--namespace", namespace, "--selector", "app.kubernetes.io/name=api"
    )["items"]
    assert sorted(rs["spec"]["replicas"] for rs in replica_sets) == [0, 2]


def test_the_api_server_refuses_negative_replicas(
    control_plane: ControlPlane, namespace: str
) -> None:
    manifest = deployment("broken", -3)

    with pytest.raises(CommandFailed) as refused:
        apply(control_plane, namespace, manifest)
    assert "spec.replicas: Invalid value: -3" in refused.value.result.stderr

    # The same through the API itself: 422 Unprocessable Entity, reason Invalid.
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    status, body = control_plane.request("POST", path, manifest)
    assert status == 422, body
    assert body["reason"] == "Invalid"
    assert [cause["field"] for cause in body["details"]["causes"]] == ["spec.replicas"]
    # And nothing was stored.
    assert control_plane.request("GET", f"{path}/broken")[0] == 404


def test_helm_installs_and_uninstalls_a_chart(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    chart = write_chart(tmp_path, "demo")

    # --wait: helm itself waits (bounded) for the Deployment's ready replicas.
    control_plane.helm(
        "install", "demo", str(chart), "--namespace", namespace, "--wait", "--timeout", "60s"
    )
    status = control_plane.kubectl_json("get", "deployment/demo", "--namespace", namespace)
    assert status["status"]["readyReplicas"] == 2

    control_plane.helm("uninstall", "demo", "--namespace", namespace, "--wait", "--timeout", "60s")
    left = control_plane.kubectl_json("get", "deployments,secrets", "--namespace", namespace)
    assert left["items"] == []
