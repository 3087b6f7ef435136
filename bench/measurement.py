"""One workload's numbers, in one shape whatever tool measured them, so the report and
the ratios never care which load generator ran."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Measurement:
    name: str  # e.g. "grpc-transfer-uniform-c32"
    tool: str  # pgbench, ghz, wrk
    workload: str  # what runs: sql-transfer, grpc-transfer, rest-transfer, grpc-get-wallet
    shape: str  # uniform, hot, cache-on, cache-off, edge, direct
    concurrency: int
    seconds: float
    requests: int
    throughput: float  # completed requests (or transactions) per second
    errors: int
    # Latencies in milliseconds; None where the tool does not report that percentile.
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    statuses: dict[str, int] = field(default_factory=dict)
    notes: str = ""
    # Milliseconds of CPU per transfer booked, by process family and in total (bench/cpu.py);
    # empty where not measured (the floor, reads).
    cpu_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)
