"""The ledger on logical shards (`services/transaction/sql/0006_shards/`).

- The checks every movement of money shares, defined once (`checks.sql`: the arguments,
  what a wallet can pay, why a payment between two wallets is refused, the lock order).
- Every id the ledger makes carries its shard in its last byte (a wallet its owner's home
  shard, a transaction its source account's, a hold its payer's), receipt numbers name
  their shard, settlement accounts are one per currency and shard, and `ledger_shards`
  says which of the 256 logical shards this database holds (`shards.sql`).
- Movements between two logical shards are two legs, one balanced transaction on each
  shard, through in-transit accounts (`legs.sql`): transfers, captures of holds, refunds
  and batches. Each shard's books balance by themselves, so a shard can be moved to
  another database whole; the audit checks it.
- Movements between wallets of two databases are a saga on a transactional outbox
  (`saga.sql`): the debit leg pending with its outbox row, the credit leg delivered to the
  other database once, the debit leg then posted, or failed and reversed if refused.

New versions of the concern files whose functions these change, in this revision's
folder; the downgrade re-applies the versions of before. A database made before this
revision keeps the ids it has (random, so their last byte names no shard of theirs): it
can only run as the one database of a ledger.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from pathlib import Path

from services.runtime.migrations import execute_sql_files, restore_previous_versions

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SQL = Path(__file__).resolve().parents[2] / "sql" / "0006_shards"
NEW_VERSIONS = (
    "guards.sql",
    "accounts.sql",
    "operator.sql",
    "external_payments.sql",
    "results.sql",
    "transfers.sql",
    "holds.sql",
    "refunds.sql",
    "batches.sql",
    "audit.sql",
)


def upgrade() -> None:
    execute_sql_files(
        SQL, "checks.sql", "shards.sql", "schema.sql", "legs.sql", "saga.sql", *NEW_VERSIONS
    )


def downgrade() -> None:
    restore_previous_versions(SQL, *NEW_VERSIONS)
    execute_sql_files(SQL, "down.sql")
