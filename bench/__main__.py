"""`python -m bench run [--seconds N] [--concurrency 8,32,128] [--wallets 2000] [--batch 20]`

Runs every stage against a mesh of its own, in this order (later stages need the earlier
ones' wallets, and the audit must see everything the load wrote):

1. start a mesh (free ports, generous rate limits so the limiter never refuses, WARNING
   logs, no tracing) in bench/results/<timestamp>/mesh, with the ledger on two databases
   as `make run` has it, and seed wallets and tokens in each (--wallets per database);
2. the SQL floor with pgbench (uniform and hot account) on the first database;
3. gRPC transfers through Envoy with ghz at each concurrency within the first database
   (uniform, then hot account), then from it to the second (cross: every transfer two
   legs through the saga), then batches of transfers (BatchCreateTransfers, --batch per
   call, within the first) up to 32 clients; each with the CPU every kind of process
   spent per transfer (bench/cpu.py);
4. REST transfers with wrk (skipped if wrk cannot be had);
5. GetWallet direct to one instance with Redis up, through Envoy; a history page
   (ListTransactions, 50 items) direct with Redis up; both direct with Redis stopped;
6. the ledger audit; then results.json, results.md, the chart, and the ratios.

Exits 1 if the audit fails or an end-to-end workload had any non-OK answer (results are
written first either way).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from bench import ghz, pgbench, report, seed, wrk
from bench.cpu import CpuMeter, per_unit_ms
from bench.measurement import Measurement
from services.catalogue import TRANSACTION
from services.localmesh.mesh import Mesh, MeshConfig
from services.transaction.adapters.shards import first_split

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
GENEROUS_LIMITS = REPO / "tests" / "e2e" / "limits-generous.yaml"
COMPARE_AT = 32  # the client count the ratios and the latency target use
DATABASES = 2  # the ledger's, as `make run` has them


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run every benchmark stage")
    run.add_argument("--seconds", type=int, default=10, help="length of each workload")
    run.add_argument("--concurrency", default="8,32,128", help="comma-separated client counts")
    run.add_argument("--wallets", type=int, default=2000, help="wallets to seed")
    run.add_argument("--batch", type=int, default=20, help="transfers per batch call (1-100)")
    args = parser.parse_args(argv)
    concurrencies = sorted({int(c) for c in args.concurrency.split(",") if c.strip()})
    if not concurrencies or min(concurrencies) < 1 or args.wallets < ghz.SOURCES + 1:
        parser.error(f"need client counts ≥ 1 and at least {ghz.SOURCES + 1} wallets")
    if not 1 <= args.batch <= 100:
        parser.error("--batch takes 1 to 100 transfers")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_all(args.seconds, concurrencies, args.wallets, args.batch)


def say(message: str) -> None:
    print(f"bench: {message}", flush=True)


def run_all(seconds: int, concurrencies: list[int], wallet_count: int, batch: int) -> int:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = RESULTS / stamp
    work_dir = out_dir / "work"
    work_dir.mkdir(parents=True)
    compare = COMPARE_AT if COMPARE_AT in concurrencies else concurrencies[len(concurrencies) // 2]
    config = dataclasses.replace(
        MeshConfig.for_tests(out_dir / "mesh"),
        ratelimit_config=GENEROUS_LIMITS,
        log_level="WARNING",
        otlp_endpoint=None,
        sharded_databases=DATABASES,
    )
    measurements: list[Measurement] = []
    say(f"starting a mesh in {config.run_dir}")
    with Mesh(config) as mesh:
        ledger, other = (
            mesh.postgres.conninfo(name) for name in mesh.databases(mesh.spec(TRANSACTION.name))
        )
        first, second = first_split(DATABASES)
        say(f"seeding {wallet_count} wallets in each of the ledger's {DATABASES} databases")
        wallets = seed.mint_tokens(
            mesh.signing_key_path, seed.seed_wallets(ledger, wallet_count, first)
        )
        payees = seed.seed_wallets(other, wallet_count, second)
        machine = report.machine_info(pgbench.server_version(ledger))
        meter = CpuMeter(mesh.process_families)

        def record(m: Measurement) -> None:
            measurements.append(m)
            p99 = "-" if m.p99_ms is None else f"{m.p99_ms:.1f} ms"
            say(f"{m.name}: {m.throughput:,.0f}/s, p99 {p99}, {m.errors} errors")

        # 2. The floor.
        for shape in ("uniform", "hot"):
            for clients in [c for c in concurrencies if c <= COMPARE_AT] or [compare]:
                record(
                    pgbench.run_pgbench(
                        ledger,
                        shape=shape,
                        clients=clients,
                        seconds=seconds,
                        wallets=wallet_count,
                        work_dir=work_dir,
                    )
                )

        # 3. gRPC transfers through the edge; cross: from the first database to the
        # second, each transfer a debit leg here and a credit leg delivered there within
        # the call (the saga).
        for shape in ("uniform", "hot", "cross"):
            data, metadata = ghz.transfer_files(wallets, shape, work_dir, payees=payees)
            if shape == "uniform":  # connections, pools, JWKS: warm before measuring
                _ghz(
                    mesh.edge_grpc_target,
                    "CreateTransfer",
                    data,
                    metadata,
                    "warm-up",
                    "grpc-transfer",
                    shape,
                    8,
                    2,
                    work_dir,
                )
            for c in concurrencies:
                record(
                    metered(
                        meter,
                        1,
                        partial(
                            _ghz,
                            mesh.edge_grpc_target,
                            "CreateTransfer",
                            data,
                            metadata,
                            f"grpc-transfer-{shape}-c{c}",
                            "grpc-transfer",
                            shape,
                            c,
                            seconds,
                            work_dir,
                        ),
                    )
                )

        # 3b. Batches: BATCH transfers per call, counted in transfers (one commit each).
        data, metadata = ghz.batch_transfer_files(wallets, batch, work_dir)
        for c in [c for c in concurrencies if c <= COMPARE_AT] or [compare]:
            measured = metered(
                meter,
                batch,
                partial(
                    _ghz,
                    mesh.edge_grpc_target,
                    "BatchCreateTransfers",
                    data,
                    metadata,
                    f"grpc-transfer-batch{batch}-c{c}",
                    "grpc-transfer-batch",
                    f"batch{batch}",
                    c,
                    seconds,
                    work_dir,
                ),
            )
            record(
                dataclasses.replace(
                    measured,
                    throughput=measured.throughput * batch,
                    notes=f"transfers/s = calls/s x {batch}; latencies per call"
                    + (f"; {measured.notes}" if measured.notes else ""),
                )
            )

        # 4. REST transfers.
        wrk_binary = wrk.ensure_wrk()
        if wrk_binary is None:
            say("REST stage skipped: wrk is not installed")
        else:
            script = wrk.write_script(wallets, work_dir)
            record(
                wrk.run_wrk(
                    wrk_binary,
                    url=mesh.edge_url,
                    script=script,
                    concurrency=compare,
                    seconds=seconds,
                    work_dir=work_dir,
                )
            )

        # 5. Reads: cache on and off (direct to one instance, no limiter), and the edge.
        data, metadata = ghz.get_wallet_files(wallets, work_dir)
        direct = mesh.instance_addresses("transaction")[0]
        _ghz(
            direct,
            "GetWallet",
            data,
            metadata,
            "warm-up-read",
            "grpc-get-wallet",
            "cache-on",
            8,
            2,
            work_dir,
        )
        record(
            _ghz(
                direct,
                "GetWallet",
                data,
                metadata,
                f"grpc-get-wallet-cache-on-c{compare}",
                "grpc-get-wallet",
                "cache-on",
                compare,
                seconds,
                work_dir,
            )
        )
        record(
            _ghz(
                mesh.edge_grpc_target,
                "GetWallet",
                data,
                metadata,
                f"grpc-get-wallet-edge-c{compare}",
                "grpc-get-wallet",
                "edge",
                compare,
                seconds,
                work_dir,
            )
        )
        pages, page_metadata = ghz.list_transactions_files(wallets, work_dir)
        _ghz(
            direct,
            "ListTransactions",
            pages,
            page_metadata,
            "warm-up-history",
            "grpc-list-transactions",
            "cache-on",
            8,
            2,
            work_dir,
        )
        record(
            _ghz(
                direct,
                "ListTransactions",
                pages,
                page_metadata,
                f"grpc-list-transactions-cache-on-c{compare}",
                "grpc-list-transactions",
                "cache-on",
                compare,
                seconds,
                work_dir,
            )
        )
        say("stopping Redis for the uncached reads")
        mesh.stop_redis()
        try:
            for method, files, workload in (
                ("GetWallet", (data, metadata), "grpc-get-wallet"),
                ("ListTransactions", (pages, page_metadata), "grpc-list-transactions"),
            ):
                record(
                    _ghz(
                        direct,
                        method,
                        *files,
                        f"{workload}-cache-off-c{compare}",
                        workload,
                        "cache-off",
                        compare,
                        seconds,
                        work_dir,
                    )
                )
        finally:
            mesh.start_redis()

        # 6. The audit, after all the load.
        audit = _audit(mesh)
        say(audit)

    settings = {
        "seconds": seconds,
        "concurrency": concurrencies,
        "wallets": wallet_count,
        "compare_at": compare,
        "ghz": ghz.GHZ_VERSION,
        "ghz_sources": ghz.SOURCES,
        "batch": batch,
        "ledger_databases": DATABASES,
    }
    summary = report.write_results(out_dir, measurements, machine, settings, audit, compare)
    _chart(out_dir, measurements)
    print(summary)
    say(f"results in {out_dir}")
    failed = [m.name for m in measurements if m.tool != "pgbench" and m.errors]
    if failed:
        say(f"FAILED: non-OK answers in {', '.join(failed)}")
    if audit != "ledger audit: OK":
        say("FAILED: the ledger audit found differences")
    return 1 if failed or audit != "ledger audit: OK" else 0


def metered(
    meter: CpuMeter, transfers_per_call: int, run: Callable[[], Measurement]
) -> Measurement:
    """`run`'s measurement with the CPU each process family spent per transfer booked."""
    meter.start()
    measured = run()
    spent = meter.stop()
    booked = (measured.requests - measured.errors) * transfers_per_call
    return dataclasses.replace(measured, cpu_ms=per_unit_ms(spent, booked))


def _ghz(
    target: str,
    method: str,
    data: Path,
    metadata: Path,
    name: str,
    workload: str,
    shape: str,
    concurrency: int,
    seconds: int,
    work_dir: Path,
) -> Measurement:
    return ghz.run_ghz(
        name=name,
        workload=workload,
        shape=shape,
        target=target,
        method=method,
        data=data,
        metadata=metadata,
        concurrency=concurrency,
        seconds=seconds,
        work_dir=work_dir,
    )


def _audit(mesh: Mesh) -> str:
    """`python -m services.transaction audit` with the mesh's environment; its last line."""
    result = mesh.run_command(TRANSACTION, "audit")
    lines = (result.stdout.strip() or result.stderr.strip() or "no output").splitlines()
    if result.returncode != 0:
        print(result.stdout + result.stderr, file=sys.stderr)
    return lines[-1]


def _chart(out_dir: Path, measurements: list[Measurement]) -> None:
    try:
        from bench import chart
    except ImportError:
        say("no chart: matplotlib is not installed")
        return
    chart.draw(out_dir / "results.png", measurements)


if __name__ == "__main__":
    sys.exit(main())
