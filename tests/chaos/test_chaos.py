"""The short chaos run of `make test`: 32 clients through the edge while every kind of
fault happens once (seed fixed, so a failure can be replayed with
`python -m tests.chaos --seed 11 --short`)."""

from __future__ import annotations

from pathlib import Path

from tests.chaos.run import run, short_run

SEED = 11


def test_the_bank_keeps_every_promise_under_faults(tmp_path: Path) -> None:
    report = run(short_run(SEED, tmp_path))
    # The workload really ran through the faults.
    assert report.acked > 500, report.summary()
    assert all(f.start is not None and f.end is not None for f in report.per_fault)
    found = {
        "lost": report.lost,
        "duplicated": report.duplicated,
        "violations": report.violations[:20],
        "5xx outside fault windows": report.server_errors_outside,
    }
    assert found == {
        "lost": 0,
        "duplicated": 0,
        "violations": [],
        "5xx outside fault windows": 0,
    }, f"{report.summary()}\nexamples: {report.outside_examples}\nresults in {tmp_path}"
