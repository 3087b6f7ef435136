"""The rate-limit service's commands:

python -m services.ratelimit serve   run one instance (env: RATELIMIT_GRPC_ADDRESS,
                                     RATELIMIT_REDIS_URL, RATELIMIT_INSTANCE_ID,
                                     RATELIMIT_CONFIG_FILE, RATELIMIT_METRICS_ADDRESS,
                                     RATELIMIT_INSTANCES, LOG_LEVEL)
"""

from __future__ import annotations

import argparse
import sys

from services.ratelimit.limits import LimitsError, load_limits
from services.ratelimit.server import RateLimitSettings, build_app
from services.runtime.config import ConfigError
from services.runtime.server import run_service


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.ratelimit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run one instance of the rate-limit service")
    parser.parse_args(argv)

    try:
        settings = RateLimitSettings.from_env()
        # Before serving: a bad limits file must stop the process, not limit nothing.
        limits = load_limits(settings.limits_file)
    except (ConfigError, LimitsError) as error:
        print(error, file=sys.stderr)
        return 2
    run_service(
        "ratelimit",
        settings.instance_id,
        settings.grpc_address,
        settings.metrics_address,
        lambda: build_app(settings, limits),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
