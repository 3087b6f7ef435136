"""The edge (Envoy) settings of one local mesh, and the config rendered from them.

The template lives in envoy/envoy.yaml.j2 at the top of the repository: one source
for `make run`, the tests and (later) the Helm chart.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import jinja2
from google.api import annotations_pb2  # type: ignore[import-untyped]  # no py.typed
from google.protobuf import descriptor_pb2

from services.catalogue import ServiceSpec
from services.ratelimit.limits import load_limits

REPO_ROOT = Path(__file__).resolve().parents[2]
ENVOY_TEMPLATE = REPO_ROOT / "envoy" / "envoy.yaml.j2"
DESCRIPTOR_SET = REPO_ROOT / "gen" / "descriptors" / "wallet.pb"

# Name of the cluster through which Envoy fetches the JWKS from its own listener.
EDGE_SELF_CLUSTER = "edge_self"
RATELIMIT_CLUSTER = "ratelimit_grpc"
OTLP_CLUSTER = "otel_collector"
# Filter state holding the client's HTTP version (%PROTOCOL%), for the route that
# refuses gRPC over HTTP/1.x.
PROTOCOL_STATE_KEY = "wallet.downstream_protocol"
# Envoy's own answers, which refused requests reach through the edge itself: an HTTP
# 415 for gRPC over HTTP/1.x (rather than a gRPC status), a 404 for whatever got past the
# transcoder without being a REST call.
REFUSED_GRPC_PREFIX = "/_edge/refused/grpc-over-http1/"
NOT_FOUND_PREFIX = "/_edge/not-found/"
# REST path of UserService.GetJwks (its google.api.http binding).
JWKS_PATH = "/.well-known/jwks.json"

_CLUSTER_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_GRPC_METHOD_PATH = re.compile(r"^/(?P<service>[A-Za-z_][\w.]*)/(?P<method>[A-Za-z_]\w*)$")
_HEADER_SAFE = re.compile(r"^[\x21-\x7e]+$")
_HEADER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class Endpoint:
    """One instance of a service, reachable at host:port over HTTP/2 (gRPC)."""

    host: str
    port: int


@dataclass(frozen=True)
class UpstreamService:
    """A gRPC service behind the edge: its cluster name, its fully qualified
    gRPC service names (routed by path prefix `/<name>/`), and its instances."""

    cluster: str  # e.g. "user_grpc"
    grpc_services: tuple[str, ...]  # e.g. ("wallet.user.v1.UserService",)
    endpoints: tuple[Endpoint, ...]
    # gRPC methods reachable without a JWT, as "/<service>/<Method>" paths.
    public_methods: tuple[str, ...] = ()
    # Read-only gRPC methods, as "/<service>/<Method>" paths: retried on UNAVAILABLE and
    # resets too (others only when the request never reached the application).
    idempotent_methods: tuple[str, ...] = ()
    # Methods that move money: rate-limited in the stricter "money" class.
    money_methods: tuple[str, ...] = ()
    # Methods never rate-limited (the JWKS, which Envoy itself fetches through the edge).
    unlimited_methods: tuple[str, ...] = ()


@dataclass(frozen=True)
class RateLimitSettings:
    """The global rate-limit service (Envoy's RLS protocol) and its route classes.

    Public methods are limited per client address in class "anonymous"; the others
    per user in "money" (money_methods) or "default". Classes in `fail_closed` are
    refused when the rate-limit service cannot answer; the others pass.
    """

    endpoints: tuple[Endpoint, ...]
    fail_closed: frozenset[str] = frozenset({"money"})
    domain: str = "wallet"
    timeout_ms: int = 500


@dataclass(frozen=True)
class EdgeSettings:
    """Everything the Envoy template needs."""

    listen_host: str  # "127.0.0.1"
    listen_port: int  # 8080 for `make run`
    admin_port: int  # 9901 for `make run`; always bound to 127.0.0.1
    upstreams: tuple[UpstreamService, ...]
    # Expected `iss` and `aud` of access tokens. Their keys (JWKS) come from the user
    # service, fetched by Envoy through its own listener (GET /.well-known/jwks.json).
    jwt_issuer: str = "wallet-mesh"
    jwt_audience: str = "wallet-mesh"
    descriptor_set: Path = DESCRIPTOR_SET
    # Where Envoy reads the descriptor set, if not where the renderer does (an image).
    envoy_descriptor_set: Path | None = None
    access_log_path: Path | None = None
    # Largest REST/gRPC request body accepted at the edge.
    max_request_bytes: int = 64 * 1024
    # Whole-request timeout of every upstream route (retries included).
    route_timeout_seconds: int = 15
    # Header that carries the verified token's `sub` to the services.
    user_id_header: str = "x-wallet-user-id"
    # Headers only the edge may set: removed from every client request.
    # Set inside the mesh only: dropped from whatever a client sends (the service
    # credential of internal calls among them).
    internal_headers: tuple[str, ...] = (
        "x-wallet-user-id",
        "x-wallet-roles",
        "x-wallet-service-token",
    )
    # Global, shared token buckets (None: no global rate limiting).
    ratelimit: RateLimitSettings | None = None
    # Per-Envoy backstop for everything, whatever the global limits say.
    local_requests_per_second: int = 5_000
    # OTLP/gRPC trace receiver (None: Envoy does not trace).
    otlp_endpoint: Endpoint | None = None
    # How Envoy finds the instances: "STATIC" (endpoints are addresses) or "STRICT_DNS"
    # (each endpoint is a name resolving to all of a service's instances: Kubernetes).
    discovery: str = "STATIC"
    # Browser origins allowed to call the API (CORS), exact matches.
    cors_origins: tuple[str, ...] = ("http://localhost:3000", "http://127.0.0.1:3000")


@dataclass(frozen=True)
class _Descriptors:
    """What the renderer needs from the descriptor set."""

    # Fully qualified gRPC service name -> its method names.
    methods: dict[str, frozenset[str]]
    # REST path of a `google.api.http` GET binding -> "/<service>/<Method>".
    get_bindings: dict[str, str]


def _read_descriptor_set(path: Path) -> _Descriptors:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"descriptor set {path} cannot be read: {exc}") from exc
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(data)
    methods: dict[str, frozenset[str]] = {}
    get_bindings: dict[str, str] = {}
    for file in descriptor_set.file:
        for service in file.service:
            name = f"{file.package}.{service.name}" if file.package else service.name
            methods[name] = frozenset(method.name for method in service.method)
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                for binding in (rule, *rule.additional_bindings):
                    if binding.get:
                        get_bindings[binding.get] = f"/{name}/{method.name}"
    return _Descriptors(methods=methods, get_bindings=get_bindings)


def _check_port(what: str, port: int) -> None:
    if not 0 < port < 65536:
        raise ValueError(f"{what} {port} is not a TCP port")


def _check_host(what: str, host: str) -> None:
    if not host or not _HEADER_SAFE.match(host):
        raise ValueError(f"{what} {host!r} is not a host name or address")


def _check_method_paths(
    upstream: UpstreamService,
    kind: str,
    paths: tuple[str, ...],
    known: _Descriptors,
) -> None:
    for path in paths:
        match = _GRPC_METHOD_PATH.match(path)
        if match is None:
            raise ValueError(
                f"{upstream.cluster}: {kind} {path!r} is not a /<service>/<Method> path"
            )
        service, method = match["service"], match["method"]
        if service not in upstream.grpc_services:
            raise ValueError(f"{upstream.cluster}: {kind} {path!r} is not one of its grpc_services")
        if method not in known.methods[service]:
            raise ValueError(f"{upstream.cluster}: {kind} {path!r}: {service} has no {method}")


def validate_edge_settings(settings: EdgeSettings) -> None:
    """Reject settings that would render a config Envoy refuses, or one that routes wrongly.

    Raises ValueError naming the first problem found.
    """
    _check_host("listen_host", settings.listen_host)
    _check_port("listen_port", settings.listen_port)
    _check_port("admin_port", settings.admin_port)
    if settings.admin_port == settings.listen_port:
        raise ValueError("admin_port and listen_port must differ")
    if not settings.jwt_issuer or not settings.jwt_audience:
        raise ValueError("jwt_issuer and jwt_audience must not be empty")
    if not 0 < settings.max_request_bytes < 2**32:
        raise ValueError(f"max_request_bytes {settings.max_request_bytes} is out of range")
    if settings.route_timeout_seconds <= 0:
        raise ValueError("route_timeout_seconds must be positive")
    if not settings.upstreams:
        raise ValueError("at least one upstream service is needed")
    if settings.discovery not in ("STATIC", "STRICT_DNS"):
        raise ValueError(f"discovery must be STATIC or STRICT_DNS, not {settings.discovery!r}")

    for header in (settings.user_id_header, *settings.internal_headers):
        if not _HEADER_NAME.match(header):
            raise ValueError(f"header name {header!r} is not lower-case token characters")
    if settings.user_id_header not in settings.internal_headers:
        raise ValueError(f"{settings.user_id_header} must be one of internal_headers")

    known = _read_descriptor_set(settings.descriptor_set)
    clusters: set[str] = set()
    services: set[str] = set()
    for upstream in settings.upstreams:
        reserved = (EDGE_SELF_CLUSTER, RATELIMIT_CLUSTER, OTLP_CLUSTER)
        if not _CLUSTER_NAME.match(upstream.cluster) or upstream.cluster in reserved:
            raise ValueError(f"cluster name {upstream.cluster!r} is invalid or reserved")
        if upstream.cluster in clusters:
            raise ValueError(f"cluster {upstream.cluster!r} is defined twice")
        clusters.add(upstream.cluster)
        if not upstream.endpoints:
            raise ValueError(f"{upstream.cluster}: no endpoints")
        for endpoint in upstream.endpoints:
            _check_host(f"{upstream.cluster}: endpoint host", endpoint.host)
            _check_port(f"{upstream.cluster}: endpoint port", endpoint.port)
        if not upstream.grpc_services:
            raise ValueError(f"{upstream.cluster}: no grpc_services")
        for service in upstream.grpc_services:
            if service not in known.methods:
                raise ValueError(
                    f"{upstream.cluster}: {service} is not in the descriptor set "
                    f"{settings.descriptor_set}"
                )
            if service in services:
                raise ValueError(f"{service} is served by two upstreams")
            services.add(service)
        _check_method_paths(upstream, "public method", upstream.public_methods, known)
        _check_method_paths(upstream, "idempotent method", upstream.idempotent_methods, known)
        _check_method_paths(upstream, "money method", upstream.money_methods, known)
        _check_method_paths(upstream, "unlimited method", upstream.unlimited_methods, known)

    if settings.ratelimit is not None:
        if not settings.ratelimit.endpoints:
            raise ValueError("ratelimit: no endpoints")
        for endpoint in settings.ratelimit.endpoints:
            _check_port("ratelimit endpoint port", endpoint.port)
    if settings.local_requests_per_second <= 0:
        raise ValueError("local_requests_per_second must be positive")
    for origin in settings.cors_origins:
        if not _HEADER_SAFE.match(origin):
            raise ValueError(f"CORS origin {origin!r} is not a plain origin")

    # jwt_authn fetches the JWKS through the edge: that call must not need a token.
    jwks_method = known.get_bindings.get(JWKS_PATH)
    public = {path for upstream in settings.upstreams for path in upstream.public_methods}
    if jwks_method is None or jwks_method not in public:
        raise ValueError(
            f"GET {JWKS_PATH} must be bound to a public method of an upstream "
            f"(found {jwks_method or 'no binding'})"
        )


ANONYMOUS, DEFAULT, MONEY = "anonymous", "default", "money"


@dataclass(frozen=True)
class Route:
    """One upstream route, as the template writes it: one method of the public contract."""

    name: str
    cluster: str
    path: str  # the exact gRPC method path, "/<service>/<Method>"
    public: bool  # callable without a token
    retry_on: str
    rate_limit_class: str | None  # None: not rate-limited
    stage: int  # the rate-limit filter that handles it: 0 fails open, 1 fails closed


_RETRY_ANY = "unavailable,reset,connect-failure,refused-stream"
# The request never reached the application: safe to retry any call.
_RETRY_UNSENT = "connect-failure,refused-stream"


def upstream_routes(settings: EdgeSettings) -> list[Route]:
    """One exact route per method of every routed service (the public contract, read from
    the descriptor set): a path that is not one of them matches no upstream route, so it
    never reaches an instance."""
    closed = settings.ratelimit.fail_closed if settings.ratelimit else frozenset()
    known = _read_descriptor_set(settings.descriptor_set)
    routes: list[Route] = []
    for upstream in settings.upstreams:
        for service in upstream.grpc_services:
            for method in sorted(known.methods[service]):
                path = f"/{service}/{method}"
                if path in upstream.unlimited_methods:
                    limit_class = None
                elif path in upstream.public_methods:
                    limit_class = ANONYMOUS
                elif path in upstream.money_methods:
                    limit_class = MONEY
                else:
                    limit_class = DEFAULT
                routes.append(
                    Route(
                        name=upstream.cluster + path.replace("/", "_").replace(".", "_"),
                        cluster=upstream.cluster,
                        path=path,
                        public=path in upstream.public_methods,
                        retry_on=(
                            _RETRY_ANY if path in upstream.idempotent_methods else _RETRY_UNSENT
                        ),
                        rate_limit_class=limit_class,
                        stage=1 if limit_class in closed else 0,
                    )
                )
    return routes


def _loopback_for(host: str) -> str:
    """The address Envoy dials to reach its own listener."""
    if host == "0.0.0.0":
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def catalogue_upstreams(
    services: Iterable[ServiceSpec], endpoints: Callable[[ServiceSpec], tuple[Endpoint, ...]]
) -> tuple[UpstreamService, ...]:
    """The edge's upstreams: every routed service of the catalogue, its instances at
    `endpoints(spec)` (loopback ports locally, a Service's DNS name in a cluster)."""
    return tuple(
        UpstreamService(
            cluster=spec.cluster,
            grpc_services=spec.grpc_services,
            endpoints=endpoints(spec),
            public_methods=spec.public_methods,
            idempotent_methods=spec.idempotent_methods,
            money_methods=spec.money_methods,
            unlimited_methods=spec.unlimited_methods,
        )
        for spec in services
        if spec.routed
    )


def catalogue_ratelimit(limits_file: Path, endpoints: tuple[Endpoint, ...]) -> RateLimitSettings:
    """The rate-limit service at `endpoints`, with the failure modes of `limits_file`."""
    limits = load_limits(limits_file)
    return RateLimitSettings(
        endpoints=endpoints,
        fail_closed=frozenset(limits.fail_closed_classes()),
        domain=limits.domain,
    )


def render_envoy_config(settings: EdgeSettings) -> str:
    """Render envoy/envoy.yaml.j2 for these settings (validated first; ValueError if bad)."""
    validate_edge_settings(settings)
    self_host = _loopback_for(settings.listen_host)
    uri_host = f"[{self_host}]" if ":" in self_host else self_host
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ENVOY_TEMPLATE.parent),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - YAML, not HTML; strings go through |tojson
    )
    template = environment.get_template(ENVOY_TEMPLATE.name)
    return template.render(
        settings=settings,
        edge_self_cluster=EDGE_SELF_CLUSTER,
        edge_self_host=self_host,
        jwks_uri=f"http://{uri_host}:{settings.listen_port}{JWKS_PATH}",
        all_grpc_services=[s for u in settings.upstreams for s in u.grpc_services],
        first_upstream=settings.upstreams[0],
        routes=upstream_routes(settings),
        protocol_state_key=PROTOCOL_STATE_KEY,
        refused_grpc_prefix=REFUSED_GRPC_PREFIX,
        not_found_prefix=NOT_FOUND_PREFIX,
        ratelimit_cluster=RATELIMIT_CLUSTER,
        otlp_cluster=OTLP_CLUSTER,
    )
