"""results.json, results.md and the ratios: the numbers of one run, and what they mean
against the targets in README "Benchmarks"."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

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


def ratios(measurements: list[Measurement], concurrency: int) -> list[Ratio]:
    """Every ratio whose two measurements exist. `concurrency` is the client count the
    comparisons use (32 by default; the floor's is the nearest pgbench ran)."""
    c = concurrency
    wanted = [
        (
            "end-to-end gRPC ÷ SQL floor (uniform)",
            f"grpc-transfer-uniform-c{c}",
            f"sql-transfer-uniform-c{c}",
            0.5,
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
            "cache on ÷ off (GetWallet, direct)",
            f"grpc-get-wallet-cache-on-c{c}",
            f"grpc-get-wallet-cache-off-c{c}",
            3.0,
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
        a, b = _find(measurements, top), _find(measurements, bottom)
        if a is not None and b is not None and b.throughput > 0:
            found.append(Ratio(label, top, bottom, a.throughput / b.throughput, target))
    return found


def latency_target(measurements: list[Measurement], concurrency: int = 32) -> list[str]:
    """p99 ≤ 25 ms with zero errors at 32 clients, for every end-to-end workload."""
    lines = []
    for m in measurements:
        if m.concurrency == concurrency and m.tool != "pgbench" and m.p99_ms is not None:
            ok = m.p99_ms <= 25.0 and m.errors == 0
            verdict = "met" if ok else "NOT met"
            lines.append(f"{m.name}: p99 {m.p99_ms:.1f} ms, {m.errors} errors → {verdict}")
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def markdown(
    measurements: list[Measurement],
    found: list[Ratio],
    latency: list[str],
    machine: dict[str, object],
    audit: str,
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
    lines += ["", "## Latency target (32 clients)", ""] + [f"- {line}" for line in latency]
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
    latency = latency_target(measurements)
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
        "audit": audit,
    }
    (out_dir / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    (out_dir / "results.md").write_text(markdown(measurements, found, latency, machine, audit))
    summary = [
        f"{r.name}: {r.value:.2f}"
        + ("" if r.target is None else f" (target ≥ {r.target:g}: {'met' if r.met else 'NOT met'})")
        for r in found
    ]
    return "\n".join(summary + latency)
