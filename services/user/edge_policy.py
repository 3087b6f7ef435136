"""How the edge treats the user service's RPCs: which need no token and which
are safe to retry. Read by the service (its own token check) and by whatever
renders the Envoy config, so the two never disagree."""

from __future__ import annotations

from wallet.user.v1 import user_service_pb2

SERVICE_NAME: str = user_service_pb2.DESCRIPTOR.services_by_name["UserService"].full_name


def _paths(*methods: str) -> tuple[str, ...]:
    return tuple(f"/{SERVICE_NAME}/{method}" for method in methods)


# Registration, login and refresh happen before there is a token; the JWKS is
# what tokens are checked with.
PUBLIC_METHODS = _paths("CreateUser", "Login", "RefreshToken", "GetJwks")
# Reads: a retry after the instance saw the request changes nothing.
IDEMPOTENT_METHODS = _paths("GetUser", "LookupUser", "ListUsers", "GetJwks")
# Never rate-limited: Envoy itself fetches the JWKS through the edge.
UNLIMITED_METHODS = _paths("GetJwks")
