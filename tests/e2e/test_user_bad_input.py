"""Bad input through the edge: each gets its exact status (HTTP and gRPC), a
body that says which field and why, and leaves nothing written."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import grpc
import httpx
import jwt
import pytest

from services.localmesh.mesh import Mesh
from services.user.adapters.tokens import JwtIssuer, SigningKey
from services.user.domain.model import Role
from tests.e2e.people import PASSWORD, register_and_login, unique_email
from tests.field_violations import rest_violations as violations
from wallet.user.v1 import user_service_pb2 as pb
from wallet.user.v1 import user_service_pb2_grpc


def assert_not_registered(rest: httpx.Client, email: str) -> None:
    login = rest.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 401


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"email", "password", "display_name"}),
        ({"email": "not-an-email", "password": PASSWORD, "display_name": "X"}, {"email"}),
        ({"email": "@", "password": "short", "display_name": "X"}, {"email", "password"}),
        ({"email": "{e}", "password": "onlyletterslong", "display_name": "X"}, {"password"}),
        ({"email": "{e}", "password": PASSWORD, "display_name": "X" * 101}, {"display_name"}),
        ({"email": "{e}", "password": PASSWORD, "display_name": "X", "phone": "12"}, {"phone"}),
    ],
)
def test_invalid_registration_is_400_with_field_violations(
    rest: httpx.Client, body: dict[str, str], fields: set[str]
) -> None:
    email = unique_email("bad")
    body = {key: value.replace("{e}", email) for key, value in body.items()}
    response = rest.post("/v1/users", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == 3  # INVALID_ARGUMENT
    assert set(violations(response)) == fields
    assert_not_registered(rest, email)


def test_malformed_json_and_unknown_query_parameter_are_400(rest: httpx.Client) -> None:
    email = unique_email("malformed")
    response = rest.post(
        "/v1/users",
        content=b'{"email": "' + email.encode() + b'", "password": ',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert_not_registered(rest, email)
    assert rest.get("/.well-known/jwks.json", params={"debug": "1"}).status_code == 400


def test_unknown_body_fields_cannot_grant_anything(rest: httpx.Client) -> None:
    # proto3 JSON (and Envoy's transcoder) drops fields the request does not
    # define; what matters is that they have no effect.
    email = unique_email("sneaky")
    response = rest.post(
        "/v1/users",
        json={
            "email": email,
            "password": PASSWORD,
            "display_name": "Sneaky",
            "roles": ["ROLE_ADMIN"],
            "user_id": "00000000-0000-0000-0000-000000000001",
        },
    )
    assert response.status_code == 200
    user = response.json()["user"]
    assert user["roles"] == ["ROLE_USER"]
    assert user["user_id"] != "00000000-0000-0000-0000-000000000001"


def test_duplicate_email_is_409_and_keeps_the_first(rest: httpx.Client) -> None:
    ada = register_and_login(rest, "dup")
    again = rest.post(
        "/v1/users",
        json={"email": ada.email.upper(), "password": PASSWORD + "!", "display_name": "Eve"},
    )
    assert again.status_code == 409
    assert again.json()["code"] == 6  # ALREADY_EXISTS
    assert rest.get("/v1/users/me", headers=ada.auth).json()["user"]["display_name"] == "Dup"
    wrong = rest.post("/v1/auth/login", json={"email": ada.email, "password": PASSWORD + "!"})
    assert wrong.status_code == 401


def test_wrong_password_and_unknown_email_look_the_same(rest: httpx.Client) -> None:
    ada = register_and_login(rest, "pw")
    wrong = rest.post("/v1/auth/login", json={"email": ada.email, "password": "wrong password 1"})
    unknown = rest.post(
        "/v1/auth/login", json={"email": unique_email("nobody"), "password": "wrong password 1"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


def _sign(mesh: Mesh, *, issued_at: float, lifetime: int) -> str:
    key = SigningKey.from_pem_file(mesh.signing_key_path)
    issuer = JwtIssuer(key, issuer="wallet-mesh", audience="wallet-mesh", lifetime_seconds=lifetime)
    return issuer.issue(
        "00000000-0000-0000-0000-000000000002",
        frozenset({Role.USER}),
        datetime.fromtimestamp(issued_at, UTC),
    ).token


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["roles"] = ["admin", "user"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _alg_none() -> str:
    claims: dict[str, object] = {"sub": "x", "iss": "wallet-mesh", "aud": "wallet-mesh"}
    claims |= {"jti": "n", "iat": int(time.time()), "exp": int(time.time()) + 300}
    # "" is how PyJWT's "none" algorithm is given no key (None is too, but not in its types).
    return jwt.encode(claims, "", algorithm="none")


BAD_TOKENS = ["missing", "expired", "tampered", "alg_none", "garbage"]


def bad_token(mesh: Mesh, kind: str) -> str | None:
    if kind == "missing":
        return None
    if kind == "expired":
        return _sign(mesh, issued_at=time.time() - 7200, lifetime=60)
    if kind == "tampered":
        return _tamper(_sign(mesh, issued_at=time.time(), lifetime=300))
    if kind == "alg_none":
        return _alg_none()
    return "not-a-token"


@pytest.mark.parametrize("kind", BAD_TOKENS)
def test_bad_tokens_are_401_over_rest(mesh: Mesh, rest: httpx.Client, kind: str) -> None:
    token = bad_token(mesh, kind)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = rest.get("/v1/users/me", headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("kind", BAD_TOKENS)
async def test_bad_tokens_are_unauthenticated_over_grpc(mesh: Mesh, kind: str) -> None:
    token = bad_token(mesh, kind)
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    async with grpc.aio.insecure_channel(mesh.edge_grpc_target) as channel:
        stub = user_service_pb2_grpc.UserServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetUser(pb.GetUserRequest(user_id="me"), metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_services_verify_tokens_themselves(mesh: Mesh) -> None:
    """Defense in depth: straight to an instance, bypassing Envoy, a forged
    token is refused all the same."""
    forged = _tamper(_sign(mesh, issued_at=time.time(), lifetime=300))
    for address in mesh.instance_addresses("user"):
        async with grpc.aio.insecure_channel(address) as channel:
            stub = user_service_pb2_grpc.UserServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetUser(
                    pb.GetUserRequest(user_id="me"),
                    metadata=(("authorization", f"Bearer {forged}"),),
                )
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_another_users_profile_is_403(rest: httpx.Client) -> None:
    ada = register_and_login(rest, "owner")
    eve = register_and_login(rest, "eve")
    assert rest.get(f"/v1/users/{ada.user_id}", headers=eve.auth).status_code == 403
    patch = rest.patch(f"/v1/users/{ada.user_id}", json={"display_name": "Pwned"}, headers=eve.auth)
    assert patch.status_code == 403
    assert rest.get("/v1/users/me", headers=ada.auth).json()["user"]["display_name"] == "Owner"


def test_non_admin_listing_is_403(rest: httpx.Client) -> None:
    eve = register_and_login(rest, "lister")
    for path in ("/v1/users", "/users"):
        response = rest.get(path, headers=eve.auth)
        assert response.status_code == 403
        assert response.json()["code"] == 7  # PERMISSION_DENIED


def test_bad_update_is_400_and_changes_nothing(rest: httpx.Client) -> None:
    ada = register_and_login(rest, "upd")
    response = rest.patch(
        "/v1/users/me",
        json={"display_name": "Fine", "email": "broken"},
        headers=ada.auth,
    )
    assert response.status_code == 400
    assert set(violations(response)) == {"user.email"}
    assert rest.get("/v1/users/me", headers=ada.auth).json()["user"]["display_name"] == "Upd"
    masked = rest.patch(
        "/v1/users/me",
        params={"update_mask": "roles"},
        json={"display_name": "x"},
        headers=ada.auth,
    )
    assert masked.status_code == 400
    assert set(violations(masked)) == {"update_mask"}


def test_oversized_body_is_413(rest: httpx.Client) -> None:
    email = unique_email("huge")
    response = rest.post(
        "/v1/users", json={"email": email, "password": PASSWORD, "display_name": "x" * 200_000}
    )
    assert response.status_code == 413
    assert_not_registered(rest, email)


def test_unknown_path_and_method_are_404(rest: httpx.Client) -> None:
    assert rest.get("/v1/nothing-here").status_code == 404
    assert rest.delete("/v1/users/me").status_code == 404
