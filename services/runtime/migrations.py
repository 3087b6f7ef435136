"""Alembic migrations, run once per deployment by a `migrate` command (never by
every instance at start-up, where two instances would race)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config


def alembic_config(script_location: Path, database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    # `%` is alembic's interpolation character: a password may contain it.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_to_head(script_location: Path, database_url: str) -> None:
    command.upgrade(alembic_config(script_location, database_url), "head")


def run_online() -> None:
    """The body of every service's alembic env.py: migrate the database named by
    the config's sqlalchemy.url, one transaction per migration."""
    from alembic import context
    from sqlalchemy import create_engine, pool

    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("sqlalchemy.url must be set by the caller")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


def execute_sql_script(script: str) -> None:
    """Run a migration's SQL script as written: straight to the driver, without a
    parameter list, so that psycopg does not look for placeholders either (`%`,
    `:=` and `'{"a":1}'` reach PostgreSQL untouched)."""
    from alembic import op

    op.get_bind().exec_driver_sql(script, execution_options={"no_parameters": True})


def execute_sql_files(folder: Path, *names: str) -> None:
    """Run a revision's .sql files from its folder, in the order given, each as written."""
    for name in names:
        execute_sql_script((folder / name).read_text())


def previous_version(folder: Path, name: str) -> Path:
    """The newest version of the file `name` in the revision folders before `folder` (its
    siblings, ordered by name): what a downgrade re-applies after `folder`'s revision
    brought a new version of that file."""
    earlier = sorted(
        path for path in folder.parent.glob(f"*/{name}") if path.parent.name < folder.name
    )
    if not earlier:
        raise FileNotFoundError(f"no version of {name} before {folder.name}")
    return earlier[-1]


def restore_previous_versions(folder: Path, *names: str) -> None:
    """A downgrade's first step after `folder`'s revision brought new versions of these
    files: re-apply the version before of each (then the revision's down.sql drops what
    it added)."""
    for name in names:
        execute_sql_script(previous_version(folder, name).read_text())
