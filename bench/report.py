"""results.json, results.md and the ratios: the numbers of one run, and what they mean
against the targets in README "Benchmarks"."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from bench.cpu import LOAD_GENERATOR
from bench.measurement import Measurement


@dataclass(frozen=True)
class Ratio:
    name: str
    numerator: str  # measurement names
    denominator: str
    value: float
    target: float | None  # at least this (None: informative only)

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.value >= self.target


def machine_info(postgres_version: str) -> dict[str, object]:
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgresql": postgres_version,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _find(measurements: list[Measurement], name: str) -> Measurement | None:
    return next((m for m in measurements if m.name == name), None)


LOW_AT = 8  # the fewer clients the floor ratio has its own target at


def ratios(measurements: list[Measurement], concurrency: int) -> list[Ratio]:
    """Every ratio whose two measurements exist. `concurrency` is the client count the
    comparisons use (32 by default; the floor's is the nearest pgbench ran)."""
    c = concurrency
    wanted = [
        (
            f"end-to-end gRPC ÷ SQL floor (uniform, {c} clients)",
            f"grpc-transfer-uniform-c{c}",
            f"sql-transfer-uniform-c{c}",
            0.5,
        ),
        (
            f"end-to-end gRPC ÷ SQL floor (uniform, {LOW_AT} clients)",
            f"grpc-transfer-uniform-c{LOW_AT}",
            f"sql-transfer-uniform-c{LOW_AT}",
            0.35,
        ),
        (
            "batched gRPC transfers ÷ SQL floor (uniform)",
            next(
                (
                    m.name
                    for m in measurements
                    if m.name.startswith("grpc-transfer-batch") and m.name.endswith(f"-c{c}")
                ),
                "",
            ),
            f"sql-transfer-uniform-c{c}",
            0.5,
        ),
        ("hot ÷ uniform (gRPC)", f"grpc-transfer-hot-c{c}", f"grpc-transfer-uniform-c{c}", 0.8),
        (
            "between databases ÷ within one (gRPC transfers)",
            f"grpc-transfer-cross-c{c}",
            f"grpc-transfer-uniform-c{c}",
            0.5,
        ),
        ("hot ÷ uniform (SQL floor)", f"sql-transfer-hot-c{c}", f"sql-transfer-uniform-c{c}", None),
        (
            "REST ÷ gRPC (transfers)",
            f"rest-transfer-uniform-c{c}",
            f"grpc-transfer-uniform-c{c}",
            None,
        ),
        (
            "history page cached ÷ uncached (ListTransactions, 50 items, direct)",
            f"grpc-list-transactions-cache-on-c{c}",
            f"grpc-list-transactions-cache-off-c{c}",
            2.0,
        ),
        (
            "cache on ÷ off (GetWallet, direct)",
            f"grpc-get-wallet-cache-on-c{c}",
            f"grpc-get-wallet-cache-off-c{c}",
            None,
        ),
        (
            "Envoy ÷ direct (GetWallet)",
            f"grpc-get-wallet-edge-c{c}",
            f"grpc-get-wallet-cache-on-c{c}",
            None,
        ),
    ]
    found: list[Ratio] = []
    for label, top, bottom, target in wanted:
        if any((r.numerator, r.denominator) == (top, bottom) for r in found):
            continue  # at 8 clients the two floor ratios are one
        a, b = _find(measurements, top), _find(measurements, bottom)
        if a is not None and b is not None and b.throughput > 0:
            found.append(Ratio(label, top, bottom, a.throughput / b.throughput, target))
    return found


P99_TARGET_MS = 25.0
SINGLE_TRANSFERS = ("grpc-transfer", "rest-transfer")  # one transfer per call: the target's
CPU_TARGET_MS = 1.2  # per single transfer, every process of the mesh together


def latency_target(measurements: list[Measurement], concurrency: int = 32) -> list[str]:
    """p99 ≤ 25 ms with zero errors at 8 clients, for every single-transfer workload; at
    `concurrency` the p99 beside the queueing bound (clients ÷ throughput: the mean
    latency a saturated system cannot beat, whatever it does per call)."""
    lines = []
    for m in measurements:
        if m.workload not in SINGLE_TRANSFERS or m.p99_ms is None:
            continue
        if m.concurrency == LOW_AT:
            ok = m.p99_ms <= P99_TARGET_MS and m.errors == 0
            verdict = "met" if ok else "NOT met"
            lines.append(
                f"{m.name}: p99 {m.p99_ms:.1f} ms, {m.errors} errors"
                f" (target ≤ {P99_TARGET_MS:g} ms, 0 errors) → {verdict}"
            )
        elif m.concurrency == concurrency and m.throughput > 0:
            calls = m.requests / m.seconds if m.seconds else m.throughput
            bound = m.concurrency / calls * 1000
            lines.append(
                f"{m.name}: p99 {m.p99_ms:.1f} ms, mean {_ms(m.mean_ms)} ms,"
                f" queueing bound {bound:.1f} ms, {m.errors} errors"
            )
    return lines


def cpu_target(measurements: list[Measurement], concurrency: int) -> list[str]:
    """CPU per single transfer (all processes of the mesh) ≤ 1.2 ms, per client count."""
    lines = []
    for m in measurements:
        total = m.cpu_ms.get("total")
        if m.workload != "grpc-transfer" or m.shape != "uniform" or total is None:
            continue
        if m.concurrency in (LOW_AT, concurrency):
            verdict = "met" if total <= CPU_TARGET_MS else "NOT met"
            lines.append(
                f"{m.name}: {total:.2f} ms of CPU per transfer"
                f" (target ≤ {CPU_TARGET_MS:g}) → {verdict}"
            )
    return lines


# Column order of "where the time goes"; families not listed follow, by name.
FAMILY_ORDER = ("transaction", "user", "gateway", "ratelimit", "envoy", "postgres", "redis")


def cpu_table(measurements: list[Measurement]) -> list[str]:
    """Markdown lines: ms of CPU per transfer booked, by process family."""
    metered = [m for m in measurements if m.cpu_ms]
    if not metered:
        return []
    seen = {name for m in metered for name in m.cpu_ms} - {"total", LOAD_GENERATOR}
    families = [f for f in FAMILY_ORDER if f in seen] + sorted(seen - set(FAMILY_ORDER))
    columns = [*families, "total", LOAD_GENERATOR]
    lines = [
        "## Where the time goes (ms of CPU per transfer booked)",
        "",
        "| Workload | Transfers/s | " + " | ".join(columns) + " |",
        "|---|---:|" + "---:|" * len(columns),
    ]
    for m in metered:
        cells = " | ".join(f"{m.cpu_ms.get(c, 0.0):.2f}" for c in columns)
        lines.append(f"| {m.name} | {m.throughput:,.0f} | {cells} |")
    return [*lines, ""]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def markdown(
    measurements: list[Measurement],
    found: list[Ratio],
    latency: list[str],
    machine: dict[str, object],
    audit: str,
    cpu: list[str],
) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {machine['nproc']} CPUs, {machine['cpu_model']}; {machine['postgresql']}",
        "",
        "| Workload | Tool | Clients | Requests | Throughput/s | p50 ms | p95 ms | p99 ms"
        " | mean ms | Errors | Statuses |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m in measurements:
        statuses = ", ".join(f"{k}: {v}" for k, v in m.statuses.items())
        lines.append(
            f"| {m.name} | {m.tool} | {m.concurrency} | {m.requests} | {m.throughput:,.0f}"
            f" | {_ms(m.p50_ms)} | {_ms(m.p95_ms)} | {_ms(m.p99_ms)} | {_ms(m.mean_ms)}"
            f" | {m.errors} | {statuses} |"
        )
    lines += ["", "## Ratios", "", "| Ratio | Value | Target | Met |", "|---|---:|---:|---|"]
    for r in found:
        target = "-" if r.target is None else f"≥ {r.target:g}"
        met = "-" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(f"| {r.name} | {r.value:.2f} | {target} | {met} |")
    lines += ["", "## Latency", ""] + [f"- {line}" for line in latency]
    lines += ["", "## CPU target", ""] + [f"- {line}" for line in cpu]
    lines += ["", *cpu_table(measurements)]
    lines += ["", f"Ledger audit after the run: `{audit}`", ""]
    return "\n".join(lines)


def write_results(
    out_dir: Path,
    measurements: list[Measurement],
    machine: dict[str, object],
    settings: dict[str, object],
    audit: str,
    concurrency: int,
) -> str:
    """Write results.json and results.md; return the text to print (ratios, targets)."""
    found = ratios(measurements, concurrency)
    latency = latency_target(measurements, concurrency)
    cpu = cpu_target(measurements, concurrency)
    document = {
        "machine": machine,
        "settings": settings,
        "measurements": [m.as_dict() for m in measurements],
        "ratios": [
            {
                "name": r.name,
                "numerator": r.numerator,
                "denominator": r.denominator,
                "value": round(r.value, 4),
                "target": r.target,
                "met": r.met,
            }
            for r in found
        ],
        "latency_target": latency,
        "cpu_target": cpu,
        "audit": audit,
    }
    (out_dir / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    (out_dir / "results.md").write_text(markdown(measurements, found, latency, machine, audit, cpu))
    summary = [
        f"{r.name}: {r.value:.2f}"
        + ("" if r.target is None else f" (target ≥ {r.target:g}: {'met' if r.met else 'NOT met'})")
        for r in found
    ]
    return "\n".join(summary + latency + cpu)
