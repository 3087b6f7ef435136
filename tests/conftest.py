"""Fixtures shared by every tier: real PostgreSQL and Redis servers, started
once per test session on free loopback ports in a temporary folder.

Every test is marked by its tier, the folder under tests/ it lives in (`pytest -m unit`,
`-m "not e2e"`); the markers are registered in pyproject.toml, and --strict-markers
refuses any other."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.localmesh.mesh import ensure_signing_key
from services.localmesh.postgres import PostgresServer
from services.localmesh.processes import free_port
from services.localmesh.redis import RedisServer

TESTS_ROOT = Path(__file__).resolve().parent
# The folders under tests/ that are tiers; each is a marker of the same name.
TIERS = frozenset({"unit", "integration", "e2e", "chaos", "image", "k8s"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = item.path.resolve().relative_to(TESTS_ROOT).parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in one of {sorted(TIERS)}")
        item.add_marker(tier)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_path_factory.mktemp("postgres"), free_port())
    server.ensure_initialized()
    server.start()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def signing_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "jwt-signing.pem"
    ensure_signing_key(path)
    return path
