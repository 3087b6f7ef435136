"""Who is calling: access-token verification shared by every service.

Envoy verifies tokens at the edge; every service verifies them again (defense
in depth) because nothing forces a caller to come through the edge. A verified
token becomes a `Caller`, kept in a context variable for the length of one RPC.
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.runtime.cooldown import Cooldown
from services.runtime.errors import PermissionDenied, Unauthenticated, Unavailable

log = logging.getLogger(__name__)

ADMIN_ROLE = "admin"
VERIFIED_TOKENS_CACHED = 10_000
# The only algorithm accepted: pinning it is what makes `alg: none` and
# algorithm-confusion tokens fail.
ACCESS_TOKEN_ALGORITHM = "EdDSA"  # noqa: S105 (an algorithm name, not a secret)
# How far clocks may disagree: tokens are accepted this long after `exp`.
CLOCK_LEEWAY_SECONDS = 5


@dataclass(frozen=True)
class Caller:
    """The authenticated user behind the current RPC."""

    user_id: str
    roles: frozenset[str]
    token_id: str  # the access token's `jti`
    token_expires_at: int  # the access token's `exp`, seconds since the epoch
    # The token itself, to call other services on the caller's behalf.
    access_token: str = field(default="", repr=False)
    # The access token's `iat`, seconds since the epoch (0, the default, is older
    # than every "log out everywhere").
    token_issued_at: int = 0

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles

    def require_admin(self) -> None:
        if not self.is_admin:
            raise PermissionDenied("this operation needs the admin role", reason="ADMIN_ONLY")


_current_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "current_caller", default=None
)


def current_caller() -> Caller:
    """The caller of the RPC being handled; public RPCs have none."""
    caller = _current_caller.get()
    if caller is None:
        raise Unauthenticated("this call needs an access token", reason="TOKEN_MISSING")
    return caller


def set_current_caller(caller: Caller | None) -> contextvars.Token[Caller | None]:
    return _current_caller.set(caller)


class PublicKeys(Protocol):
    """Finds the public key a token names in its `kid` header."""

    def key_for(self, kid: str) -> Awaitable[Ed25519PublicKey | None]: ...


class RevocationCheck(Protocol):
    def is_revoked(self, caller: Caller) -> Awaitable[bool]: ...


def cutoff_for(now: float) -> int:
    """The `iat` from which access tokens stay valid when every token of a user
    issued until `now` is revoked. `iat` counts whole seconds, so a token issued
    earlier in the second of `now` looks exactly like one issued later in it: the
    cutoff is the next whole second, and new tokens must wait for it."""
    return math.floor(now) + 1


def is_revoked_by(
    caller: Caller, revoked_jti: bytes | str | None, cutoff: bytes | str | None
) -> bool:
    """Whether the caller's token is revoked, given what Redis holds for it: an
    entry under its `jti` (logout), or a cutoff of its user (log out everywhere)
    later than its `iat`."""
    return revoked_jti is not None or (cutoff is not None and caller.token_issued_at < int(cutoff))


class RevokedTokens:
    """Access tokens revoked before they expire, in Redis: one by its `jti`
    (logout), or all of a user's issued before a cutoff (log out everywhere).

    Each entry lives as long as the tokens it revokes would have. Both are read
    with one MGET, so a call costs one round trip. If Redis is unreachable the
    check fails open: access tokens live minutes, and the services keep working
    without Redis (DESIGN.md, Caching). It is logged; after a timeout Redis is not
    asked again for `cooldown` seconds (those checks fail open at once, counted in
    `unchecked`): a Redis that hangs must not add its timeout to every call.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        cooldown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._cooldown = Cooldown(cooldown, clock)
        self.unchecked = 0  # checks skipped during a cooldown

    @staticmethod
    def _key(token_id: str) -> str:
        return f"auth:revoked-jti:{token_id}"

    @staticmethod
    def _cutoff_key(user_id: str) -> str:
        return f"auth:revoked-before:{user_id}"

    async def revoke(self, token_id: str, expires_at: int) -> None:
        ttl = expires_at - int(time.time())
        if ttl <= 0:
            return
        try:
            await self._redis.set(self._key(token_id), b"1", ex=ttl)
        except (RedisError, OSError) as error:
            # Saying "logged out" while the token still works would be a lie.
            raise Unavailable("could not revoke the access token; try again") from error

    async def revoke_all_of_user(self, user_id: str, token_lifetime_seconds: int) -> None:
        """Revokes every access token of the user issued until now, and returns once
        the clock has reached the cutoff (within a second), so that a token issued
        after this returns, a login right after say, is valid."""
        cutoff = cutoff_for(time.time())
        # The last token revoked (issued just before the cutoff) is accepted until
        # its `exp` plus the leeway; the entry outlives it.
        ttl = token_lifetime_seconds + CLOCK_LEEWAY_SECONDS + 1
        try:
            await self._redis.set(self._cutoff_key(user_id), cutoff, ex=ttl)
        except (RedisError, OSError) as error:
            raise Unavailable("could not revoke the access tokens; try again") from error
        await asyncio.sleep(max(0.0, cutoff - time.time()))

    async def is_revoked(self, caller: Caller) -> bool:
        if self._cooldown.active():
            self.unchecked += 1
            return False
        try:
            revoked_jti, cutoff = await self._redis.mget(
                self._key(caller.token_id), self._cutoff_key(caller.user_id)
            )
        except (RedisError, OSError) as error:
            # Only a Redis that does not answer in time is left alone: one that refuses
            # connections fails at once, and is asked again on the next call, so that
            # revocations count again the moment it is back.
            if isinstance(error, RedisTimeoutError):
                self._cooldown.start()
            log.warning("revocation list unreachable, accepting token", extra={"error": str(error)})
            return False
        return is_revoked_by(caller, revoked_jti, cutoff)


class TokenVerifier:
    """Checks an access token's signature, issuer, audience, lifetime and
    revocation, and returns the caller it names."""

    def __init__(
        self,
        keys: PublicKeys,
        revoked: RevocationCheck,
        *,
        issuer: str,
        audience: str,
        leeway_seconds: int = CLOCK_LEEWAY_SECONDS,
    ) -> None:
        self._keys = keys
        self._revoked = revoked
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds
        # Tokens already verified, until they expire: a client sends the same token
        # for minutes, and the signature check is the costliest step of a request.
        # Revocation is still checked on every call.
        self._verified: OrderedDict[str, Caller] = OrderedDict()

    async def verify(self, token: str) -> Caller:
        caller = self._verified.get(token)
        if caller is not None and caller.token_expires_at + self._leeway > time.time():
            self._verified.move_to_end(token)
        else:
            caller = self._verify_signature_and_claims(token, await self._key_for(token))
            self._verified[token] = caller
            if len(self._verified) > VERIFIED_TOKENS_CACHED:
                self._verified.popitem(last=False)
        if await self._revoked.is_revoked(caller):
            raise Unauthenticated("access token revoked", reason="TOKEN_REVOKED")
        return caller

    async def _key_for(self, token: str) -> Ed25519PublicKey:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise Unauthenticated("malformed access token", reason="TOKEN_INVALID") from error
        if header.get("alg") != ACCESS_TOKEN_ALGORITHM:
            raise Unauthenticated("access token algorithm not accepted", reason="TOKEN_INVALID")
        kid = header.get("kid")
        key = await self._keys.key_for(kid) if isinstance(kid, str) else None
        if key is None:
            raise Unauthenticated("access token signed by an unknown key", reason="TOKEN_INVALID")
        return key

    def _verify_signature_and_claims(self, token: str, key: Ed25519PublicKey) -> Caller:
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ACCESS_TOKEN_ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "sub", "jti"]},
            )
        except jwt.ExpiredSignatureError as error:
            raise Unauthenticated("access token expired", reason="TOKEN_EXPIRED") from error
        except jwt.PyJWTError as error:
            raise Unauthenticated("access token not valid", reason="TOKEN_INVALID") from error
        roles = claims.get("roles", [])
        return Caller(
            user_id=str(claims["sub"]),
            roles=frozenset(str(role) for role in roles)
            if isinstance(roles, list)
            else frozenset(),
            token_id=str(claims["jti"]),
            token_expires_at=int(claims["exp"]),
            access_token=token,
            token_issued_at=int(claims["iat"]),
        )


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A 32-byte key for `purpose` (HKDF-SHA256 of `secret`): whoever holds the
    secret derives the same key, and it reveals nothing of the secret or of the keys
    of other purposes."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(
        secret
    )


SERVICE_TOKEN_HEADER = "x-wallet-service-token"  # noqa: S105 (a header name)
SERVICE_TOKEN_FILE_VARIABLE = "WALLET_SERVICE_TOKEN_FILE"  # noqa: S105 (a variable name)


class ServiceCredential:
    """How the services of the mesh recognise each other on internal RPCs (the
    gateway's charges, the ledger's payment notices): one shared secret, sent in
    the `x-wallet-service-token` header and compared in constant time.

    The edge never routes internal services and strips the header from what
    clients send. In a cluster this is what mTLS between pods would replace.
    Without a configured secret, internal calls are refused (fail closed).
    """

    def __init__(self, token: str | None) -> None:
        self._token = token or None

    @classmethod
    def from_env(cls) -> ServiceCredential:
        """The secret in the file named by WALLET_SERVICE_TOKEN_FILE (the launcher
        generates one per mesh, mode 600); none if the variable is unset."""
        path = os.environ.get(SERVICE_TOKEN_FILE_VARIABLE)
        if not path:
            return cls(None)
        with open(path, encoding="utf-8") as file:
            return cls(file.read().strip())

    def derive_key(self, purpose: str) -> bytes | None:
        """A 32-byte key for `purpose` (HKDF-SHA256 of the secret), the same at every
        instance of the mesh and unrelated to the secret or to other purposes' keys;
        None without a secret."""
        if self._token is None:
            return None
        return derive_key(self._token.encode(), purpose)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """What an internal call sends."""
        if self._token is None:
            raise Unavailable("no service credential configured for internal calls")
        return ((SERVICE_TOKEN_HEADER, self._token),)

    def verify(self, metadata: Iterable[tuple[str, str | bytes]]) -> None:
        presented = next(
            (v for k, v in metadata if k == SERVICE_TOKEN_HEADER and isinstance(v, str)), None
        )
        if presented is None:
            raise Unauthenticated(
                "this internal call needs the service credential", reason="SERVICE_TOKEN_MISSING"
            )
        if self._token is None or not hmac.compare_digest(presented.encode(), self._token.encode()):
            raise PermissionDenied("service credential not valid", reason="SERVICE_TOKEN_INVALID")


def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    """The token of an `authorization: Bearer <token>` header, if any."""
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None
