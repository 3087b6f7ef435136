"""Alembic environment of the user service's database (run by `python -m
services.user migrate`, which sets the URL; no alembic.ini)."""

from services.runtime.migrations import run_online

run_online()
