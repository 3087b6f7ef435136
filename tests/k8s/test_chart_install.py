"""The chart on a real API server (etcd, kube-apiserver, controller-manager, scheduler;
kwok's fake nodes run the pods — no container runs, so nothing is sent to a pod):
install, upgrade with changed values, rollback and uninstall, as an operator would."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from services.localmesh.processes import wait_until
from tests.k8s.control_plane import ControlPlane

CHART = Path(__file__).resolve().parents[2] / "helm" / "wallet-mesh"
DEFAULTS = CHART / "ci" / "defaults-values.yaml"
RELEASE = "wm"
WORKLOADS = ("edge", "gateway", "ratelimit", "transaction", "user")
LEDGER_SHARDS = [
    "postgresql://wallet:secret@postgres.example.internal:5432/ledger",
    "postgresql://wallet:secret@postgres-2.example.internal:5432/ledger_2",
]
KINDS = "deployments,services,configmaps,secrets,pdb,hpa,cronjobs,jobs,networkpolicies"


def deployments(plane: ControlPlane, namespace: str) -> dict[str, dict[str, Any]]:
    found = plane.kubectl_json("get", "deployments", "-n", namespace)["items"]
    prefix = f"{RELEASE}-wallet-mesh-"
    return {item["metadata"]["name"].removeprefix(prefix): item for item in found}


def rolled_out(plane: ControlPlane, namespace: str) -> list[str]:
    """What keeps the release's Deployments from being fully rolled out (empty: none)."""
    problems = []
    for name, item in deployments(plane, namespace).items():
        spec, status = item["spec"], item.get("status", {})
        wanted = spec["replicas"]
        if status.get("observedGeneration") != item["metadata"]["generation"]:
            problems.append(f"{name}: generation not observed yet")
        elif (status.get("updatedReplicas", 0), status.get("readyReplicas", 0)) != (
            wanted,
            wanted,
        ) or status.get("replicas", 0) != wanted:
            problems.append(f"{name}: {status}")
    return problems


def release_objects(plane: ControlPlane, namespace: str) -> list[str]:
    listed = plane.kubectl(
        "get", KINDS, "-n", namespace, "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name"
    )
    return listed.stdout.split()


def helm(plane: ControlPlane, namespace: str, *args: str) -> None:
    plane.helm(*args, "--namespace", namespace, "--wait", "--timeout", "180s")


def test_install_upgrade_rollback_uninstall(control_plane: ControlPlane, namespace: str) -> None:
    plane = control_plane
    helm(
        plane,
        namespace,
        "install",
        RELEASE,
        str(CHART),
        "-f",
        str(DEFAULTS),
        "--set",
        "services.transaction.autoscaling.enabled=true",
        "--set",
        "services.transaction.autoscaling.maxReplicas=4",
    )
    # Every Deployment has its replicas ready on the fake nodes.
    assert sorted(deployments(plane, namespace)) == sorted(WORKLOADS)
    assert rolled_out(plane, namespace) == []
    # The migration hooks ran: one Job per database, created and completed (deleted
    # after success, as their policy says; their events remain).
    events = plane.kubectl_json(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.kind=Job"
    )["items"]
    completed = {e["involvedObject"]["name"] for e in events if e["reason"] == "Completed"}
    databases = ("gateway", "transaction", "user")
    assert completed == {f"{RELEASE}-wallet-mesh-{name}-migrate" for name in databases}
    # PodDisruptionBudgets and the autoscaler were accepted.
    pdbs = plane.kubectl_json("get", "pdb", "-n", namespace)["items"]
    assert len(pdbs) == len(WORKLOADS)
    hpas = plane.kubectl_json("get", "hpa", "-n", namespace)["items"]
    assert [(h["metadata"]["name"], h["spec"]["maxReplicas"]) for h in hpas] == [
        (f"{RELEASE}-wallet-mesh-transaction", 4)
    ]
    signing_key = plane.kubectl_json("get", "secret", f"{RELEASE}-wallet-mesh-jwt", "-n", namespace)
    before = deployments(plane, namespace)

    # An upgrade with changed values rolls what changed, and keeps the generated secrets.
    helm(
        plane,
        namespace,
        "upgrade",
        RELEASE,
        str(CHART),
        "-f",
        str(DEFAULTS),
        "--reuse-values",
        "--set",
        "services.gateway.replicas=3",
        # Variables are strings (the schema refuses a number).
        "--set-string",
        "services.user.env.USER_ACCESS_TOKEN_SECONDS=600",
        # The ledger on two databases (its shards): a list of URLs.
        "--set-json",
        f"postgres.urls.ledger={json.dumps(LEDGER_SHARDS)}",
    )
    after = deployments(plane, namespace)
    assert after["gateway"]["status"]["readyReplicas"] == 3
    assert after["user"]["metadata"]["generation"] > before["user"]["metadata"]["generation"]
    user_env = after["user"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "USER_ACCESS_TOKEN_SECONDS", "value": "600"} in user_env
    # Untouched services are not rolled.
    assert (
        after["ratelimit"]["metadata"]["generation"]
        == before["ratelimit"]["metadata"]["generation"]
    )
    assert rolled_out(plane, namespace) == []
    kept = plane.kubectl_json("get", "secret", f"{RELEASE}-wallet-mesh-jwt", "-n", namespace)
    assert kept["data"] == signing_key["data"]
    # The services read the ledger's databases as TRANSACTION_DATABASE_URL takes them.
    urls = plane.kubectl_json("get", "secret", f"{RELEASE}-wallet-mesh-postgres", "-n", namespace)
    assert base64.b64decode(urls["data"]["ledger"]).decode() == " ".join(LEDGER_SHARDS)

    # Rollback: back to the first revision's values.
    helm(plane, namespace, "rollback", RELEASE, "1")
    back = deployments(plane, namespace)
    assert back["gateway"]["spec"]["replicas"] == 2
    back_env = back["user"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert all(item["name"] != "USER_ACCESS_TOKEN_SECONDS" for item in back_env)
    wait_until(lambda: rolled_out(plane, namespace), 120, what="the rollback to roll out")

    # Uninstall leaves nothing of the release behind (hooks included).
    plane.helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "180s")
    wait_until(lambda: release_objects(plane, namespace), 120, what="the release's objects to go")
    assert plane.kubectl("get", "secrets", "-n", namespace, "-o", "name").stdout.split() == []


def test_a_value_the_api_server_refuses_fails_the_install(
    control_plane: ControlPlane, namespace: str
) -> None:
    """The schema lets a malformed cron schedule through; the API server does not."""
    result = control_plane.helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        "-f",
        str(DEFAULTS),
        "--set",
        "ledgerAudit.schedule=every-night-please",
        "--set",
        "migrations.enabled=false",
        check=False,
    )
    assert result.returncode != 0
    assert "schedule" in result.stderr
    assert "Invalid value" in result.stderr


def test_the_production_set_is_accepted_by_the_api_server(
    control_plane: ControlPlane, namespace: str
) -> None:
    """Every object of the production-like set (autoscalers, budgets, NetworkPolicies,
    existing secrets) passes the API server's own validation (a server-side dry run)."""
    rendered = control_plane.helm(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        "-f",
        str(CHART / "ci" / "production-values.yaml"),
    )
    applied = control_plane.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=rendered.stdout
    )
    lines = applied.stdout.splitlines()
    assert all(line.endswith("(server dry run)") for line in lines), applied.stdout
    kinds = {line.split("/", 1)[0] for line in lines}
    assert {
        "deployment.apps",
        "horizontalpodautoscaler.autoscaling",
        "poddisruptionbudget.policy",
        "networkpolicy.networking.k8s.io",
        "cronjob.batch",
    } <= kinds
