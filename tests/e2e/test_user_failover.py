"""Two user-service instances behind Envoy: load is spread over both, and
losing one costs the clients nothing."""

from __future__ import annotations

from typing import Any

import httpx

from services.localmesh.mesh import Mesh
from tests.e2e.people import PASSWORD, register_and_login, unique_email
from tests.eventually import eventually


def user_hosts(mesh: Mesh) -> dict[int, dict[str, Any]]:
    """Envoy's view of each user-service instance, by port (admin /clusters)."""
    clusters = httpx.get(f"{mesh.admin_url}/clusters?format=json", timeout=5).json()
    cluster = next(c for c in clusters["cluster_statuses"] if c["name"] == "user_grpc")
    return {
        host["address"]["socket_address"]["port_value"]: host for host in cluster["host_statuses"]
    }


def requests_served(host: dict[str, Any]) -> int:
    return next(int(s.get("value", 0)) for s in host["stats"] if s["name"] == "rq_total")


def test_requests_are_spread_over_both_instances(mesh: Mesh, rest: httpx.Client) -> None:
    ada = register_and_login(rest, "spread")
    before = {port: requests_served(host) for port, host in user_hosts(mesh).items()}
    for _ in range(40):
        assert rest.get("/v1/users/me", headers=ada.auth).status_code == 200
    after = {port: requests_served(host) for port, host in user_hosts(mesh).items()}
    served = {port: after[port] - before[port] for port in before}
    assert len(served) == 2
    # Round robin (one count per Envoy worker): each instance takes a real share.
    assert all(count >= 10 for count in served.values()), served


def test_killing_an_instance_costs_clients_nothing(mesh: Mesh, rest: httpx.Client) -> None:
    ada = register_and_login(rest, "failover")
    victim_port = int(mesh.instance_addresses("user")[0].rsplit(":", 1)[1])
    mesh.kill_instance("user", 0)
    try:
        # Reads and registrations right after the kill: retried on the survivor.
        for _ in range(30):
            assert rest.get("/v1/users/me", headers=ada.auth).status_code == 200
        for _ in range(5):
            email = unique_email("during")
            created = rest.post(
                "/v1/users", json={"email": email, "password": PASSWORD, "display_name": "D"}
            )
            assert created.status_code == 200, created.text

        def ejected() -> list[str]:
            flags: dict[str, Any] = user_hosts(mesh)[victim_port]["health_status"]
            return [] if flags.get("failed_active_health_check") is True else [str(flags)]

        eventually(
            ejected, "Envoy's active health check to fail the killed instance", 20, interval=0.2
        )
    finally:
        mesh.restart_instance("user", 0, wait_for_edge=True)
    assert user_hosts(mesh)[victim_port]["health_status"].get("failed_active_health_check") is None
