"""What reaches an instance through the edge, and what may eject one.

Only the public contract (each routed service's methods, plus gRPC health and
reflection) is forwarded; anything else is answered by Envoy itself: 404 for REST,
UNIMPLEMENTED for gRPC, with or without a token, and 415 for gRPC over HTTP/1.x. Bad
requests that do reach an instance are answered by it with a status, which never
ejects it: only connection failures, resets and timeouts do (the killed-instance
tests in test_edge_resilience.py and test_user_failover.py cover those)."""

from __future__ import annotations

import json
import socket
import struct
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from services.localmesh.mesh import Mesh
from tests.e2e.people import Person, register_and_login
from tests.eventually import eventually
from wallet.gateway.v1 import gateway_service_pb2 as gateway_pb
from wallet.gateway.v1 import gateway_service_pb2_grpc

INSTANCE_CLUSTERS = ("user_grpc", "transaction_grpc", "gateway_grpc")
WEBHOOK = "/wallet.gateway.v1.WebhookService/ReceiveWebhook"
# A gRPC frame holding an empty message: flag 0, length 0.
EMPTY_MESSAGE = b"\x00\x00\x00\x00\x00"
# A message body no protobuf parses: field 1 declared 100 bytes long, 1 byte sent.
CORRUPT_MESSAGE = b"\x0a\x64x"
# gRPC paths outside the public contract: internal services, unknown ones.
NON_PUBLIC_PATHS = (
    "/wallet.gateway.v1.PaymentGatewayService/CreateCharge",
    "/wallet.gateway.v1.PaymentGatewayService/GetPayment",
    "/wallet.transaction.v1.FundingService/NotifyPaymentUpdated",
    "/wallet.user.v1.UserService/NoSuchMethod",
    "/wallet.transaction.v1.TransactionService/GetWalletX",
    "/wallet.nothing.v1.NoSuchService/Get",
    "/grpc.health.v1.Healthy/Check",
    "/wallet.user.v1.UserService",
)


@pytest.fixture(scope="module")
def person(mesh: Mesh) -> Person:
    with httpx.Client(base_url=mesh.edge_url, timeout=10) as client:
        return register_and_login(client, "surface")


@pytest.fixture
def grpc_channel(mesh: Mesh) -> Iterator[tuple[grpc.Channel, str]]:
    """A blocking channel to the edge with a user agent of its own, to find its calls
    in the access log."""
    agent = f"edge-surface-{uuid.uuid4()}"
    channel = grpc.insecure_channel(
        mesh.edge_grpc_target, options=[("grpc.primary_user_agent", agent)]
    )
    with channel:
        yield channel, agent


def access_log_lines(mesh: Mesh, agent: str) -> list[dict[str, Any]]:
    path = mesh.edge_settings().access_log_path
    assert path is not None
    lines = [json.loads(line) for line in path.read_text().splitlines() if agent in line]
    return [line for line in lines if str(line.get("user_agent", "")).startswith(agent)]


def logged_requests(mesh: Mesh, agent: str, count: int) -> list[dict[str, Any]]:
    """The access log lines of `agent`'s requests, once at least `count` are written
    (Envoy flushes the log in the background)."""
    eventually(lambda: len(access_log_lines(mesh, agent)) >= count, f"{count} log lines")
    return access_log_lines(mesh, agent)


def instances_reached(lines: list[dict[str, Any]]) -> list[str]:
    """The logged requests that Envoy sent to an instance (a request refused before
    the router still names its route's cluster, but no upstream host)."""
    return [
        f"{line['grpc_method']} -> {line['upstream_host']}"
        for line in lines
        if line.get("upstream_cluster") in INSTANCE_CLUSTERS and line.get("upstream_host")
    ]


def outlier_ejections(mesh: Mesh) -> dict[str, int]:
    """Ejections enforced so far, per instance cluster (admin stats)."""
    counts = {}
    for cluster in INSTANCE_CLUSTERS:
        stats = httpx.get(
            f"{mesh.admin_url}/stats",
            params={
                "filter": f"^cluster\\.{cluster}\\.outlier_detection\\.ejections_enforced_total$"
            },
            timeout=10,
        ).text
        counts[cluster] = int(stats.split(":")[1]) if ":" in stats else 0
    return counts


def unhealthy_instances(mesh: Mesh) -> list[str]:
    """Instances whose health flags (admin /clusters) are anything but healthy."""
    text = httpx.get(f"{mesh.admin_url}/clusters", timeout=10).text
    return [
        line
        for line in text.splitlines()
        if line.split("::")[0] in INSTANCE_CLUSTERS
        and "::health_flags::" in line
        and not line.endswith("::healthy")
    ]


def grpc_code(channel: grpc.Channel, path: str, payload: bytes, auth: str | None) -> str:
    metadata = (("authorization", f"Bearer {auth}"),) if auth else ()
    try:
        channel.unary_unary(path, None, None)(payload, metadata=metadata, timeout=10)
    except grpc.RpcError as error:
        return str(error.code().name)
    return "OK"


def no_message_code(channel: grpc.Channel, path: str) -> str:
    """A call that half-closes without sending its message (a stream of none)."""
    try:
        channel.stream_unary(path, None, None)(iter(()), timeout=10)
    except grpc.RpcError as error:
        return str(error.code().name)
    return "OK"


def http2_call_without_te(port: int, path: str, body: bytes) -> bytes:
    """One gRPC call over cleartext HTTP/2 (prior knowledge) WITHOUT `te: trailers`,
    which every gRPC library sends: the raw frames, since no HTTP/2 client here can
    leave it out. Returns what the edge answered (raw frames) once the stream ends."""

    def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))[1:]
            + bytes([kind, flags])
            + struct.pack(">I", stream)
            + payload
        )

    def literal(name: bytes, value: bytes) -> bytes:
        # HPACK literal header field without indexing, new name, no Huffman coding.
        return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value

    headers = b"".join(
        literal(name, value)
        for name, value in (
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.encode()),
            (b":authority", b"127.0.0.1"),
            (b"content-type", b"application/grpc"),
        )
    )
    with socket.create_connection(("127.0.0.1", port), timeout=15) as connection:
        connection.sendall(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            + frame(0x4, 0, 0, b"")  # SETTINGS
            + frame(0x1, 0x4, 1, headers)  # HEADERS, END_HEADERS
            + frame(0x0, 0x1, 1, body)  # DATA, END_STREAM
        )
        received = b""
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                return received
            received += chunk
            # Walk the frames: stop at the end of stream 1 (END_STREAM or RST_STREAM).
            offset = 0
            while offset + 9 <= len(received):
                length = int.from_bytes(received[offset : offset + 3], "big")
                kind, flags = received[offset + 3], received[offset + 4]
                stream = int.from_bytes(received[offset + 5 : offset + 9], "big") & 0x7FFFFFFF
                if offset + 9 + length > len(received):
                    break
                if stream == 1 and (kind == 0x3 or (kind in (0x0, 0x1) and flags & 0x1)):
                    return received
                offset += 9 + length


# --- what reaches an instance --------------------------------------------------------


@pytest.mark.parametrize("with_token", [False, True], ids=["no-token", "token"])
def test_non_public_grpc_paths_are_unimplemented_at_the_edge(
    mesh: Mesh, person: Person, grpc_channel: tuple[grpc.Channel, str], with_token: bool
) -> None:
    channel, agent = grpc_channel
    token = person.access_token if with_token else None

    codes = {path: grpc_code(channel, path, b"", token) for path in NON_PUBLIC_PATHS}

    assert codes == dict.fromkeys(NON_PUBLIC_PATHS, "UNIMPLEMENTED")
    lines = logged_requests(mesh, agent, len(NON_PUBLIC_PATHS))
    assert instances_reached(lines) == []


def test_public_grpc_methods_health_and_reflection_still_reach_instances(
    mesh: Mesh, person: Person, grpc_channel: tuple[grpc.Channel, str]
) -> None:
    channel, agent = grpc_channel
    # A routed method with a token, a public one without, health and reflection.
    assert grpc_code(channel, "/wallet.user.v1.UserService/GetJwks", b"", None) == "OK"
    assert grpc_code(channel, "/grpc.health.v1.Health/Check", b"", None) == "OK"
    assert (
        grpc_code(channel, "/wallet.transaction.v1.TransactionService/ListWallets", b"", None)
        == "UNAUTHENTICATED"
    )
    assert (
        grpc_code(
            channel,
            "/wallet.transaction.v1.TransactionService/ListWallets",
            b"",
            person.access_token,
        )
        == "OK"
    )
    reflection = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", None, None
    )
    # ServerReflectionRequest{list_services: ""} (field 7, empty string).
    answers = list(reflection(iter([b"\x3a\x00"]), timeout=10))
    assert len(answers) == 1
    assert b"wallet.user.v1.UserService" in answers[0]

    reached = {
        reached.split(" -> ")[0] for reached in instances_reached(logged_requests(mesh, agent, 5))
    }
    assert reached == {
        "/wallet.user.v1.UserService/GetJwks",
        "/grpc.health.v1.Health/Check",
        "/wallet.transaction.v1.TransactionService/ListWallets",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/transfers"), ("POST", WEBHOOK), ("GET", "/v1/wallets"), ("POST", "/nope")],
)
def test_grpc_over_http1_is_refused_with_415_json(mesh: Mesh, method: str, path: str) -> None:
    agent = f"edge-surface-{uuid.uuid4()}"
    with httpx.Client(base_url=mesh.edge_url, timeout=10) as client:  # HTTP/1.1
        response = client.request(
            method,
            path,
            content=EMPTY_MESSAGE,
            headers={"content-type": "application/grpc", "user-agent": agent},
        )

    assert response.status_code == 415, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == 415
    assert "HTTP/2" in body["message"]
    assert instances_reached(logged_requests(mesh, agent, 1)) == []


def test_unknown_rest_paths_still_get_404_json(rest: httpx.Client) -> None:
    for method, path in (
        ("GET", "/v1/nope"),
        ("POST", "/v1/transfers/x/y"),
        ("DELETE", "/v1/users"),
    ):
        response = rest.request(method, path)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["code"] == 404


def test_an_empty_webhook_message_is_invalid_argument_naming_the_field(mesh: Mesh) -> None:
    with grpc.insecure_channel(mesh.edge_grpc_target) as channel:
        webhooks = gateway_service_pb2_grpc.WebhookServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            webhooks.ReceiveWebhook(gateway_pb.ReceiveWebhookRequest(), timeout=10)

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "provider" in str(refused.value.details())


# --- what ejects an instance ---------------------------------------------------------


def test_bad_requests_eject_no_instance(mesh: Mesh, person: Person) -> None:
    before = outlier_ejections(mesh)
    rounds = 30
    agent = f"edge-surface-{uuid.uuid4()}"
    codes: dict[str, set[object]] = {}

    with httpx.Client(base_url=mesh.edge_url, timeout=10, headers={"user-agent": agent}) as http1:
        for _ in range(rounds):
            # The two reported curl calls: gRPC content over HTTP/1.1, no token.
            webhook = http1.post(
                WEBHOOK, content=EMPTY_MESSAGE, headers={"content-type": "application/grpc"}
            )
            transfer = http1.post(
                "/v1/transfers", content=b"{}", headers={"content-type": "application/grpc"}
            )
            codes.setdefault("http1 webhook", set()).add(webhook.status_code)
            codes.setdefault("http1 transfers", set()).add(transfer.status_code)
    options = [("grpc.primary_user_agent", agent)]
    with grpc.insecure_channel(mesh.edge_grpc_target, options=options) as channel:
        for _ in range(rounds):
            # Non-public paths with a token, and the empty webhook message over HTTP/2.
            for path in NON_PUBLIC_PATHS[:4]:
                codes.setdefault(path, set()).add(
                    grpc_code(channel, path, b"", person.access_token)
                )
            codes.setdefault("empty webhook", set()).add(grpc_code(channel, WEBHOOK, b"", None))
            # No message at all (the stream half-closed without one), and a body that
            # no protobuf parses: grpc.aio alone would hang on the first until the
            # edge timed out (counted against the instance) and answer the second 500.
            codes.setdefault("no message", set()).add(no_message_code(channel, WEBHOOK))
            codes.setdefault("corrupt message", set()).add(
                grpc_code(channel, WEBHOOK, CORRUPT_MESSAGE, None)
            )
    port = int(mesh.edge_grpc_target.rsplit(":", 1)[1])
    for _ in range(rounds):
        # A gRPC call without te: trailers: the instances reset such a stream.
        http2_call_without_te(port, WEBHOOK, EMPTY_MESSAGE)

    assert codes["http1 webhook"] == {415}
    assert codes["http1 transfers"] == {415}
    for path in NON_PUBLIC_PATHS[:4]:
        assert codes[path] == {"UNIMPLEMENTED"}, path
    assert codes["empty webhook"] == {"INVALID_ARGUMENT"}
    assert codes["no message"] == {"INVALID_ARGUMENT"}
    assert codes["corrupt message"] == {"INVALID_ARGUMENT"}
    assert outlier_ejections(mesh) == before
    assert unhealthy_instances(mesh) == []
