"""Reading the mesh's Prometheus metrics in a test: every instance's samples, summed."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from services.localmesh.mesh import Mesh


def scrape(url: str) -> list[Sample]:
    response = httpx.get(url, timeout=5)
    assert response.status_code == 200, response.text
    return [s for family in text_string_to_metric_families(response.text) for s in family.samples]


def scrape_all(mesh: Mesh, service: str) -> list[Sample]:
    """The samples of every instance of `service`."""
    return [
        sample
        for address in mesh.metrics_addresses(service)
        for sample in scrape(f"http://{address}/metrics")
    ]


def total(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the `name` samples that carry `labels` (and any others)."""
    return sum(
        sample.value
        for sample in samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )
