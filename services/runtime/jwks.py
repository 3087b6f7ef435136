"""Public keys of the token issuer, fetched as a JWKS and kept in memory.

Used by every service except the user service (which holds its own keys). An
unknown `kid` triggers a refetch — that is how a key rotation reaches us — but
at most once per `min_refresh_seconds`, so garbage tokens cannot make us
hammer the issuer."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

log = logging.getLogger(__name__)

FetchJwks = Callable[[], Awaitable[list[Mapping[str, str]]]]


def _ed25519_keys(jwks: list[Mapping[str, str]]) -> dict[str, Ed25519PublicKey]:
    keys: dict[str, Ed25519PublicKey] = {}
    for jwk in jwks:
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or not jwk.get("kid"):
            continue
        raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
        keys[jwk["kid"]] = Ed25519PublicKey.from_public_bytes(raw)
    return keys


class RemotePublicKeys:
    def __init__(self, fetch: FetchJwks, *, min_refresh_seconds: float = 10.0) -> None:
        self._fetch = fetch
        self._min_refresh = min_refresh_seconds
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str) -> Ed25519PublicKey | None:
        key = self._keys.get(kid)
        if key is not None:
            return key
        async with self._lock:
            if kid not in self._keys and time.monotonic() - self._fetched_at >= self._min_refresh:
                await self._refresh()
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        try:
            self._keys = _ed25519_keys(await self._fetch())
            self._fetched_at = time.monotonic()
        except Exception as error:
            # Keep the keys we had; try again on the next unknown kid.
            log.warning("could not fetch the JWKS", extra={"error": repr(error)})
