"""results.png: throughput and p50/p95/p99 of every workload, one glance per run.

matplotlib is optional (the numbers are in results.json and results.md either way); the
Agg backend draws without a display.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported: no display needed
import matplotlib.pyplot as plt

from bench.measurement import Measurement


def draw(path: Path, measurements: list[Measurement]) -> None:
    names = [m.name for m in measurements]
    positions = list(range(len(names)))
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, len(names) * 0.7), 9))
    top.bar(positions, [m.throughput for m in measurements], color="tab:blue")
    top.set_ylabel("per second")
    top.set_title("Throughput (successful requests; pgbench: booked transfers)")
    width = 0.27
    for offset, label, values in (
        (-width, "p50", [m.p50_ms or m.mean_ms or 0.0 for m in measurements]),
        (0.0, "p95", [m.p95_ms or 0.0 for m in measurements]),
        (width, "p99", [m.p99_ms or 0.0 for m in measurements]),
    ):
        bottom.bar([p + offset for p in positions], values, width, label=label)
    bottom.set_ylabel("ms (log)")
    bottom.set_yscale("log")
    bottom.set_title("Latency (pgbench: mean only, shown as p50)")
    bottom.legend()
    for axis in (top, bottom):
        axis.set_xticks(positions)
        axis.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
