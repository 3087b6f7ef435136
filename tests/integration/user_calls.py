"""The in-process user service of the integration tests (tests/integration/conftest.py
starts it) and the calls to it over real gRPC, shared by the tests of its API, its
sessions and its database."""

from __future__ import annotations

from collections.abc import Awaitable

import grpc
import pytest

from services.runtime import server as runtime_server
from services.user.domain.accounts import Accounts

# The user service's database on the session's PostgreSQL.
USERS_DB = "users_it"
PASSWORD = "correct horse battery"


class RunningUserService:
    def __init__(self, running: runtime_server.RunningServer, accounts: Accounts) -> None:
        self.running = running
        self.accounts = accounts
        self.target = f"127.0.0.1:{running.port}"


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def expect_error(call: Awaitable[object], code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """Awaits `call`, which must fail with `code`; returns the error."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value
