"""Fixtures of the Kubernetes tier: the tools `make k8s-tools` installed, and one control
plane per test session (started once: ~5 s; every test works in a namespace of its own)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.k8s.control_plane import ControlPlane
from tests.k8s.tools import K8sTools


@pytest.fixture(scope="session")
def k8s_tools() -> K8sTools:
    # Fails (does not skip) when they are missing: `make test-k8s` installs them first.
    return K8sTools().check()


@pytest.fixture(scope="session")
def control_plane(
    k8s_tools: K8sTools, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    with ControlPlane(tmp_path_factory.mktemp("control-plane"), k8s_tools) as plane:
        yield plane


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting for it)."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    control_plane.create_namespace(name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")
