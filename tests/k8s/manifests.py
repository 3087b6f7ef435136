"""Small manifests the Kubernetes tier's own tests apply and validate."""

from __future__ import annotations

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
