"""The transaction service's commands:

python -m services.transaction serve     run one instance (env: TRANSACTION_*)
python -m services.transaction migrate   apply the ledger's migrations to each of its
                                         databases, each holding its logical shards
python -m services.transaction audit     recompute every ledger invariant; exit 1 on any
                                         difference
python -m services.transaction move-shard 200-255 --to 3
                                         move logical shards to the third database of
                                         the list, one at a time, while the mesh runs
                                         (adapters/shard_move.py)
(env: TRANSACTION_DATABASE_URL, one or several separated by spaces, and
TRANSACTION_SHARD_RANGES; see services/transaction/adapters/shards.py)
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from services.runtime import db
from services.runtime.server import run_service
from services.transaction.adapters.ledger_store import SqlLedgerStore
from services.transaction.adapters.shard_move import ShardMoveError, claims, move_shard
from services.transaction.adapters.shards import ShardConfig, ShardMap, parse_ranges
from services.transaction.server import ENV_PREFIX, TransactionSettings, build_app, migrate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.transaction",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run one instance of the transaction service")
    commands.add_parser("migrate", help="apply database migrations")
    commands.add_parser("audit", help="check every ledger invariant")
    move = commands.add_parser("move-shard", help="move logical shards to another database")
    move.add_argument("shards", help="the logical shards, as in 7 or 200-255 or 1,5-9")
    move.add_argument(
        "--to", type=int, required=True, metavar="N", help="the database, 1 for the first"
    )
    args = parser.parse_args(argv)

    if args.command == "migrate":
        migrate(ShardConfig.from_env(ENV_PREFIX))
        return 0
    if args.command == "audit":
        return asyncio.run(audit())
    if args.command == "move-shard":
        return move_shards(ShardConfig.from_env(ENV_PREFIX), parse_ranges(args.shards), args.to)
    settings = TransactionSettings.from_env()
    runtime = settings.runtime
    run_service(
        "transaction",
        runtime.instance_id,
        runtime.grpc_address,
        runtime.metrics_address,
        lambda: build_app(settings)[0],
    )
    return 0


async def audit() -> int:
    databases = ShardMap.of(
        ShardConfig.from_env(ENV_PREFIX), lambda url: db.create_driver_pool(url, size=1)
    )
    for pool in databases.databases():
        await pool.open()
    try:
        findings = await SqlLedgerStore(databases).audit()
    finally:
        for pool in databases.databases():
            await pool.close()
    for finding in findings:
        print(
            f"FAIL {finding.check}: {finding.subject}: expected {finding.expected},"
            f" found {finding.actual}"
        )
    print(f"ledger audit: {'OK' if not findings else f'{len(findings)} difference(s)'}")
    return 1 if findings else 0


def move_shards(config: ShardConfig, shards: frozenset[int], to: int) -> int:
    urls = config.database_urls
    if not 1 <= to <= len(urls):
        print(f"--to {to}: the ledger has databases 1 to {len(urls)}", file=sys.stderr)
        return 2
    target = urls[to - 1]
    for shard in sorted(shards):
        found = {url: claims(url, shard) for url in urls}
        holders = [url for url, claim in found.items() if claim.state == "held"]
        arriving = found[target]
        if holders and target not in holders:
            # Held elsewhere: moved from there.
            sources = holders
        elif target in holders:
            # Here already: what others keep of it is deleted.
            sources = [u for u, c in found.items() if u != target and c.state is not None]
        else:
            # Held nowhere: a move that stopped between its two commits, finished from
            # the database that let the shard go to this one's copy.
            sources = [
                u
                for u, c in found.items()
                if c.state == "left" and arriving.state == "arriving" and c.move == arriving.move
            ]
            if not sources:
                print(
                    f"shard {shard}: no database holds it, and database {to} has no copy"
                    " of it from a move that stopped: finish that move (--to the database"
                    " whose copy is arriving)",
                    file=sys.stderr,
                )
                return 1
        try:
            reports = [move_shard(shard, source, target) for source in sources]
        except ShardMoveError as error:
            print(f"shard {shard}: {error}", file=sys.stderr)
            return 1
        rows = ", ".join(
            f"{n} {table}" for report in reports for table, n in report.rows.items() if n
        )
        if holders and target not in holders:
            print(f"shard {shard}: moved to database {to} ({rows or 'no rows'})")
        elif target in holders:
            print(f"shard {shard}: in database {to}")
        else:
            print(f"shard {shard}: in database {to} (a move that had stopped, finished)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
