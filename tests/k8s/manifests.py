"""Small manifests the Kubernetes tier's own tests apply and validate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def deployment(name: str, replicas: int, *, version: str = "1") -> dict[str, Any]:
    """A Deployment of one container; `version` (an env var) changes its pod template."""
    labels = {"app.kubernetes.io/name": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            # Never pulled: kwok's nodes run no container.
                            "image": "example.invalid/never-pulled:1",
                            "env": [{"name": "VERSION", "value": version}],
                        }
                    ]
                },
            },
        },
    }


def write_chart(folder: Path, name: str) -> Path:
    """A chart of one Deployment (`replicas` from its values), for Kubernetes 1.37+."""
    chart = folder / name
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        f"apiVersion: v2\nname: {name}\nversion: 0.1.0\nkubeVersion: '>=1.37.0-0'\n"
    )
    (chart / "values.yaml").write_text("replicas: 2\n")
    template = json.dumps(deployment(name, 2)).replace(
        '"replicas": 2', '"replicas": {{ .Values.replicas }}'
    )
    (chart / "templates" / "deployment.yaml").write_text(template)
    return chart
