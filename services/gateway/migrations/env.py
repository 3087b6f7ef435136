"""Alembic environment of the gateway's payments database (run by
`python -m services.gateway migrate`, which sets the URL; no alembic.ini)."""

from services.runtime.migrations import run_online

run_online()
