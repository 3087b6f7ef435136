"""One chaos run: start a mesh of its own (free loopback ports, two instances of every
service, limits that never refuse the workload), seed people through the edge, run the
clients while the injector runs the fault schedule, keep the load going a little after
the last fault is healed, then resolve and check (checker.py), and write

    <out>/history.json   every intent and every attempt
    <out>/faults.json    the schedule, with when each fault started and was healed
    <out>/report.json    the checker's findings and the summary line
    <out>/envoy-stats.txt  Envoy's counters at the end (retries, ejections, errors)
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from services.localmesh.edge import REPO_ROOT
from services.localmesh.mesh import Mesh, MeshConfig
from tests.chaos.checker import Checker, Report, p99_ms
from tests.chaos.faults import Injector, schedule
from tests.chaos.history import Clock, History, Outcome
from tests.chaos.workload import Bank, Mix, run_clients, seed_people

log = logging.getLogger(__name__)

GENEROUS_LIMITS = REPO_ROOT / "tests" / "e2e" / "limits-generous.yaml"
FUNDING = 100_000  # minor units credited to each wallet before the load
# Payment timings of the chaos mesh: short provider deadlines (so a hung provider call
# leaves a top-up pending instead of holding a client), fast webhooks, and a reconciler
# that looks again within seconds, so pending top-ups settle before the checks.
TIMINGS = {
    "GATEWAY_CALL_TIMEOUT_MS": "500",
    "GATEWAY_RETRY_BASE_DELAY_MS": "50",
    "GATEWAY_SANDBOX_WEBHOOK_DELAY_MS": "2000",
    "GATEWAY_BREAKER_FAILURES": "5",
    "GATEWAY_BREAKER_OPEN_MS": "1500",
    "TRANSACTION_GATEWAY_TIMEOUT_MS": "4500",
    "TRANSACTION_RECONCILE_AFTER_MS": "2000",
    "TRANSACTION_RECONCILE_INTERVAL_MS": "300",
    "TRANSACTION_RECONCILE_MAX_INTERVAL_MS": "2000",
}


@dataclass(frozen=True)
class RunSettings:
    seed: int
    out_dir: Path
    rounds: int = 1  # each round: every kind of fault once
    clients: int = 32
    people: int = 8  # registered through the edge; clients share them
    instances: int = 2
    gap: tuple[float, float] = (1.0, 3.0)  # seconds of quiet before each fault
    grace: float = 5.0  # seconds after a fault's end that still count as its window
    mix: Mix = field(default_factory=Mix)
    # Kill one instance of every service at the same moment (one fault) instead of one
    # service at a time: the short run's way to fit in its time.
    kills_together: bool = False


def short_run(seed: int, out_dir: Path) -> RunSettings:
    """The run of `make test` (test_chaos.py): every fault once, the kills at once, short
    gaps; about two minutes with the mesh's start on a small machine."""
    return RunSettings(seed=seed, out_dir=out_dir, rounds=1, gap=(0.5, 1.5), kills_together=True)


def run(settings: RunSettings) -> Report:
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(
        MeshConfig.for_tests(settings.out_dir / "mesh", instances=settings.instances),
        ratelimit_config=GENEROUS_LIMITS,
        extra_env=TIMINGS,
        log_level="WARNING",
        # The supervisor brings back what the kills take down, as in `make run`.
        supervise=True,
    )
    log.info("starting a mesh in %s", config.run_dir)
    with Mesh(config) as mesh:
        report = asyncio.run(_seed_load_and_check(mesh, settings))
    return report


async def _seed_load_and_check(mesh: Mesh, settings: RunSettings) -> Report:
    log.info("seeding %d people through the edge", settings.people)
    people, funding = await seed_people(mesh, settings.people, FUNDING, f"s{settings.seed}")
    clock = Clock()
    history = History(clock)
    faults = schedule(
        settings.seed,
        settings.rounds,
        settings.instances,
        settings.gap,
        kills_together=settings.kills_together,
    )
    log.info("load and %d faults", len(faults))
    injector = Injector(mesh, faults, clock)
    limits = httpx.Limits(max_connections=2 * settings.clients)
    loading = True
    async with httpx.AsyncClient(base_url=mesh.edge_url, limits=limits) as rest:
        bank = Bank(mesh, history, rest)
        clients = asyncio.create_task(
            run_clients(
                bank, people, settings.clients, settings.seed, settings.mix, lambda: loading
            )
        )
        try:
            await asyncio.to_thread(injector.run)
            # The load goes on past the last fault's grace: errors there count as
            # outside every window.
            await asyncio.sleep(settings.grace + 3)
        finally:
            loading = False
            injector.stop()
            await clients
            injector.close()
        load_end = clock.now()
        log.info("load over at %.1f s; resolving and checking", load_end)
        checker = Checker(mesh, bank, history, people, funding, faults, settings.grace)
        answer_lost, booked, not_booked = await checker.resolve()
        pending = await asyncio.to_thread(checker.wait_for_top_ups)
        checker.check_ledger()
        checker.check_edge()
        audit = checker.audit()
        inside, outside, examples, per_fault = checker.server_errors()
        await bank.aclose()
        # Envoy's counters (retries, ejections, rate-limit errors per cluster): what
        # explains an error the checker found.
        stats = await asyncio.to_thread(httpx.get, f"{mesh.admin_url}/stats", timeout=10)
        (settings.out_dir / "envoy-stats.txt").write_text(stats.text)
    if pending:
        checker.violation(f"{pending} top-up(s) still pending after the settle wait")
    load_attempts = [a for a in history.attempts if a.send != "resolution"]
    acked = {k for a in load_attempts for k, r in a.results.items() if r.outcome is Outcome.OK}
    report = Report(
        seed=settings.seed,
        attempts=len(load_attempts),
        intents=len(history.intents),
        acked=len(acked),
        answer_lost=answer_lost,
        resolved_booked=booked,
        resolved_not_booked=not_booked,
        lost=checker.lost,
        duplicated=checker.duplicated,
        violations=checker.violations,
        server_errors_in_windows=inside,
        server_errors_outside=outside,
        outside_examples=examples,
        per_fault=per_fault,
        p99_ms=p99_ms(load_attempts),
        pending_top_ups=pending,
        audit_output=audit,
    )
    _write(settings.out_dir / "history.json", history.to_json())
    _write(
        settings.out_dir / "faults.json",
        {
            "seed": settings.seed,
            "grace": settings.grace,
            "load_end": load_end,
            "faults": [f.to_json() for f in faults],
        },
    )
    _write(settings.out_dir / "report.json", report.to_json())
    log.info("%s", report.summary())
    return report


def _write(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=1, default=str) + "\n")
