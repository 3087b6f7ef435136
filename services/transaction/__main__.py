"""The transaction service's commands:

python -m services.transaction serve     run one instance (env: TRANSACTION_*)
python -m services.transaction migrate   apply the ledger's migrations to each of its
                                         databases, each holding its logical shards
python -m services.transaction audit     recompute every ledger invariant; exit 1 on any
                                         difference
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
from services.transaction.adapters.shards import ShardConfig, ShardMap
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
    args = parser.parse_args(argv)

    if args.command == "migrate":
        migrate(ShardConfig.from_env(ENV_PREFIX))
        return 0
    if args.command == "audit":
        return asyncio.run(audit())
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


if __name__ == "__main__":
    sys.exit(main())
