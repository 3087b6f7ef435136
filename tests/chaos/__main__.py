"""`python -m tests.chaos [--seed N] [--rounds 3] [--short] [--clients 32] [--out DIR]`

(`make chaos`.)

The bank workload through the edge of a mesh of its own while a seeded schedule of
faults runs (every kind of fault once per round: kill -9 an instance of each service,
restart PostgreSQL, restart Redis, hang Redis, a sandbox provider failing 30% of
calls). Prints one summary line, writes history.json, faults.json and report.json to
--out (default .run/chaos/<UTC time>-seed<N>/), and exits 1 if anything was lost or
duplicated, an invariant was violated or a server error came outside a fault window.
The same --seed gives the same faults in the same order, the same targets and the
same clients' choices (timings, and so interleavings, differ from run to run).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import random
import sys
from datetime import UTC, datetime
from pathlib import Path

from services.localmesh.edge import REPO_ROOT
from tests.chaos.run import RunSettings, run, short_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every fault")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (≥ 2)")
    parser.add_argument("--people", type=int, default=8, help="people the clients act for")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds after each fault")
    parser.add_argument("--out", default=None, help="folder for the JSON results")
    parser.add_argument(
        "--short", action="store_true", help="the short run of make test (ignores --rounds)"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.clients < 1 or args.people < 3:
        parser.error("need at least one round, one client and three people")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or REPO_ROOT / ".run" / "chaos" / f"{stamp}-seed{seed}"
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("tests.chaos").setLevel(logging.INFO)
    print(f"chaos: seed {seed}, results in {out}", flush=True)
    if args.short:
        settings = short_run(seed, Path(out))
    else:
        settings = RunSettings(seed=seed, out_dir=Path(out), rounds=args.rounds, gap=(2.0, 6.0))
    settings = dataclasses.replace(
        settings, clients=args.clients, people=args.people, grace=args.grace
    )
    report = run(settings)
    for fault in report.per_fault:
        print(
            f"  {fault.kind:<18} {fault.target:<14} {fault.start}-{fault.end} s: "
            f"{fault.server_errors} server errors {fault.statuses}"
        )
    for violation in report.violations[:20]:
        print(f"  violation: {violation}")
    for example in report.outside_examples:
        print(f"  5xx outside: {example}")
    print(report.summary(), flush=True)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
