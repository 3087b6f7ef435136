"""The faults: a seeded schedule, an injector that runs it (in a thread, beside the
clients) and logs when each fault started and when it was healed.

Kinds, one of each per round, in a seeded order:

    kill:<service>    SIGKILL one instance of the service (seeded index); the mesh's
                      supervisor starts it again
    kill:all          (short runs) the same for every service at once
    restart_postgres  fast shutdown of PostgreSQL, then start again
    restart_redis     stop Redis, leave it down a moment, start it again
    hang_redis        SIGSTOP Redis for a few seconds (connections hang), then SIGCONT
    flaky_sandbox     the sandbox provider fails 30% of calls for a few seconds
                      (the `sandbox:failure-rate` Redis switch)

A fault's window is [start, end]: from the moment it is injected until what it broke
serves again (for a kill or a restart: until Envoy sees every instance healthy).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
from dataclasses import asdict, dataclass
from typing import Any

import redis

from services.gateway.adapters.sandbox import FAILURE_RATE_KEY
from services.localmesh.mesh import Mesh
from tests.chaos.history import Clock

log = logging.getLogger(__name__)

KILLED_SERVICES = ("user", "transaction", "gateway", "ratelimit")
KINDS = (
    *(f"kill:{service}" for service in KILLED_SERVICES),
    "restart_postgres",
    "restart_redis",
    "hang_redis",
    "flaky_sandbox",
)
SANDBOX_FAILURE_RATE = 0.3


@dataclass
class Fault:
    kind: str
    target: str  # "transaction-2" (kills: instances, comma-separated), "postgres", "redis"...
    gap: float  # seconds of quiet before it is injected
    hold: float  # seconds it stays before it is healed (0: heal at once)
    start: float | None = None
    end: float | None = None
    error: str = ""

    def window(self, grace: float) -> tuple[float, float] | None:
        if self.start is None:
            return None
        return self.start, (self.end if self.end is not None else self.start) + grace

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def schedule(
    seed: int,
    rounds: int,
    instances: int,
    gap: tuple[float, float],
    *,
    kills_together: bool = False,
) -> list[Fault]:
    """`rounds` rounds of every kind of fault, each round in a seeded order. With
    `kills_together`, one `kill:all` fault kills an instance of every service at once."""
    rng = random.Random(seed)
    kinds_of_a_round = [k for k in KINDS if not (kills_together and k.startswith("kill:"))]
    if kills_together:
        kinds_of_a_round.append("kill:all")
    faults: list[Fault] = []
    for _ in range(rounds):
        kinds = list(kinds_of_a_round)
        rng.shuffle(kinds)
        for kind in kinds:
            wait = round(rng.uniform(*gap), 2)
            if kind.startswith("kill:"):
                services = KILLED_SERVICES if kind == "kill:all" else (kind.split(":", 1)[1],)
                target = ",".join(f"{s}-{rng.randrange(instances) + 1}" for s in services)
                hold = 0.0
            elif kind == "restart_postgres":
                target, hold = "postgres", round(rng.uniform(0.0, 1.0), 2)
            elif kind == "restart_redis":
                target, hold = "redis", round(rng.uniform(1.0, 3.0), 2)
            elif kind == "hang_redis":
                target, hold = "redis", round(rng.uniform(2.0, 5.0), 2)
            else:
                target, hold = "sandbox", round(rng.uniform(4.0, 8.0), 2)
            faults.append(Fault(kind, target, wait, hold))
    return faults


def bring_back(mesh: Mesh) -> None:
    """Wait until the mesh's supervisor has restarted whatever was killed and the edge
    routes to every instance again (the supervisor, not the injector, restarts: that is
    what the run tests)."""
    mesh.supervisor.wait_until_healthy(mesh.config.ready_timeout)


class Injector:
    """Runs a schedule in a thread of its own; `stop()` ends it early (and heals)."""

    def __init__(self, mesh: Mesh, faults: list[Fault], clock: Clock) -> None:
        self.mesh = mesh
        self.faults = faults
        self.clock = clock
        self._stop = threading.Event()
        self._sandbox_switch = redis.Redis.from_url(mesh.redis.url, socket_timeout=2)

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        try:
            for fault in self.faults:
                if self._stop.wait(fault.gap):
                    return
                fault.start = self.clock.now()
                log.warning("fault %s on %s at %.1f s", fault.kind, fault.target, fault.start)
                try:
                    self._inject(fault)
                except Exception as error:
                    log.exception("fault %s failed", fault.kind)
                    fault.error = f"{type(error).__name__}: {error}"
                    self.heal()
                fault.end = self.clock.now()
                log.warning("fault %s healed at %.1f s", fault.kind, fault.end)
        finally:
            self.heal()

    def _inject(self, fault: Fault) -> None:
        mesh = self.mesh
        if fault.kind.startswith("kill:"):
            instances = [name.rsplit("-", 1) for name in fault.target.split(",")]
            for service, number in instances:
                mesh.kill_instance(service, int(number) - 1)
            # Let the supervisor see the exits before asking whether all is well again.
            mesh.supervisor.wait_for_checks()
            bring_back(mesh)
        elif fault.kind == "restart_postgres":
            mesh.stop_postgres()
            self._stop.wait(fault.hold)
            mesh.start_postgres()
            bring_back(mesh)
        elif fault.kind == "restart_redis":
            mesh.stop_redis()
            self._stop.wait(fault.hold)
            mesh.start_redis()
            bring_back(mesh)
        elif fault.kind == "hang_redis":
            pid = mesh.redis.pid
            if pid is None:
                raise RuntimeError("Redis is not running")
            os.kill(pid, signal.SIGSTOP)
            try:
                self._stop.wait(fault.hold)
            finally:
                os.kill(pid, signal.SIGCONT)
            bring_back(mesh)
        elif fault.kind == "flaky_sandbox":
            # With an expiry, so a crashed run never leaves the provider failing.
            self._sandbox_switch.set(
                FAILURE_RATE_KEY, str(SANDBOX_FAILURE_RATE), ex=int(fault.hold) + 60
            )
            try:
                self._stop.wait(fault.hold)
            finally:
                self._sandbox_switch.delete(FAILURE_RATE_KEY)
        else:
            raise ValueError(f"unknown fault {fault.kind}")

    def heal(self) -> None:
        """Whatever a fault left broken serves again (idempotent)."""
        mesh = self.mesh
        pid = mesh.redis.pid
        if pid is not None and mesh.redis.is_running:
            os.kill(pid, signal.SIGCONT)
        if not mesh.redis.is_running:
            mesh.start_redis()
        if not mesh.postgres.is_running():
            mesh.start_postgres()
        self._sandbox_switch.delete(FAILURE_RATE_KEY)
        bring_back(mesh)

    def close(self) -> None:
        self._sandbox_switch.close()
