"""The user service through Envoy over REST/JSON: the flows a person uses."""

from __future__ import annotations

import httpx

from services.localmesh.mesh import Mesh
from tests.e2e.people import PASSWORD, grant_admin, register_and_login, unique_email


def test_register_returns_the_profile_in_snake_case_without_secrets(rest: httpx.Client) -> None:
    email = unique_email("ada")
    response = rest.post(
        "/v1/users",
        json={
            "email": email,
            "password": PASSWORD,
            "display_name": "Ada",
            "phone": "+491701234567",
        },
    )
    assert response.status_code == 200, response.text
    user = response.json()["user"]
    assert user["email"] == email
    assert user["display_name"] == "Ada"
    assert user["phone"] == "+491701234567"
    assert user["roles"] == ["ROLE_USER"]
    assert "password" not in response.text
    assert "password_hash" not in response.text


def test_original_routes_register_login_logout(rest: httpx.Client) -> None:
    email = unique_email("orig")
    created = rest.post("/users", json={"email": email, "password": PASSWORD, "display_name": "O"})
    assert created.status_code == 200, created.text
    login = rest.post("/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    tokens = login.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 900
    auth = {"authorization": f"Bearer {tokens['access_token']}"}
    logout = rest.post("/logout", json={"refresh_token": tokens["refresh_token"]}, headers=auth)
    assert logout.status_code == 200, logout.text
    assert rest.get("/v1/users/me", headers=auth).status_code == 401
    # Credentials are never taken from a query string: there is no GET /login.
    assert rest.get("/login", params={"email": email, "password": PASSWORD}).status_code in (
        400,
        404,
    )


def test_read_and_update_own_profile(rest: httpx.Client) -> None:
    ada = register_and_login(rest, "ada")
    me = rest.get("/v1/users/me", headers=ada.auth)
    assert me.status_code == 200
    assert me.json()["user"]["user_id"] == ada.user_id
    by_id = rest.get(f"/v1/users/{ada.user_id}", headers=ada.auth)
    assert by_id.json() == me.json()

    new_email = unique_email("lovelace")
    patched = rest.patch(
        "/v1/users/me",
        json={"display_name": "Ada Lovelace", "email": new_email.upper()},
        headers=ada.auth,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["user"]["display_name"] == "Ada Lovelace"
    # Read-your-writes through either instance: the cache was invalidated first.
    for _ in range(4):
        profile = rest.get("/v1/users/me", headers=ada.auth).json()["user"]
        assert profile["display_name"] == "Ada Lovelace"
    # The new email logs in, in any case; the old one no longer does.
    assert (
        rest.post("/v1/auth/login", json={"email": new_email, "password": PASSWORD}).status_code
        == 200
    )
    assert (
        rest.post("/v1/auth/login", json={"email": ada.email, "password": PASSWORD}).status_code
        == 401
    )

    cleared = rest.patch("/v1/users/me", params={"update_mask": "phone"}, json={}, headers=ada.auth)
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["user"]["phone"] == ""


def test_refresh_rotates_and_reuse_revokes_the_session(rest: httpx.Client) -> None:
    ada = register_and_login(rest, "refresh")
    first = rest.post("/v1/auth/refresh", json={"refresh_token": ada.refresh_token})
    assert first.status_code == 200, first.text
    rotated = first.json()
    assert rotated["refresh_token"] != ada.refresh_token
    assert (
        rest.get(
            "/v1/users/me", headers={"authorization": f"Bearer {rotated['access_token']}"}
        ).status_code
        == 200
    )

    reuse = rest.post("/v1/auth/refresh", json={"refresh_token": ada.refresh_token})
    assert reuse.status_code == 401
    assert reuse.json()["code"] == 16
    assert "already used" in reuse.json()["message"]
    again = rest.post("/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert again.status_code == 401


def test_logout_refuses_the_old_access_token_everywhere(rest: httpx.Client) -> None:
    ada = register_and_login(rest, "logout")
    assert rest.post("/v1/auth/logout", json={}, headers=ada.auth).status_code == 200
    # Both instances share the revocation list: every request is refused.
    for _ in range(4):
        response = rest.get("/v1/users/me", headers=ada.auth)
        assert response.status_code == 401
        assert response.json()["message"] == "access token revoked"


def test_admin_lists_users_page_by_page(rest: httpx.Client, mesh: Mesh) -> None:
    admin = register_and_login(rest, "admin")
    for _ in range(3):
        register_and_login(rest, "listed")
    grant_admin(mesh, admin.email)
    # Roles are read at login: log in again to get an admin token.
    token = rest.post("/v1/auth/login", json={"email": admin.email, "password": PASSWORD}).json()
    auth = {"authorization": f"Bearer {token['access_token']}"}

    seen: list[str] = []
    page_token = ""
    # Every user of the test session's mesh (hundreds, registered by other tests too).
    for _ in range(1_000):
        page = rest.get(
            "/v1/users", params={"page_size": 10, "page_token": page_token}, headers=auth
        )
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["users"]) <= 10
        seen += [user["user_id"] for user in body["users"]]
        page_token = body["next_page_token"]
        if not page_token:
            break
    assert len(seen) == len(set(seen))
    assert admin.user_id in seen
    # The original route pages the same list.
    first = rest.get("/users", params={"page_size": 100}, headers=auth).json()["users"]
    assert seen[: len(first)] == [user["user_id"] for user in first]
    # An admin may read anyone's profile.
    assert rest.get(f"/v1/users/{seen[0]}", headers=auth).status_code == 200


def test_jwks_is_public_and_names_the_signing_key(rest: httpx.Client) -> None:
    response = rest.get("/.well-known/jwks.json")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert [(key["kty"], key["crv"], key["alg"], key["use"]) for key in keys] == [
        ("OKP", "Ed25519", "EdDSA", "sig")
    ]


def test_lookup_shows_only_the_public_profile(rest: httpx.Client) -> None:
    ada = register_and_login(rest, "findme")
    bob = register_and_login(rest, "finder")
    found = rest.get("/v1/users:lookup", params={"email": ada.email.upper()}, headers=bob.auth)
    assert found.status_code == 200, found.text
    assert found.json() == {"profile": {"user_id": ada.user_id, "display_name": "Findme"}}
    by_id = rest.get("/v1/users:lookup", params={"user_id": ada.user_id}, headers=bob.auth)
    assert by_id.json() == found.json()
    missing = rest.get("/v1/users:lookup", params={"email": unique_email("x")}, headers=bob.auth)
    assert missing.status_code == 404
    assert rest.get("/v1/users:lookup", params={"email": ada.email}).status_code == 401
