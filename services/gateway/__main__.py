"""The payment-gateway service's commands:

python -m services.gateway serve     run one instance (env: GATEWAY_*)
python -m services.gateway migrate   apply the payments database's migrations
"""

from __future__ import annotations

import argparse
import sys

from services.gateway.server import ENV_PREFIX, MIGRATIONS, GatewaySettings, build_app
from services.runtime import migrations
from services.runtime.config import env
from services.runtime.server import run_service


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run one instance of the payment-gateway service")
    commands.add_parser("migrate", help="apply database migrations")
    args = parser.parse_args(argv)

    if args.command == "migrate":
        migrations.upgrade_to_head(MIGRATIONS, env(ENV_PREFIX, "DATABASE_URL"))
        return 0
    settings = GatewaySettings.from_env()
    runtime = settings.runtime
    run_service(
        "gateway",
        runtime.instance_id,
        runtime.grpc_address,
        runtime.metrics_address,
        lambda: build_app(settings)[0],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
