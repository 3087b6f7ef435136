"""The edge config: rendered from EdgeSettings, then checked by Envoy itself with
`envoy --mode validate` (which builds every listener, filter and cluster, so an unknown
field, a wrong @type or a service missing from the descriptor set fails here)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from google.api import annotations_pb2  # type: ignore[import-untyped]  # no py.typed
from google.protobuf import descriptor_pb2

from services.localmesh.edge import (
    DESCRIPTOR_SET,
    EDGE_SELF_CLUSTER,
    EdgeSettings,
    Endpoint,
    RateLimitSettings,
    UpstreamService,
    render_envoy_config,
    upstream_routes,
)
from services.localmesh.mesh import Mesh, MeshConfig

ENVOY = Path(sys.executable).parent / "envoy"
USER = "wallet.user.v1.UserService"
ECHO = "wallet.test.v1.EchoService"  # only in the descriptor set built by echo_descriptor_set


def user_upstream(*ports: int) -> UpstreamService:
    return UpstreamService(
        cluster="user_grpc",
        grpc_services=(USER,),
        endpoints=tuple(Endpoint("127.0.0.1", port) for port in ports),
        public_methods=(f"/{USER}/CreateUser", f"/{USER}/Login", f"/{USER}/GetJwks"),
        idempotent_methods=(f"/{USER}/GetUser", f"/{USER}/ListUsers", f"/{USER}/GetJwks"),
    )


def echo_upstream(*ports: int) -> UpstreamService:
    return UpstreamService(
        cluster="echo_grpc",
        grpc_services=(ECHO,),
        endpoints=tuple(Endpoint("127.0.0.1", port) for port in ports),
        idempotent_methods=(f"/{ECHO}/Echo",),
    )


def settings_for(*upstreams: UpstreamService, **overrides: Any) -> EdgeSettings:
    settings = EdgeSettings(
        listen_host="127.0.0.1", listen_port=18080, admin_port=19901, upstreams=upstreams
    )
    return dataclasses.replace(settings, **overrides)


@pytest.fixture
def echo_descriptor_set(tmp_path: Path) -> Path:
    """The project's descriptor set plus a second service, for a two-upstream edge."""
    descriptors = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    echo = descriptors.file.add(
        name="wallet/test/v1/echo_service.proto",
        package="wallet.test.v1",
        syntax="proto3",
        dependency=["google/api/annotations.proto"],
    )
    for message in ("EchoRequest", "EchoResponse"):
        echo.message_type.add(name=message).field.add(
            name="text",
            number=1,
            type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
            label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
            json_name="text",
        )
    method = echo.service.add(name="EchoService").method.add(
        name="Echo",
        input_type=".wallet.test.v1.EchoRequest",
        output_type=".wallet.test.v1.EchoResponse",
    )
    http_rule = method.options.Extensions[annotations_pb2.http]
    http_rule.post = "/v1/echo"
    http_rule.body = "*"
    path = tmp_path / "with-echo.pb"
    path.write_bytes(descriptors.SerializeToString())
    return path


def envoy_validate(config: str, folder: Path) -> subprocess.CompletedProcess[str]:
    assert ENVOY.exists(), f"no envoy next to {sys.executable}"
    path = folder / "envoy.yaml"
    path.write_text(config)
    return subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(path), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def http_filter_order(config: str) -> list[str]:
    filters = config[config.index("http_filters:") :]
    names = ("header_mutation", "grpc_json_transcoder", "jwt_authn", "router")
    return sorted(names, key=lambda name: filters.index(f"name: envoy.filters.http.{name}"))


def test_one_upstream_with_two_endpoints_validates(tmp_path: Path) -> None:
    settings = settings_for(user_upstream(50061, 50062), access_log_path=tmp_path / "access.log")
    config = render_envoy_config(settings)

    result = envoy_validate(config, tmp_path)

    assert result.returncode == 0, result.stderr
    assert http_filter_order(config) == [
        "header_mutation",
        "grpc_json_transcoder",
        "jwt_authn",
        "router",
    ]
    assert "port_value: 50061" in config
    assert "port_value: 50062" in config
    assert str(tmp_path / "access.log") in config


def test_two_upstreams_validate(tmp_path: Path, echo_descriptor_set: Path) -> None:
    settings = settings_for(
        user_upstream(50061, 50062),
        echo_upstream(50071),
        listen_host="0.0.0.0",
        descriptor_set=echo_descriptor_set,
    )
    config = render_envoy_config(settings)

    result = envoy_validate(config, tmp_path)

    assert result.returncode == 0, result.stderr
    for cluster in ("user_grpc", "echo_grpc", "edge_self"):
        assert f"- name: {cluster}\n" in config
    assert f'path: "/{ECHO}/Echo"' in config
    # Envoy fetches the JWKS through its own listener: on loopback, not on 0.0.0.0.
    assert '"http://127.0.0.1:18080/.well-known/jwks.json"' in config


def test_without_access_log_validates(tmp_path: Path) -> None:
    config = render_envoy_config(settings_for(user_upstream(50061)))

    result = envoy_validate(config, tmp_path)

    assert result.returncode == 0, result.stderr
    assert "access_log" not in config


@pytest.mark.parametrize(
    ("upstream", "error"),
    [
        (dataclasses.replace(user_upstream(50061), endpoints=()), "no endpoints"),
        (
            dataclasses.replace(user_upstream(50061), grpc_services=(ECHO,), public_methods=()),
            "not in the descriptor set",
        ),
        (
            dataclasses.replace(user_upstream(50061), public_methods=(f"/{USER}/Nope",)),
            "has no Nope",
        ),
        (
            dataclasses.replace(user_upstream(50061), public_methods=(f"/{USER}/Login",)),
            "must be bound to a public method",
        ),
        (dataclasses.replace(user_upstream(50061), cluster="edge_self"), "reserved"),
    ],
    ids=["no-endpoints", "service-not-in-descriptor", "unknown-method", "jwks-not-public", "name"],
)
def test_broken_settings_are_refused_before_rendering(
    upstream: UpstreamService, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        render_envoy_config(settings_for(upstream))


def test_envoy_validate_catches_a_service_missing_from_the_descriptor(tmp_path: Path) -> None:
    # The renderer refuses this too; check that validate is no rubber stamp either.
    config = render_envoy_config(settings_for(user_upstream(50061)))
    broken = config.replace(f'- "{USER}"', '- "wallet.user.v1.NoSuchService"')
    assert broken != config

    result = envoy_validate(broken, tmp_path)

    assert result.returncode != 0
    assert "NoSuchService" in result.stderr


def test_rate_limited_config_validates_with_classes_and_stages(tmp_path: Path) -> None:
    money = "/wallet.user.v1.UserService/UpdateUser"  # any method: the class is configuration
    upstream = dataclasses.replace(user_upstream(50061, 50062), money_methods=(money,))
    settings = settings_for(
        upstream, ratelimit=RateLimitSettings(endpoints=(Endpoint("127.0.0.1", 50070),))
    )
    config = render_envoy_config(settings)

    result = envoy_validate(config, tmp_path)

    assert result.returncode == 0, result.stderr
    filters = config[config.index("http_filters:") :]
    assert filters.index("envoy.filters.http.jwt_authn") < filters.index(
        "envoy.filters.http.ratelimit"
    )
    assert "failure_mode_deny: false" in config
    assert "failure_mode_deny: true" in config
    routes = {route.path: route for route in upstream_routes(settings) if route.path}
    assert (routes[money].rate_limit_class, routes[money].stage) == ("money", 1)
    login = "/wallet.user.v1.UserService/Login"
    assert (routes[login].rate_limit_class, routes[login].stage) == ("anonymous", 0)


def test_the_development_config_validates(tmp_path: Path) -> None:
    """The config `make run` renders, as shipped."""
    mesh = Mesh(dataclasses.replace(MeshConfig.for_development(), run_dir=tmp_path / "run"))
    mesh.logs_dir.mkdir(parents=True)  # validation opens the access log
    config = render_envoy_config(mesh.edge_settings())

    result = envoy_validate(config, tmp_path)

    assert result.returncode == 0, result.stderr
    assert "port_value: 8080" in config


HEALTH_AND_REFLECTION = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
)


def edge_listener(config: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(the routes of the edge's virtual host, its jwt_authn filter config)."""
    bootstrap = yaml.safe_load(config)
    manager = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    routes = manager["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    (jwt,) = (
        f["typed_config"]
        for f in manager["typed_config"]["http_filters"]
        if f["name"] == "envoy.filters.http.jwt_authn"
    )
    return routes, jwt


def descriptor_methods(path: Path, service: str) -> set[str]:
    descriptors = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    return {
        f"/{service}/{method.name}"
        for file in descriptors.file
        for entry in file.service
        if f"{file.package}.{entry.name}" == service
        for method in entry.method
    }


def test_only_the_public_contract_is_forwarded_to_instances(echo_descriptor_set: Path) -> None:
    settings = settings_for(
        user_upstream(50061), echo_upstream(50071), descriptor_set=echo_descriptor_set
    )
    routes, _ = edge_listener(render_envoy_config(settings))
    contract = descriptor_methods(echo_descriptor_set, USER) | descriptor_methods(
        echo_descriptor_set, ECHO
    )

    to_instances = [
        r for r in routes if r.get("route", {}).get("cluster") in ("user_grpc", "echo_grpc")
    ]
    exact = {r["match"]["path"] for r in to_instances if "path" in r["match"]}
    prefixes = {r["match"]["prefix"] for r in to_instances if "path" not in r["match"]}
    assert exact == contract
    assert prefixes == set(HEALTH_AND_REFLECTION)
    assert all("grpc" in r["match"] for r in to_instances)
    # Everything else is Envoy's own answer, directly or through the edge itself.
    for route in routes:
        if route not in to_instances:
            assert "direct_response" in route or route["route"]["cluster"] == EDGE_SELF_CLUSTER
    assert routes[-1]["name"] == "everything_else"
    assert routes[-1]["match"] == {"prefix": "/"}
    assert routes[-1]["direct_response"]["status"] == 404


def test_every_forwarded_method_needs_a_token_unless_public() -> None:
    upstream = user_upstream(50061)
    routes, jwt = edge_listener(render_envoy_config(settings_for(upstream)))

    needs_token = {
        rule["match"]["path"]: "requires" in rule
        for rule in jwt["rules"]
        if "path" in rule["match"]
    }
    forwarded = {r["match"]["path"] for r in routes if "path" in r["match"] and "route" in r}
    assert set(needs_token) == forwarded
    assert {path for path, required in needs_token.items() if not required} == set(
        upstream.public_methods
    )
    # No catch-all rule: a path no rule names reaches no instance either.
    assert all(
        "path" in rule["match"] or rule["match"]["prefix"] in HEALTH_AND_REFLECTION
        for rule in jwt["rules"]
    )


def test_only_failures_of_the_instance_itself_eject_it() -> None:
    bootstrap = yaml.safe_load(render_envoy_config(settings_for(user_upstream(50061, 50062))))
    (cluster,) = (c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "user_grpc")
    outlier = cluster["outlier_detection"]

    # Connection failures, resets and timeouts (local origin) eject...
    assert outlier["split_external_local_origin_errors"] is True
    assert outlier["consecutive_local_origin_failure"] > 0
    assert outlier["enforcing_consecutive_local_origin_failure"] == 100
    # ...what the instance answered (a gRPC status, a 5xx) never does.
    assert outlier["enforcing_consecutive_5xx"] == 0
    assert outlier["enforcing_consecutive_gateway_failure"] == 0
    assert outlier["enforcing_success_rate"] == 0
