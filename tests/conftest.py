"""Fixtures shared by every tier: real PostgreSQL and Redis servers, started
once per test session on free loopback ports in a temporary folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.localmesh.mesh import ensure_signing_key
from services.localmesh.postgres import PostgresServer
from services.localmesh.processes import free_port
from services.localmesh.redis import RedisServer


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
