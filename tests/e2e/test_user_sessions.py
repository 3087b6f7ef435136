"""Through the edge, REST and gRPC: the per-account limit of failed logins (the
session mesh's per-address limit is generous, so only the per-account one
refuses) and log out everywhere, checked by the user and the transaction service."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.user.server import UserSettings
from tests.e2e.people import PASSWORD, register_and_login, unique_email
from tests.eventually import eventually
from wallet.transaction.v1 import transaction_service_pb2 as tx_pb
from wallet.transaction.v1 import transaction_service_pb2_grpc
from wallet.user.v1 import user_service_pb2 as pb
from wallet.user.v1 import user_service_pb2_grpc

WRONG = "wrong password 1"
# The mesh runs the user service's defaults.
BURST = UserSettings.login_failure_burst
REFILL_SECONDS = UserSettings.login_failure_refill_seconds
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


def log_in(rest: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    return rest.post("/v1/auth/login", json={"email": email, "password": password})


def without_retry_delay(body: dict[str, Any]) -> dict[str, Any]:
    """The refusal's body, minus how long its own bucket needs (one account's
    bucket may be a few milliseconds ahead of the other's)."""
    details = [d for d in body["details"] if d["@type"] != RETRY_INFO]
    return {**body, "details": details}


def retry_delay_seconds(body: dict[str, Any]) -> float:
    (retry,) = [d for d in body["details"] if d["@type"] == RETRY_INFO]
    return float(retry["retry_delay"].removesuffix("s"))


def test_rest_failed_logins_of_one_email_are_limited_alike_for_any_email(
    rest: httpx.Client,
) -> None:
    owner = register_and_login(rest, "owner")
    stranger = unique_email("nobody")
    # Each refusal right after its own failures: however slow the machine, five
    # argon2 checks take less than the refill of one try.
    for _ in range(BURST):
        assert log_in(rest, owner.email, WRONG).status_code == 401
    registered = log_in(rest, owner.email)  # the right password: not even checked
    for _ in range(BURST):
        assert log_in(rest, stranger, WRONG).status_code == 401
    unknown = log_in(rest, stranger, WRONG)
    assert registered.status_code == unknown.status_code == 429, registered.text
    assert without_retry_delay(registered.json()) == without_retry_delay(unknown.json())
    assert registered.json()["code"] == 8  # RESOURCE_EXHAUSTED
    assert "LOGIN_THROTTLED" in registered.text
    assert 1 <= retry_delay_seconds(registered.json()) <= REFILL_SECONDS
    assert registered.headers["retry-after"] == str(int(retry_delay_seconds(registered.json())))
    # Others log in as usual.
    assert log_in(rest, register_and_login(rest, "bystander").email).status_code == 200

    # Once the guessing stops, the owner is let in again after one refill.
    answers: list[httpx.Response] = []

    def let_in() -> bool:
        answers.append(log_in(rest, owner.email))
        return answers[-1].status_code != 429

    eventually(let_in, "the owner to be let in again", 3 * REFILL_SECONDS, interval=0.5)
    assert answers[-1].status_code == 200, answers[-1].text


async def test_grpc_failed_logins_are_resource_exhausted_with_a_retry_hint(
    users: user_service_pb2_grpc.UserServiceAsyncStub, rest: httpx.Client
) -> None:
    owner = register_and_login(rest, "grpcowner")
    for _ in range(BURST):
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await users.Login(pb.LoginRequest(email=owner.email, password=WRONG))
        assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as limited:
        await users.Login(pb.LoginRequest(email=owner.email, password=PASSWORD))
    assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(limited.value)  # type: ignore[arg-type]
    assert status is not None
    delays = []
    for detail in status.details:
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(retry):
            delays.append(retry.retry_delay.seconds)
    assert len(delays) == 1
    assert 1 <= delays[0] <= REFILL_SECONDS


# --- log out everywhere --------------------------------------------------------------


def refused(rest: httpx.Client, access_token: str) -> None:
    auth = {"authorization": f"Bearer {access_token}"}
    # Twice each: the edge spreads calls over both instances of each service.
    for _ in range(2):
        me = rest.get("/v1/users/me", headers=auth)
        assert me.status_code == 401, me.text
        assert me.json()["message"] == "access token revoked"
        wallets = rest.get("/v1/wallets", headers=auth)
        assert wallets.status_code == 401, wallets.text


def served(rest: httpx.Client, access_token: str) -> None:
    auth = {"authorization": f"Bearer {access_token}"}
    for _ in range(2):
        assert rest.get("/v1/users/me", headers=auth).status_code == 200
        assert rest.get("/v1/wallets", headers=auth).status_code == 200


def test_rest_logout_everywhere_ends_every_session_of_the_caller(rest: httpx.Client) -> None:
    ada = register_and_login(rest, "everywhere")
    second = log_in(rest, ada.email).json()
    rotated = rest.post("/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert rotated.status_code == 200
    bob = register_and_login(rest, "bystander")
    for token in (ada.access_token, second["access_token"], rotated.json()["access_token"]):
        served(rest, token)

    # No body needed (`curl -X POST` sends none).
    answer = rest.post("/v1/auth:logoutEverywhere", headers=ada.auth)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {}

    for token in (ada.access_token, second["access_token"], rotated.json()["access_token"]):
        refused(rest, token)
    for refresh_token in (ada.refresh_token, rotated.json()["refresh_token"]):
        again = rest.post("/v1/auth/refresh", json={"refresh_token": refresh_token})
        assert again.status_code == 401, again.text
    # A login right after works, at both services.
    fresh = log_in(rest, ada.email)
    assert fresh.status_code == 200
    served(rest, fresh.json()["access_token"])
    # Bob is not touched.
    served(rest, bob.access_token)
    assert rest.post("/v1/auth/refresh", json={"refresh_token": bob.refresh_token}).status_code == (
        200
    )


async def test_grpc_logout_everywhere(
    users: user_service_pb2_grpc.UserServiceAsyncStub, edge_channel: grpc.aio.Channel
) -> None:
    email = unique_email("grpceverywhere")
    await users.CreateUser(pb.CreateUserRequest(email=email, password=PASSWORD, display_name="G"))
    first = await users.Login(pb.LoginRequest(email=email, password=PASSWORD))
    second = await users.Login(pb.LoginRequest(email=email, password=PASSWORD))
    ledger = transaction_service_pb2_grpc.TransactionServiceStub(edge_channel)

    def bearer(session: pb.LoginResponse) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {session.access_token}"),)

    await ledger.ListWallets(tx_pb.ListWalletsRequest(), metadata=bearer(second))
    await users.LogoutEverywhere(pb.LogoutEverywhereRequest(), metadata=bearer(first))

    for session in (first, second):
        for call in (
            users.GetUser(pb.GetUserRequest(user_id="me"), metadata=bearer(session)),
            ledger.ListWallets(tx_pb.ListWalletsRequest(), metadata=bearer(session)),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await users.RefreshToken(pb.RefreshTokenRequest(refresh_token=session.refresh_token))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    fresh = await users.Login(pb.LoginRequest(email=email, password=PASSWORD))
    await users.GetUser(pb.GetUserRequest(user_id="me"), metadata=bearer(fresh))
    await ledger.ListWallets(tx_pb.ListWalletsRequest(), metadata=bearer(fresh))
