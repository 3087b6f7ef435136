"""How `make run` places the ledger's databases (MeshConfig.for_development): two by
default on the mesh's PostgreSQL server, spread over more servers when asked."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from services.catalogue import TRANSACTION, USER
from services.localmesh.mesh import Mesh, MeshConfig, MeshError


@pytest.fixture(autouse=True)
def _no_mesh_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WALLET_LEDGER_DATABASES", "WALLET_LEDGER_SERVERS", "WALLET_POSTGRES_PORT"):
        monkeypatch.delenv(name, raising=False)


def mesh(tmp_path: Path) -> Mesh:
    return Mesh(dataclasses.replace(MeshConfig.for_development(), run_dir=tmp_path))


def test_two_ledger_databases_on_one_server_by_default(tmp_path: Path) -> None:
    made = mesh(tmp_path)
    spec = made.spec(TRANSACTION.name)
    assert made.databases(spec) == ("ledger", "ledger_2")
    assert made.config.shard_server_ports == ()
    assert {made.database_server(spec, name) for name in made.databases(spec)} == {made.postgres}


def test_a_second_server_holds_every_other_ledger_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WALLET_POSTGRES_PORT", "40000")
    monkeypatch.setenv("WALLET_LEDGER_DATABASES", "3")
    monkeypatch.setenv("WALLET_LEDGER_SERVERS", "2")
    made = mesh(tmp_path)
    spec = made.spec(TRANSACTION.name)
    ports = [made.database_server(spec, name).port for name in made.databases(spec)]
    assert ports == [40000, 40001, 40000]
    # Databases of services that are not sharded stay on the mesh's own server.
    assert made.database_server(made.spec(USER.name), "users").port == 40000
    assert made.shard_servers[0].server_dir != made.postgres.server_dir


def test_more_servers_than_databases_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WALLET_LEDGER_SERVERS", "3")
    with pytest.raises(MeshError, match="WALLET_LEDGER_SERVERS must be 1 to"):
        MeshConfig.for_development()
