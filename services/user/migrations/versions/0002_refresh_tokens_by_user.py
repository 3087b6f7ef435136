"""Refresh tokens found by user: "log out everywhere" revokes every live refresh
token of one user, and without an index that is a scan of every user's tokens.

Partial (only tokens not yet revoked): those are the only ones it looks for, and
a token leaves the index when it is revoked, so the index stays small.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX refresh_tokens_live_by_user_idx ON refresh_tokens (user_id)"
        " WHERE revoked_at IS NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX refresh_tokens_live_by_user_idx")
