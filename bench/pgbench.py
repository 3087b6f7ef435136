"""The floor: PostgreSQL alone running the very function the service calls per transfer.

pgbench (C client, prepared statements) calls `ledger_transfer` between seeded wallets
with a fresh idempotency key each time, so the gap between this and the end-to-end numbers
is what Python, gRPC and Envoy cost. The only extra work is looking the two wallets up in
`bench_wallets` by number (two primary-key probes in the same statement).

pgbench counts a call that returns a refusal (`{"outcome": "insufficient_funds"}`) as a
success, so the transfers actually booked are counted in the ledger around each run.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import psycopg

from bench.measurement import Measurement
from services.localmesh.postgres import find_bin_dir

_TRANSFER = """\
SELECT ledger_transfer(s.owner_id, md5(random()::text || clock_timestamp()::text), 'bench',
                       s.wallet_id, d.wallet_id, 1, 'EUR', NULL, NULL)
  FROM bench_wallets s, bench_wallets d
 WHERE s.n = :src AND d.n = :dst;
"""

# uniform: any wallet pays any other; hot: every transfer pays wallet 1 (a merchant).
SCRIPTS = {
    "uniform": (
        "\\set src random(1, :wallets)\n"
        "\\set off random(1, :wallets - 1)\n"
        "\\set dst 1 + (:src - 1 + :off) % :wallets\n" + _TRANSFER
    ),
    "hot": "\\set src random(2, :wallets)\n\\set dst 1\n" + _TRANSFER,
}


def pgbench_path() -> Path:
    return find_bin_dir() / "pgbench"


def server_version(conninfo: str) -> str:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT version()").fetchone()
    return str(row[0]) if row else "unknown"


def _booked_transfers(conninfo: str) -> int:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT count(*) FROM transactions WHERE type = 'transfer'").fetchone()
    return int(row[0]) if row else 0


def run_pgbench(
    conninfo: str,
    *,
    shape: str,
    clients: int,
    seconds: int,
    wallets: int,
    work_dir: Path,
) -> Measurement:
    """One pgbench run of `shape` ("uniform" or "hot"); raises if pgbench fails."""
    script = work_dir / f"pgbench-{shape}.sql"
    script.write_text(SCRIPTS[shape])
    info = psycopg.conninfo.conninfo_to_dict(conninfo)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = str(info["password"])
    command = [
        str(pgbench_path()),
        "--no-vacuum",
        "--protocol=prepared",
        f"--client={clients}",
        f"--jobs={min(clients, os.cpu_count() or 1)}",
        f"--time={seconds}",
        f"--define=wallets={wallets}",
        f"--file={script}",
        f"--host={info['host']}",
        f"--port={info['port']}",
        f"--username={info['user']}",
        str(info["dbname"]),
    ]
    before = _booked_transfers(conninfo)
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=seconds + 120, check=False
    )
    (work_dir / f"pgbench-{shape}-c{clients}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"pgbench failed ({result.returncode}): {result.stderr.strip()}")
    booked = _booked_transfers(conninfo) - before
    processed = _number(r"number of transactions actually processed: (\d+)", result.stdout)
    failed = _number(r"number of failed transactions: (\d+)", result.stdout) or 0
    tps = _number(r"tps = ([\d.]+) \(without initial connection time\)", result.stdout)
    mean = _number(r"latency average = ([\d.]+) ms", result.stdout)
    if processed is None or tps is None:
        raise RuntimeError(f"could not read pgbench's output:\n{result.stdout}")
    # Calls that returned a refusal did not book anything: count them as errors.
    refused = max(int(processed) - booked, 0)
    return Measurement(
        name=f"sql-transfer-{shape}-c{clients}",
        tool="pgbench",
        workload="sql-transfer",
        shape=shape,
        concurrency=clients,
        seconds=seconds,
        requests=int(processed),
        throughput=tps * booked / processed if processed else 0.0,
        errors=int(failed) + refused,
        mean_ms=mean,
        statuses={"booked": booked, "refused": refused, "failed": int(failed)},
    )


def _number(pattern: str, text: str) -> float | None:
    match = re.search(pattern, text)
    return float(match.group(1)) if match else None
