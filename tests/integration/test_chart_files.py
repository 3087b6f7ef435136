"""The chart's generated files: what `make gen` writes (so a stale chart fails here
too, not only in `make lint`), and an edge configuration Envoy accepts once the
chart has filled in the release's names."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml  # type: ignore[import-untyped]

from services.catalogue import SERVICES
from services.chart.generate import (
    CHART_DIR,
    CLUSTER_DOMAIN,
    FULLNAME,
    IMAGE_APP_DIR,
    NAMESPACE,
    generated_files,
)
from services.localmesh.edge import DESCRIPTOR_SET, REPO_ROOT
from services.localmesh.mesh import find_envoy


def test_the_chart_holds_what_make_gen_writes() -> None:
    for relative, content in generated_files().items():
        assert (CHART_DIR / relative).read_text() == content, f"{relative}: run `make gen`"


def test_the_catalogue_file_names_every_service_and_its_variables() -> None:
    catalogue = yaml.safe_load((CHART_DIR / "files" / "catalogue.yaml").read_text())
    assert list(catalogue["services"]) == [spec.name for spec in SERVICES]
    for spec in SERVICES:
        names = [variable["name"] for variable in catalogue["services"][spec.name]["env"]]
        assert names == [variable.name for variable in spec.variables()]


def test_the_cluster_edge_config_validates_once_named(tmp_path: Path) -> None:
    config = (CHART_DIR / "files" / "envoy.yaml").read_text()
    for placeholder, value in (
        (FULLNAME, "wallet-mesh"),
        (NAMESPACE, "wallet"),
        (CLUSTER_DOMAIN, "cluster.local"),
    ):
        assert placeholder in config
        config = config.replace(placeholder, value)
    # The image's copy of the descriptor set is this one.
    image_descriptors = str(IMAGE_APP_DIR / DESCRIPTOR_SET.relative_to(REPO_ROOT))
    assert image_descriptors in config
    path = tmp_path / "envoy.yaml"
    path.write_text(config.replace(image_descriptors, str(DESCRIPTOR_SET)))
    result = subprocess.run(
        [find_envoy(), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "type: STRICT_DNS" in config
