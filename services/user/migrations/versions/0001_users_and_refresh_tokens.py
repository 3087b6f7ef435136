"""Users and their refresh tokens.

Emails are unique without regard to case (a unique index on lower(email)), and
the CHECKs make states the domain never creates impossible to store.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE users (
            id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            email         text NOT NULL CHECK (char_length(email) BETWEEN 3 AND 254),
            display_name  text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 100),
            phone         text CHECK (phone ~ '^\\+[1-9][0-9]{6,14}$'),
            password_hash text NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
            roles         text[] NOT NULL DEFAULT '{user}'
                          CHECK (roles <@ ARRAY['user', 'admin']::text[]),
            created_at    timestamptz NOT NULL DEFAULT now(),
            updated_at    timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email))")
    # Keyset pagination of ListUsers walks this index.
    op.execute("CREATE INDEX users_created_at_id_idx ON users (created_at, id)")
    op.execute(
        """
        CREATE TABLE refresh_tokens (
            token_hash text PRIMARY KEY CHECK (char_length(token_hash) = 64),
            user_id    uuid NOT NULL REFERENCES users (id),
            family_id  uuid NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            used_at    timestamptz,
            revoked_at timestamptz,
            CHECK (expires_at > created_at)
        )
        """
    )
    op.execute("CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id)")


def downgrade() -> None:
    op.execute("DROP TABLE refresh_tokens")
    op.execute("DROP TABLE users")
