"""Alembic environment of the transaction service's ledger database (run by
`python -m services.transaction migrate`, which sets the URL; no alembic.ini)."""

from services.runtime.migrations import run_online

run_online()
