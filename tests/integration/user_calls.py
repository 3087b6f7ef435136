"""Calls to an in-process user service over real gRPC, shared by the integration tests
of its API and of its sessions."""

from __future__ import annotations

from collections.abc import Awaitable

import grpc
import pytest

PASSWORD = "correct horse battery"


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def expect_error(call: Awaitable[object], code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """Awaits `call`, which must fail with `code`; returns the error."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value
