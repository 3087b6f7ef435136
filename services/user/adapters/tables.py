"""The user service's tables, as SQLAlchemy Core metadata (the migrations in
../migrations create them; this is what the repositories query)."""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    Column,
    DateTime,
    ForeignKey,
    MetaData,
    Table,
    Text,
    Uuid,
    func,
)

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", Uuid(as_uuid=False), primary_key=True, server_default=func.gen_random_uuid()),
    Column("email", Text, nullable=False),
    Column("display_name", Text, nullable=False),
    Column("phone", Text),
    Column("password_hash", Text, nullable=False),
    Column("roles", ARRAY(Text), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", Text, primary_key=True),
    Column("user_id", Uuid(as_uuid=False), ForeignKey("users.id"), nullable=False),
    Column("family_id", Uuid(as_uuid=False), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
)
