"""A control plane whose start fails half-way leaves no process behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.localmesh.processes import ProcessError
from tests.k8s.control_plane import ControlPlane
from tests.k8s.tools import BINARIES, K8sTools


def test_a_failed_start_stops_what_it_had_started(k8s_tools: K8sTools, tmp_path: Path) -> None:
    # The real tools, except an apiserver that exits at once: etcd is up by then.
    tools = K8sTools(tmp_path / "tools")
    (tools.root / "bin").mkdir(parents=True)
    for name in BINARIES:
        tools.binary(name).symlink_to(k8s_tools.binary(name))
    tools.binary("kube-apiserver").unlink()
    tools.binary("kube-apiserver").write_text("#!/bin/sh\necho 'no apiserver today' >&2\nexit 3\n")
    tools.binary("kube-apiserver").chmod(0o755)
    tools.kwok_stages.symlink_to(k8s_tools.kwok_stages)
    tools.schema_dir.parent.mkdir()
    tools.schema_dir.symlink_to(k8s_tools.schema_dir)

    plane = ControlPlane(tmp_path / "run", tools)
    with pytest.raises(ProcessError, match="kube-apiserver exited with code 3"):
        plane.start()

    assert list(plane.logs) == ["etcd", "kube-apiserver"]
    assert "no apiserver today" in plane.logs["kube-apiserver"].read_text()
    assert plane.running == []
