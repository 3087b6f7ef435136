"""The rate-limit service's commands:

python -m services.ratelimit serve   run one instance (env: RATELIMIT_GRPC_ADDRESS,
                                     RATELIMIT_REDIS_URL, RATELIMIT_INSTANCE_ID,
                                     RATELIMIT_CONFIG_FILE, RATELIMIT_METRICS_ADDRESS,
                                     LOG_LEVEL)
"""

from __future__ import annotations

import argparse
import sys

import uvloop

from services.ratelimit.limits import Limits, LimitsError, load_limits
from services.ratelimit.server import RateLimitSettings, build_app
from services.runtime.logging import configure_logging
from services.runtime.metrics import start_metrics_server
from services.runtime.server import serve
from services.runtime.telemetry import configure_tracing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.ratelimit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run one instance of the rate-limit service")
    parser.parse_args(argv)

    settings = RateLimitSettings.from_env()
    configure_logging("ratelimit", settings.instance_id)
    configure_tracing("ratelimit", settings.instance_id)
    try:
        # Before serving: a bad limits file must stop the process, not limit nothing.
        limits = load_limits(settings.limits_file)
    except LimitsError as error:
        print(error, file=sys.stderr)
        return 2
    uvloop.run(_serve(settings, limits))
    return 0


async def _serve(settings: RateLimitSettings, limits: Limits) -> None:
    if settings.metrics_address:
        start_metrics_server(settings.metrics_address)
    # Built inside the running loop: the Redis client binds to it.
    app = build_app(settings, limits)
    await serve(app, settings.grpc_address)


if __name__ == "__main__":
    sys.exit(main())
