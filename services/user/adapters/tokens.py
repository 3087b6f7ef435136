"""Access tokens: EdDSA (Ed25519) JWTs signed with a key from configuration,
and the JSON Web Key Set that lets everyone else verify them."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.runtime.auth import ACCESS_TOKEN_ALGORITHM, derive_key
from services.user.domain.model import IssuedAccessToken, Role


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    private_key: Ed25519PrivateKey
    kid: str

    @classmethod
    def from_pem_file(cls, path: Path) -> SigningKey:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
        return cls(key, thumbprint(key.public_key()))

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def derive_secret(self, purpose: str) -> bytes:
        """A 256-bit secret for another use, derived from the private key: every
        instance that holds the key derives the same one."""
        raw = self.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return derive_key(raw, purpose)

    def jwk(self) -> dict[str, str]:
        return {**_okp_members(self.public_key), "kid": self.kid, "alg": "EdDSA", "use": "sig"}


def _okp_members(public_key: Ed25519PublicKey) -> dict[str, str]:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}


def thumbprint(public_key: Ed25519PublicKey) -> str:
    """RFC 7638 JWK thumbprint: the key's id changes exactly when the key does."""
    canonical = json.dumps(_okp_members(public_key), separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


class JwtIssuer:
    def __init__(
        self, key: SigningKey, *, issuer: str, audience: str, lifetime_seconds: int
    ) -> None:
        self._key = key
        self._issuer = issuer
        self._audience = audience
        self._lifetime = lifetime_seconds

    @property
    def lifetime_seconds(self) -> int:
        return self._lifetime

    def issue(self, user_id: str, roles: frozenset[Role], now: datetime) -> IssuedAccessToken:
        issued_at = int(now.timestamp())
        token_id = str(uuid.uuid4())
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": user_id,
            "iat": issued_at,
            "exp": issued_at + self._lifetime,
            "jti": token_id,
            "roles": sorted(role.value for role in roles),
        }
        token = jwt.encode(
            claims,
            self._key.private_key,
            algorithm=ACCESS_TOKEN_ALGORITHM,
            headers={"kid": self._key.kid},
        )
        return IssuedAccessToken(token, token_id, self._lifetime)


class LocalPublicKeys:
    """The user service verifies its own tokens with the keys it holds."""

    def __init__(self, *keys: SigningKey) -> None:
        self._keys = {key.kid: key.public_key for key in keys}
        self.jwks = [key.jwk() for key in keys]

    async def key_for(self, kid: str) -> Ed25519PublicKey | None:
        return self._keys.get(kid)
