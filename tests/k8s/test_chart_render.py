"""The chart without a cluster: `helm lint --strict`, and `helm template` of each value set
(helm/wallet-mesh/ci/) validated by kubeconform against offline schemas; broken values
are refused with the field named."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from services.catalogue import SERVICES
from tests.k8s.tools import KUBERNETES_VERSION, K8sTools

CHART = Path(__file__).resolve().parents[2] / "helm" / "wallet-mesh"
VALUE_SETS = sorted(path.name for path in (CHART / "ci").glob("*-values.yaml"))


def helm(tools: K8sTools, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tools.binary("helm")), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def render(tools: K8sTools, values: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return helm(
        tools,
        "template",
        "wm",
        str(CHART),
        "--namespace",
        "wallet",
        "--kube-version",
        KUBERNETES_VERSION.lstrip("v"),
        "-f",
        str(CHART / "ci" / values),
        *extra,
    )


def objects(manifest: str) -> list[dict[str, object]]:
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def string_data(document: dict[str, object]) -> dict[str, str]:
    data = document.get("stringData")
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def kinds(manifest: str) -> dict[str, int]:
    counted: dict[str, int] = {}
    for document in objects(manifest):
        kind = str(document["kind"])
        counted[kind] = counted.get(kind, 0) + 1
    return counted


def test_there_are_three_value_sets() -> None:
    assert VALUE_SETS == [
        "defaults-values.yaml",
        "minimal-values.yaml",
        "production-values.yaml",
    ]


@pytest.mark.parametrize("values", VALUE_SETS)
def test_lint_strict(k8s_tools: K8sTools, values: str) -> None:
    result = helm(k8s_tools, "lint", "--strict", str(CHART), "-f", str(CHART / "ci" / values))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", VALUE_SETS)
def test_every_object_matches_its_schema(k8s_tools: K8sTools, values: str, tmp_path: Path) -> None:
    rendered = render(k8s_tools, values)
    assert rendered.returncode == 0, rendered.stderr
    path = tmp_path / "manifest.yaml"
    path.write_text(rendered.stdout)
    checked = k8s_tools.kubeconform(path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Invalid: 0, Errors: 0" in checked.stdout


def test_every_service_of_the_catalogue_is_deployed(k8s_tools: K8sTools) -> None:
    manifest = render(k8s_tools, "defaults-values.yaml").stdout
    deployments = {
        str(doc["metadata"]["name"])  # type: ignore[index]
        for doc in objects(manifest)
        if doc["kind"] == "Deployment"
    }
    assert deployments == {f"wm-wallet-mesh-{spec.name}" for spec in SERVICES} | {
        "wm-wallet-mesh-edge"
    }
    # One migration Job per database, as hooks.
    jobs = [doc for doc in objects(manifest) if doc["kind"] == "Job"]
    assert len(jobs) == len([spec for spec in SERVICES if spec.database])
    assert all(
        job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"  # type: ignore[index]
        for job in jobs
    )


def test_the_production_set_adds_autoscalers_budgets_and_policies(k8s_tools: K8sTools) -> None:
    counted = kinds(render(k8s_tools, "production-values.yaml").stdout)
    assert counted["HorizontalPodAutoscaler"] == 2  # the transaction service and the edge
    assert counted["PodDisruptionBudget"] == len(SERVICES) + 1
    assert counted["NetworkPolicy"] == len(SERVICES) + 1
    # Every secret is the operator's: the chart makes none (but the hook has none either).
    assert "Secret" not in counted


def test_the_minimal_set_has_no_budgets_and_no_audit(k8s_tools: K8sTools) -> None:
    counted = kinds(render(k8s_tools, "minimal-values.yaml").stdout)
    assert "PodDisruptionBudget" not in counted
    assert "CronJob" not in counted


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("services.user.replicas=-3", "/services/user/replicas"),
        ("services.usr.replicas=3", "'usr' not allowed"),
        ("edge.service.type=Public", "/edge/service/type"),
        ("services.ratelimit.resources.memory=lots", "/services/ratelimit/resources/memory"),
        ("postgres.urls.ledger=", "postgres.urls.ledger (or postgres.existingSecret) is required"),
    ],
)
def test_broken_values_are_refused_naming_the_field(
    k8s_tools: K8sTools, override: str, named: str
) -> None:
    result = render(k8s_tools, "defaults-values.yaml", "--set", override)
    assert result.returncode != 0
    assert named in result.stderr


def test_monitoring_switches_add_a_service_monitor_and_alerts(k8s_tools: K8sTools) -> None:
    rendered = render(
        k8s_tools,
        "defaults-values.yaml",
        "--set",
        "monitoring.serviceMonitor=true",
        "--set",
        "monitoring.prometheusRule=true",
    )
    assert rendered.returncode == 0, rendered.stderr
    found = {str(doc["kind"]): doc for doc in objects(rendered.stdout)}
    monitor = found["ServiceMonitor"]
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "interval": "15s"}]  # type: ignore[index]
    rules = found["PrometheusRule"]["spec"]["groups"][0]["rules"]  # type: ignore[index]
    assert [rule["alert"] for rule in rules] == [
        "WalletPaymentProviderBreakerOpen",
        "WalletReconcilerBacklog",
        "WalletServerErrors",
        "WalletLedgerAuditFailed",
    ]
    # Each alert reads a metric the services export (services/*/metrics.py).
    for rule, metric in zip(
        rules,
        (
            "gateway_circuit_breaker_state",
            "ledger_external_pending_oldest_seconds",
            "rpc_requests_total",
            "kube_job_status_failed",
        ),
        strict=True,
    ):
        assert metric in rule["expr"]


def test_a_service_may_run_an_image_of_its_own(k8s_tools: K8sTools) -> None:
    rendered = render(
        k8s_tools, "defaults-values.yaml", "--set", "services.gateway.image.tag=0.1.1"
    )
    images: dict[str, set[str]] = {}
    for doc in objects(rendered.stdout):
        if doc["kind"] in ("Deployment", "Job"):
            name = str(doc["metadata"]["name"])  # type: ignore[index]
            pod = doc["spec"]["template"]["spec"]  # type: ignore[index]
            images[name] = {container["image"] for container in pod["containers"]}
    assert images.pop("wm-wallet-mesh-gateway") == {"localhost/wallet-mesh:0.1.1"}
    assert images.pop("wm-wallet-mesh-gateway-migrate") == {"localhost/wallet-mesh:0.1.1"}
    assert set().union(*images.values()) == {"localhost/wallet-mesh:0.1.0"}


def test_the_ledger_takes_a_list_of_shard_databases(k8s_tools: K8sTools) -> None:
    """postgres.urls.ledger as a list: the Secrets the services and the migration Job read
    hold it joined by spaces, as TRANSACTION_DATABASE_URL takes it."""
    shards = ["postgresql://w@db-a:5432/ledger", "postgresql://w@db-b:5432/ledger_2"]
    result = render(
        k8s_tools,
        "defaults-values.yaml",
        "--set-json",
        f"postgres.urls.ledger={json.dumps(shards)}",
    )
    assert result.returncode == 0, result.stderr
    ledger_urls = [
        string_data(doc)["ledger"]
        for doc in objects(result.stdout)
        if doc["kind"] == "Secret" and "ledger" in string_data(doc)
    ]
    # The services' Secret and the migration hook's.
    assert ledger_urls == [" ".join(shards)] * 2
    empty = render(k8s_tools, "defaults-values.yaml", "--set-json", "postgres.urls.ledger=[]")
    assert empty.returncode != 0
    assert "/postgres/urls/ledger" in empty.stderr
