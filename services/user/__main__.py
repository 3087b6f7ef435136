"""The user service's commands:

python -m services.user serve              run one instance (env: USER_*)
python -m services.user migrate            apply database migrations
python -m services.user grant-admin EMAIL  give a registered user the admin role
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from services.runtime import migrations
from services.runtime.config import env
from services.runtime.server import run_service
from services.user.server import ENV_PREFIX, MIGRATIONS, UserSettings, build_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.user", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run one instance of the user service")
    commands.add_parser("migrate", help="apply database migrations")
    grant = commands.add_parser("grant-admin", help="give a user the admin role")
    grant.add_argument("email")
    args = parser.parse_args(argv)

    if args.command == "migrate":
        migrations.upgrade_to_head(MIGRATIONS, env(ENV_PREFIX, "DATABASE_URL"))
        return 0
    if args.command == "grant-admin":
        return asyncio.run(_grant_admin(args.email))
    settings = UserSettings.from_env()
    runtime = settings.runtime
    run_service(
        "user",
        runtime.instance_id,
        runtime.grpc_address,
        runtime.metrics_address,
        lambda: build_app(settings)[0],
    )
    return 0


async def _grant_admin(email: str) -> int:
    # Imported here: only this command needs a bare repository.
    from services.runtime import db
    from services.runtime.cache import create_redis
    from services.user.adapters.profile_cache import RedisProfileCache
    from services.user.adapters.repository import SqlUserRepository
    from services.user.domain.model import Role

    engine = db.create_engine(env(ENV_PREFIX, "DATABASE_URL"), pool_size=1)
    try:
        user_id = await SqlUserRepository(engine).grant_role(email, Role.ADMIN)
    finally:
        await engine.dispose()
    if user_id is None:
        print(f"no user with email {email}", file=sys.stderr)
        return 1
    redis = create_redis(env(ENV_PREFIX, "REDIS_URL"))
    # The cached profile would show the old roles until it expires.
    await RedisProfileCache(redis, ttl_seconds=1).invalidate(user_id)
    await redis.aclose()
    print(f"{email} is now an admin (effective from their next login or token refresh)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
