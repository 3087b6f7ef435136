"""Access tokens: what the user service issues, every service accepts, and
nothing forged, expired, revoked or `alg: none` gets through."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest

from services.runtime.auth import TokenVerifier, bearer_token
from services.runtime.errors import Unauthenticated
from services.user.adapters.tokens import JwtIssuer, LocalPublicKeys, SigningKey, thumbprint
from services.user.domain.model import Role
from tests.fakes.user import FakeRevocationCheck, signing_key


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    return signing_key(tmp_path)


def issuer(key: SigningKey, lifetime: int = 900, audience: str = "wallet-mesh") -> JwtIssuer:
    return JwtIssuer(key, issuer="wallet-mesh", audience=audience, lifetime_seconds=lifetime)


def verifier(key: SigningKey, *revoked: str) -> TokenVerifier:
    return TokenVerifier(
        LocalPublicKeys(key),
        FakeRevocationCheck(*revoked),
        issuer="wallet-mesh",
        audience="wallet-mesh",
    )


def now() -> datetime:
    return datetime.now(UTC)


async def test_issued_token_verifies_to_its_caller(key: SigningKey) -> None:
    issued = issuer(key).issue("user-1", frozenset({Role.USER, Role.ADMIN}), now())
    assert jwt.get_unverified_header(issued.token)["kid"] == key.kid
    caller = await verifier(key).verify(issued.token)
    assert caller.user_id == "user-1"
    assert caller.is_admin
    assert caller.token_id == issued.token_id
    assert caller.token_expires_at - time.time() == pytest.approx(900, abs=5)


def test_jwk_is_rfc_shaped_and_kid_is_the_thumbprint(key: SigningKey) -> None:
    jwk = key.jwk()
    assert jwk["kty"] == "OKP"
    assert jwk["crv"] == "Ed25519"
    assert jwk["alg"] == "EdDSA"
    assert jwk["kid"] == thumbprint(key.public_key)
    assert len(base64.urlsafe_b64decode(jwk["x"] + "=")) == 32


async def test_expired_token_is_refused(key: SigningKey) -> None:
    old = datetime.fromtimestamp(time.time() - 3600, UTC)
    token = issuer(key, lifetime=60).issue("u", frozenset({Role.USER}), old).token
    with pytest.raises(Unauthenticated) as caught:
        await verifier(key).verify(token)
    assert caught.value.reason == "TOKEN_EXPIRED"


async def test_tampered_payload_is_refused(key: SigningKey) -> None:
    token = issuer(key).issue("u", frozenset({Role.USER}), now()).token
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["roles"] = ["admin", "user"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(Unauthenticated):
        await verifier(key).verify(f"{header}.{forged}.{signature}")


async def test_alg_none_is_refused(key: SigningKey) -> None:
    claims: dict[str, object] = {"sub": "u", "iss": "wallet-mesh", "aud": "wallet-mesh"}
    claims |= {"jti": "x", "iat": int(time.time()), "exp": int(time.time()) + 60}
    # "" is how PyJWT's "none" algorithm is given no key (None is too, but not in its types).
    token = jwt.encode(claims, "", algorithm="none", headers={"kid": key.kid})
    with pytest.raises(Unauthenticated):
        await verifier(key).verify(token)


async def test_other_key_audience_and_garbage_are_refused(key: SigningKey, tmp_path: Path) -> None:
    stranger = signing_key(tmp_path, "other.pem")
    foreign = issuer(stranger).issue("u", frozenset({Role.USER}), now()).token
    wrong_audience = issuer(key, audience="other").issue("u", frozenset(), now()).token
    for token in (foreign, wrong_audience, "not.a.jwt", ""):
        with pytest.raises(Unauthenticated):
            await verifier(key).verify(token)


async def test_revoked_token_is_refused(key: SigningKey) -> None:
    issued = issuer(key).issue("u", frozenset({Role.USER}), now())
    with pytest.raises(Unauthenticated) as caught:
        await verifier(key, issued.token_id).verify(issued.token)
    assert caught.value.reason == "TOKEN_REVOKED"


def test_bearer_token_parsing() -> None:
    assert bearer_token([("authorization", "Bearer abc")]) == "abc"
    assert bearer_token([("authorization", "bearer  abc ")]) == "abc"
    assert bearer_token([("authorization", "Basic abc")]) is None
    assert bearer_token([("x-other", "Bearer abc")]) is None
    assert bearer_token([]) is None


async def test_a_cached_token_is_still_checked_for_revocation(key: SigningKey) -> None:
    issued = issuer(key).issue("u", frozenset({Role.USER}), now())
    revoked = FakeRevocationCheck()
    checker = TokenVerifier(
        LocalPublicKeys(key), revoked, issuer="wallet-mesh", audience="wallet-mesh"
    )
    assert (await checker.verify(issued.token)).user_id == "u"
    assert (await checker.verify(issued.token)).user_id == "u"  # from the cache
    revoked.token_ids.add(issued.token_id)
    with pytest.raises(Unauthenticated) as caught:
        await checker.verify(issued.token)
    assert caught.value.reason == "TOKEN_REVOKED"
